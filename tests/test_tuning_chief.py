"""The chief of a distributed sweep: its address file, a requeued chief keeping its
workers' trials, a repeated end of a trial, a port in use and a worker that finds no
chief (rnnbench/tuning/chief.py, HookedOracle in rnnbench/tuning/tuner.py)."""

from __future__ import annotations

import socket
import time

import keras_tuner as kt
import pytest
from helpers import FAST, run_cli

from rnnbench.tuning.chief import ChiefLink, read_address, write_address
from rnnbench.tuning.tuner import HOOKED


def _oracle(tmp_path, keep_ongoing: bool):
    hp = kt.HyperParameters()
    hp.Float("lr", 1e-4, 1e-2, sampling="log")
    oracle = HOOKED["random"](objective=kt.Objective("val_loss", "min"), max_trials=5,
                              hyperparameters=hp, seed=1)
    oracle.keep_ongoing = keep_ongoing
    oracle._set_project_dir(str(tmp_path), "sweep")
    return oracle


@pytest.mark.parametrize("keep", [True, False])
def test_a_restarted_chief_keeps_each_workers_trial_and_one_process_retries_it(tmp_path, keep):
    first = _oracle(tmp_path, keep)
    t0 = first.create_trial("w1")
    first.save()
    again = _oracle(tmp_path, keep)
    again.reload()
    other = again.create_trial("w2")
    if keep:  # the chief: w1 still runs trial 0 somewhere; w2 gets a new one
        assert again.ongoing_trials["w1"].trial_id == t0.trial_id
        assert other.trial_id != t0.trial_id
        assert again.create_trial("w1").trial_id == t0.trial_id  # a requeued w1 gets it back
    else:  # one process: its trial died with it and runs again
        assert other.trial_id == t0.trial_id


def test_a_repeated_end_of_a_trial_counts_once(tmp_path):
    oracle = _oracle(tmp_path, True)
    trial = oracle.create_trial("w1")
    oracle.update_trial(trial.trial_id, {"val_loss": 0.5})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    oracle.end_trial(trial)  # the reply was lost with the chief; the worker asks again
    assert oracle.end_order == [trial.trial_id]
    assert len(oracle.trials) == 1 and oracle.trials[trial.trial_id].status == "COMPLETED"


def test_the_address_file_is_whole_or_absent(tmp_path):
    path = tmp_path / "shared" / "chief.address"
    assert read_address(path) is None
    write_address(path, "10.0.0.7", 4321)
    assert read_address(path) == ("10.0.0.7", 4321)
    path.write_text("10.0.0.7")  # a file cut short (not how rnnbench writes it)
    assert read_address(path) is None


def test_a_link_waits_for_the_file_then_gives_up_naming_it(tmp_path):
    link = ChiefLink(None, 8000, str(tmp_path / "chief.address"), wait_s=1.5, say=print)
    start = time.monotonic()
    with pytest.raises(Exception, match="no sweep chief wrote its address to .*chief.address"):
        link.connect()
    assert 1.0 < time.monotonic() - start < 30


@pytest.mark.slow
def test_a_worker_before_its_chief_waits_and_names_the_address_file(tmp_path):
    address = tmp_path / "shared" / "chief-7.address"
    proc = run_cli([*FAST, "tuner=random", "tuner.max_trials=1",
                    "tuner.distributed.role=worker", f"tuner.distributed.address_file={address}",
                    "tuner.distributed.wait_s=3", f"tuner.directory={tmp_path / 'tuner'}"],
                   tmp_path, module="tune_main", timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"no sweep chief wrote its address to {address} within 3 s" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_chief_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli([*FAST, "tuner=random", "tuner.max_trials=1",
                        "tuner.distributed.role=chief", "tuner.distributed.address=127.0.0.1",
                        f"tuner.distributed.port={port}",
                        f"tuner.directory={tmp_path / 'tuner'}"],
                       tmp_path, module="tune_main", timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"the chief cannot listen on 127.0.0.1:{port} (in use" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_port_zero_is_only_for_a_chief_with_an_address_file():
    from helpers import compose_tune

    from rnnbench.errors import ConfigError

    with pytest.raises(ConfigError, match="only with tuner.distributed.address_file"):
        compose_tune(["tuner.distributed.role=chief", "tuner.distributed.port=0"])
    cfg = compose_tune(["tuner.distributed.role=chief", "tuner.distributed.port=0",
                        "tuner.distributed.address_file=/tmp/x.address"])
    assert cfg.tuner.distributed.port == 0
    cfg = compose_tune(["tuner.distributed.role=worker",
                        "tuner.distributed.address_file=/tmp/x.address"])
    assert cfg.tuner.distributed.address is None
