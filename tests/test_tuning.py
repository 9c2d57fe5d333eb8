"""rnnbench-tune: the sweep config and its checks, the search space, seeded oracles, and
a real sweep on co2 in which some trials blow up to NaN.

The sweeps here run in this process through the same ``run_sweep`` as the CLI (one
subprocess test checks the CLI's own error path); each trial is a real, tiny training
run on the co2 series."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import mlflow
import pytest

from helpers import FAST, compose_tune, oracle_sequence, run_cli, store_runs
from rnnbench.cli.schema import register_configs
from rnnbench.config import to_object
from rnnbench.errors import ConfigError, RunFailed, TrackingError

register_configs()

# Plain SGD with a learning rate of 1e12 makes the loss inf at its first steps (checked:
# "non-finite loss at epoch 1 step 2"); 0.01 trains normally.
NAN_PROBE = """\
name: nan_probe
params:
  units:     {key: model.units,        type: int,    low: 4, high: 8}
  lr:        {key: optimizer.lr,       type: choice, values: [0.01, 1.0e12]}
  optimizer: {key: optimizer.name,     type: fixed,  value: sgd}
  clipnorm:  {key: optimizer.clipnorm, type: fixed,  value: null}
"""
TINY = """\
name: tiny
params:
  units: {key: model.units,  type: int,   low: 4,      high: 12}
  lr:    {key: optimizer.lr, type: float, low: 1.0e-3, high: 1.0e-2, sampling: log}
"""
ALL_NAN = """\
name: all_nan
params:
  units:     {key: model.units,        type: int,    low: 4, high: 8}
  lr:        {key: optimizer.lr,       type: choice, values: [1.0e12]}
  optimizer: {key: optimizer.name,     type: fixed,  value: sgd}
  clipnorm:  {key: optimizer.clipnorm, type: fixed,  value: null}
"""


def spaces_dir(tmp_path: Path) -> Path:
    """A config folder with extra search spaces, added with hydra.searchpath."""
    folder = tmp_path / "extra_conf"
    (folder / "search_space").mkdir(parents=True, exist_ok=True)
    (folder / "search_space" / "nan_probe.yaml").write_text(NAN_PROBE)
    (folder / "search_space" / "all_nan.yaml").write_text(ALL_NAN)
    (folder / "search_space" / "tiny.yaml").write_text(TINY)
    return folder


def local_store(tmp_path: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tuner.directory={tmp_path / 'tuning'}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- config and bad input ------------------------------------------------------------

def test_tune_config_extends_the_run_config_and_keeps_its_values():
    cfg = compose_tune(["debug=smoke", "cell=gru", "tuner=hyperband"])
    assert cfg.model.units == 16 and cfg.train.steps_per_epoch == 5  # from debug=smoke
    assert cfg.cell.name == "gru" and cfg.task.name == "co2"
    assert cfg.tuner.name == "hyperband" and cfg.tuner.max_trials is None
    assert cfg.tuner.max_consecutive_failed_trials == 10  # keras-tuner's own default is 3
    assert cfg.search_space.params["lr"].key == "optimizer.lr"
    assert cfg.search_space.params["units"].sampling == "log"


def test_experiment_overlay_can_pick_and_set_the_tuner_and_space(tmp_path):
    folder = spaces_dir(tmp_path)
    (folder / "experiment").mkdir()
    (folder / "experiment" / "mini.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /tuner: hyperband\n  - override /search_space: greff\n"
        "tuner:\n  max_epochs: 5\n  factor: 2\n"
        "search_space:\n  params:\n    lr: {high: 1.0e-3}\n"
        "tracking:\n  experiment: mini\n")
    cfg = compose_tune([f"hydra.searchpath=[file://{folder}]", "experiment=mini",
                        "tuner.factor=4"])
    assert (cfg.tuner.name, cfg.tuner.max_epochs, cfg.tuner.factor) == ("hyperband", 5, 4)
    assert cfg.search_space.name == "greff" and cfg.search_space.params["lr"].high == 1e-3
    assert cfg.search_space.params["lr"].low == 1e-6  # the rest of greff's entry is kept
    assert cfg.tracking.experiment == "mini" and cfg.model.units == 64


@pytest.mark.parametrize("overrides, expect", [
    (["search_space.params.lr.low=0.5"], ["search_space.params.lr", "inverted", "low=0.5"]),
    (["search_space.params.lr.low=0.03"], ["search_space.params.lr", "empty", "type: fixed"]),
    (["search_space.params.dropout.sampling=log"], ["search_space.params.dropout.low", "> 0"]),
    (["search_space.params.dropout.high=1.0"], ["model.dropout=1.0", "refuses", "[0, 1)"]),
    (["search_space.params.units.key=model.unitz"], ["model.unitz", "not a key"]),
    (["search_space.params.units.key=seed"], ["key='seed'", "cannot be tuned"]),
    (["search_space.params.units.low=20.5"], ["search_space.params.units.low", "whole number"]),
    (["tuner.max_trials=0"], ["tuner.max_trials=0", ">= 1"]),
    (["tuner=random", "tuner.max_trials=null"], ["tuner.max_trials=None", "hyperband"]),
    (["tuner.distributed.role=worker"], ["tuner.distributed.address", "chief"]),
    (["tuner.distributed.role=worker", "tuner.distributed.address=10.0.0.1",
      "tuner.distributed.worker_id=chief2"], ["worker_id", "chief"]),
    (["tuner.name=grid"], ["tuner.name='grid'", "random, hyperband, bayesian"]),
])
def test_bad_sweep_config_is_refused_with_the_key(overrides, expect):
    with pytest.raises(ConfigError) as info:
        cfg = compose_tune(overrides)
        from rnnbench.tuning.space import Space

        Space.from_config(cfg)
    for text in expect:
        assert text in str(info.value), (text, str(info.value))


def test_objective_the_task_does_not_produce_is_refused_before_any_trial(tmp_path):
    from rnnbench.tuning.app import run_sweep

    cfg = compose_tune([*FAST, *local_store(tmp_path), "tuner.objective=val_accuracy"])
    with pytest.raises(ConfigError) as info:
        run_sweep(cfg)
    message = str(info.value)
    assert "tuner.objective='val_accuracy'" in message and "task=co2" in message
    assert "val_loss" in message and "val_mae" in message
    assert not (tmp_path / "tuning").exists() and not (tmp_path / "mlflow.db").exists()


def test_unreachable_tracking_server_is_refused_before_any_trial(tmp_path):
    from rnnbench.tuning.app import run_sweep

    uri = f"http://127.0.0.1:{free_port()}"
    cfg = compose_tune([*FAST, "tracking=server", f"tracking.uri={uri}", "tracking.timeout_s=1",
                        f"tuner.directory={tmp_path / 'tuning'}"])
    with pytest.raises(TrackingError) as info:
        run_sweep(cfg)
    assert uri in str(info.value) and "did not answer" in str(info.value)
    assert not (tmp_path / "tuning").exists()


@pytest.mark.slow
def test_cli_prints_a_bad_objective_without_traceback(tmp_path):
    proc = run_cli(["tuner.objective=val_acc", "debug=smoke"], tmp_path, module="tune_main",
                   timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "rnnbench: error: tuner.objective='val_acc'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert store_runs(tmp_path) == [] and not (tmp_path / "tuning").exists()


# ---- the search space ----------------------------------------------------------------

def test_greff_space_reproduces_the_paper_ranges():
    from rnnbench.tuning.space import Space

    cfg = compose_tune(["search_space=greff", "cell=peephole"])
    space = Space.from_config(cfg)
    hp = space.hyperparameters()
    by_name = {p.name: p for p in hp.space}
    units, lr, momentum = (by_name[name] for name in ("units", "lr", "momentum"))
    assert (units.min_value, units.max_value, units.sampling) == (20, 200, "log")
    assert (lr.min_value, lr.max_value, lr.sampling) == (1e-6, 1e-2, "log")
    assert (momentum.min_value, momentum.max_value, momentum.sampling) == (0.01, 1.0, "log")
    values = space.config_values({"units": 57, "lr": 3e-4, "momentum": 0.05})
    assert values["optimizer.momentum"] == pytest.approx(0.95)  # 1 - log-uniform
    assert values["optimizer.name"] == "sgd" and values["optimizer.clipnorm"] is None
    run_cfg = to_object(space.apply(compose_run_node(cfg), {"units": 57, "lr": 3e-4,
                                                            "momentum": 0.05}))
    assert run_cfg.model.units == 57 and run_cfg.optimizer.momentum == pytest.approx(0.95)
    assert run_cfg.optimizer.name == "sgd" and run_cfg.optimizer.clipnorm is None


def compose_run_node(cfg):
    from rnnbench.tuning.space import run_config_node

    return run_config_node(cfg)


def test_cell_family_entries_change_the_space_for_those_cells():
    from rnnbench.tuning.space import Space

    rnn = Space.from_config(compose_tune(["cell=rnn"]))
    lstm = Space.from_config(compose_tune(["cell=lstm"]))
    assert rnn.specs["lr"].high == pytest.approx(1e-2)
    assert lstm.specs["lr"].high == pytest.approx(3e-2)
    assert rnn.specs["lr"].low == lstm.specs["lr"].low  # only the changed field differs


# ---- seeded oracles ------------------------------------------------------------------

# bayesian: 2 random points, then 1 chosen by the Gaussian process (each GP step costs
# seconds: 50 restarts of L-BFGS-B)
@pytest.mark.parametrize("tuner, n", [("random", 5), ("bayesian", 3), ("hyperband", 8)])
def test_same_seed_same_trial_sequence(tmp_path, tuner, n):
    extra = ["tuner.num_initial_points=2"] if tuner == "bayesian" else []
    extra += ["tuner.max_epochs=9"] if tuner == "hyperband" else []
    first, again = (oracle_sequence(compose_tune([f"tuner={tuner}", "seed=3", *extra]),
                                    tmp_path / name, n) for name in ("a", "b"))
    other = oracle_sequence(compose_tune([f"tuner={tuner}", "seed=4", *extra]),
                            tmp_path / "c", 2)
    assert len(first) == n
    assert first == again
    assert other != first[:2]


def test_nan_score_is_never_the_best(tmp_path):
    """keras-tuner turns a NaN objective into an INVALID, then FAILED, trial; the sweep
    never reports one, and the best comes from the finite trials only."""
    from rnnbench.tuning.plan import SweepPlan
    from rnnbench.tuning.tuner import SweepTuner, best_of, make_oracle

    assert best_of([float("nan"), float("inf"), 0.7, 0.5], "min") == 0.5
    assert best_of([float("nan"), float("-inf"), 0.7, 0.5], "max") == 0.7
    assert best_of([float("nan")], "min") is None
    plan = SweepPlan.create(compose_tune(["tuner.max_trials=3"]))
    tuner = SweepTuner(make_oracle(plan), plan, record=None, directory=str(tmp_path),
                       project_name="p", overwrite=True)
    oracle = tuner.oracle
    for score in (0.9, float("nan"), 0.4):
        trial = oracle.create_trial("tuner0")
        oracle.update_trial(trial.trial_id, {"val_loss": score})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    statuses = [oracle.trials[k].status for k in sorted(oracle.trials)]
    assert statuses == ["COMPLETED", "FAILED", "COMPLETED"]
    best = oracle.get_best_trials(1)[0]
    assert best.score == 0.4


@pytest.mark.parametrize("overrides", [
    ["experiment=greff", "task=chorales", "cell=nfg", "seed=1"],
    ["experiment=chorales_shootout_lr", "cell=rnn", "seed=3"],
    ["experiment=modern_lr", "task=lm_char", "cell=mingru"],
])
def test_a_sweep_overlay_trial_command_composes_under_rnnbench(overrides, tmp_path):
    """An experiment overlay made for sweeps picks a tuner and a search space, which
    ``rnnbench`` does not have ("Could not override 'tuner'"). A trial's "as a single run"
    command leaves the overlay out and names the run settings it made instead: the
    command composes under ``rnnbench`` and gives the trial's own run config."""
    from hydra import compose, initialize_config_dir

    from helpers import ROOT
    from rnnbench import config
    from rnnbench.tuning.plan import SweepPlan
    from rnnbench.tuning.tuner import SweepTuner, make_oracle

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        plan = SweepPlan.create(to_object(compose("tune", overrides=overrides)), overrides)
        tuner = SweepTuner(make_oracle(plan), plan, record=None,
                           directory=str(tmp_path), project_name="p", overwrite=True)
        point = dict(tuner.oracle.create_trial("tuner0").hyperparameters.values)
        run_cfg, words = plan.trial(point, 0, 7)
        assert not any(w.startswith("experiment=") for w in words), words
        single = config.flatten(compose("config", overrides=words))
    trial = config.flatten(run_cfg)
    differ = {k: (v, single.get(k)) for k, v in trial.items()
              if single.get(k) != v and k != "tracking.skip_finished"}
    assert not differ, (words, differ)
    assert f"tracking.experiment={trial['tracking.experiment']}" in words


# ---- real sweeps ---------------------------------------------------------------------

def sweep_runs(tmp_path: Path) -> tuple[list, list]:
    runs = store_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("run_kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("run_kind") == "trial"]
    return parents, trials


@pytest.mark.slow
def test_sweep_survives_nan_trials_and_records_them_failed(tmp_path, capsys):
    from rnnbench.tuning.app import run_sweep

    overrides = [*FAST, *local_store(tmp_path), f"hydra.searchpath=[file://{spaces_dir(tmp_path)}]",
                 "search_space=nan_probe", "tuner.max_trials=4", "seed=1"]
    cfg = compose_tune(overrides)
    expected = oracle_sequence(cfg, tmp_path / "preview", 4)
    huge = [v["lr"] > 1 for v in expected]
    assert any(huge) and not all(huge), expected  # this seed mixes both kinds of trial

    result = run_sweep(cfg, overrides)
    out = capsys.readouterr().out

    assert [t["hyperparameters"] for t in result.trials] == expected  # seeded: as previewed
    assert [t["status"] for t in result.trials] == ["FAILED" if h else "COMPLETED" for h in huge]
    assert result.best is not None and math.isfinite(result.best["score"])
    assert result.best["hyperparameters"]["lr"] == 0.01

    parents, trials = sweep_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert len(trials) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    for trial in result.trials:
        (run,) = [r for r in trials if r.data.tags["trial_id"] == trial["trial_id"]]
        assert run.data.params["hp/lr"] == str(trial["hyperparameters"]["lr"])
        assert run.data.params["optimizer.name"] == "sgd"
        if trial["status"] == "FAILED":
            assert run.info.status == "FAILED"
            assert run.data.tags["failure_reason"].startswith("non-finite loss")
            assert "non-finite loss" in trial["reason"]
        else:
            assert run.info.status == "FINISHED"
            assert run.data.tags["run_kind"] == "trial"
            assert "val_loss" in run.data.metrics and "test_mse" in run.data.metrics
    tags = parent.data.tags
    assert tags["run_kind"] == "sweep" and tags["tuner"] == "random"
    assert tags["best_trial_id"] == result.best["trial_id"]
    assert tags["trials_failed"] == str(sum(huge))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    best_hist = [m.value for m in sorted(client.get_metric_history(parent.info.run_id,
                                                                   "best_val_loss"),
                                         key=lambda m: m.step)]
    assert best_hist and all(math.isfinite(v) for v in best_hist)
    assert best_hist == sorted(best_hist, reverse=True)  # best so far only improves
    assert best_hist[-1] == pytest.approx(result.best["score"])
    trial_hist = client.get_metric_history(parent.info.run_id, "trial_val_loss")
    assert sorted(m.step for m in trial_hist) == [i + 1 for i, h in enumerate(huge) if not h]
    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "sweep/trials.json",
                                                        str(tmp_path))).read_text())
    assert [t["status"] for t in summary] == [t["status"] for t in result.trials]

    assert "trial 1 of 4 started" in out and "trial 4 of 4" in out
    assert "FAILED: run" in out and "non-finite loss" in out
    assert "best so far val_loss=" in out


@pytest.mark.slow
def test_consecutive_failure_policy_stops_the_sweep(tmp_path):
    from rnnbench.tuning.app import run_sweep

    overrides = [*FAST, *local_store(tmp_path), f"hydra.searchpath=[file://{spaces_dir(tmp_path)}]",
                 "search_space=all_nan", "tuner.max_trials=4",
                 "tuner.max_consecutive_failed_trials=2"]
    with pytest.raises(RunFailed) as info:
        run_sweep(compose_tune(overrides), overrides)
    assert "2 FAILED trials in a row" in str(info.value)
    assert "tuner.max_consecutive_failed_trials=2" in str(info.value)
    parents, trials = sweep_runs(tmp_path)
    assert [r.info.status for r in trials] == ["FAILED", "FAILED"]
    assert parents[0].info.status == "FAILED"
    assert "in a row" in parents[0].data.tags["failure_reason"]


@pytest.mark.slow
def test_hyperband_continues_the_best_trial_from_its_weights(tmp_path):
    """max_epochs=3, factor 3: three 1-epoch trials, then the best of them trains on to
    epoch 3 from its saved weights (capped here at those 4 trials)."""
    from rnnbench.tuning.app import run_sweep

    overrides = [*FAST, *local_store(tmp_path), f"hydra.searchpath=[file://{spaces_dir(tmp_path)}]",
                 "search_space=tiny", "tuner=hyperband", "tuner.max_epochs=3",
                 "tuner.max_trials=4", "train.patience=100"]
    result = run_sweep(compose_tune(overrides), overrides)
    assert [t["status"] for t in result.trials] == ["COMPLETED"] * 4
    first = result.trials[:3]
    assert all(t["hyperparameters"]["tuner/epochs"] == 1 for t in first)
    cont = result.trials[3]["hyperparameters"]
    best_first = min(first, key=lambda t: t["score"])
    assert (cont["tuner/trial_id"], cont["tuner/initial_epoch"], cont["tuner/epochs"]) == (
        best_first["trial_id"], 1, 3)
    assert cont["units"] == best_first["hyperparameters"]["units"]

    _, trials = sweep_runs(tmp_path)
    run = next(r for r in trials if r.data.tags["trial_id"] == result.trials[3]["trial_id"])
    # one numbering everywhere: the trial number (keras-tuner's id + 1) of the source
    assert run.data.tags["warm_start_from"] == str(int(best_first["trial_id"]) + 1)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_loss")) == [2, 3]
    assert run.data.metrics["epochs_run"] == 2
    project = tmp_path / "tuning" / result.sweep_id
    assert (project / f"trial_{best_first['trial_id']}" / "execution0.weights.h5").is_file()


@pytest.mark.parametrize("tuner", ["random", "bayesian"])
def test_searches_of_neighbouring_seeds_share_no_draw(tmp_path, tuner):
    """Three searches meant as replicates (seed=0,1,2) are independent samples of the
    space: no point and no drawn value in common. keras-tuner draws the j-th value of
    point i with seed oracle_seed + H*i + j; with oracle seeds 1, 2, 3 (seed + 1) the
    searches of seed 0 and 2 shared 19 of 20 points, and seed 1 drew its units from seed
    0's learning-rate draws (the Greff study's first three-search run)."""
    extra = ["tuner.num_initial_points=8"] if tuner == "bayesian" else []  # random points
    seqs = [oracle_sequence(compose_tune([f"tuner={tuner}", "search_space=greff_paired",
                                          f"seed={seed}", *extra]), tmp_path / str(seed), 8)
            for seed in (0, 1, 2)]
    assert all(len(s) == 8 for s in seqs)
    for i in range(3):
        for j in range(i + 1, 3):
            points_i = {(p["units"], p["lr"]) for p in seqs[i]}
            points_j = {(p["units"], p["lr"]) for p in seqs[j]}
            assert not points_i & points_j, (i, j)
            lrs_j = {p["lr"] for p in seqs[j]}
            assert not {p["lr"] for p in seqs[i]} & lrs_j, (i, j)
