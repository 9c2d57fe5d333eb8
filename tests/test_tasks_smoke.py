"""Every task end to end on tiny data: the Hydra config, the training run, the MLflow
record (metrics, baselines, dataset inputs), and the real CLI for a few of them."""

from __future__ import annotations

import math

import mlflow
import pytest

from helpers import ROOT, compose_run, run_cli, store_runs, task_overrides, tiny_task_run
from rnnbench.errors import ConfigError
from rnnbench.tasks import TASKS, get_task

pytestmark = pytest.mark.slow

EXPECTED = {
    "co2": {"mse", "mae", "smape", "mase"},
    "sunspots": {"mse", "mae", "smape", "mase"},
    "electricity": {"mse", "mae", "smape", "mase"},
    "timeseries_csv": {"mse", "mae", "smape", "mase"},
    "lm_char": {"bpc", "nll"},
    "lm_word": {"perplexity", "nll"},
    "speech_vowels": {"accuracy", "macro_f1"},
    "speech_audio": {"accuracy", "macro_f1"},
    "adding": {"mse", "mae"},
    "copy": {"xent", "accuracy", "copy_accuracy"},
    "chorales": {"nll", "frame_accuracy"},
}


def test_every_task_is_registered_with_a_config():
    assert set(EXPECTED) == set(TASKS)
    for name in TASKS:
        assert (ROOT / "conf" / "task" / f"{name}.yaml").is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_trains_evaluates_and_logs(name, inputs, tmp_path):
    db = tmp_path / "mlflow.db"
    cfg, result = tiny_task_run(name, inputs, db, "train.epochs=1", "diagnostics.enabled=false")
    assert result.status == "FINISHED"
    assert set(result.test_metrics) == EXPECTED[name]
    assert all(math.isfinite(v) for v in result.test_metrics.values()), result.test_metrics
    assert result.baselines and set(result.baselines) <= EXPECTED[name]

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    mlrun = client.get_run(result.run_id)
    assert mlrun.data.tags["task"] == name
    task = get_task(cfg.task)
    assert f"test_{task.primary_metric}" in mlrun.data.metrics
    datasets = mlrun.inputs.dataset_inputs
    assert datasets and datasets[0].dataset.digest
    tags = {t.key: t.value for t in datasets[0].tags}
    assert tags.get("license") and tags.get("size")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bidirectional_only_where_it_makes_sense(name, inputs):
    from rnnbench.model import check_compatible

    cfg = compose_run([f"task={name}", "cell.bidirectional=true",
                       *task_overrides(name, inputs)])
    task = get_task(cfg.task)
    if name.startswith("speech_"):
        assert task.causal is False
        check_compatible(cfg, task)
    else:
        assert task.causal is True
        with pytest.raises(ConfigError, match="bidirectional"):
            check_compatible(cfg, task)


@pytest.mark.parametrize("name", ["adding", "copy"])
def test_probes_default_to_their_papers_protocol_and_the_command_line_wins(name):
    """The long-range probes train with Arjovsky et al.'s RMSProp on batches of 20;
    every other task keeps the project-wide Adam on 64; the command line, an experiment
    overlay and debug=smoke still override a task's protocol."""
    cfg = compose_run([f"task={name}"])
    assert (cfg.optimizer.name, cfg.train.batch_size) == ("rmsprop", 20)
    assert (cfg.optimizer.lr, cfg.optimizer.clipnorm, cfg.train.epochs) == (1e-3, 1.0, 30)
    assert cfg.task.name == name and cfg.task.length == 100
    plain = compose_run(["task=co2"])
    assert (plain.optimizer.name, plain.train.batch_size) == ("adam", 64)
    mine = compose_run([f"task={name}", "optimizer.name=adam", "train.batch_size=64"])
    assert (mine.optimizer.name, mine.train.batch_size) == ("adam", 64)
    assert compose_run([f"task={name}", "debug=smoke"]).train.batch_size == 32
    study = compose_run([f"task={name}", "experiment=long_range"])
    assert (study.optimizer.name, study.train.batch_size) == ("adam", 64)
    with pytest.raises(Exception, match="lenght"):
        compose_run([f"task={name}", "task.lenght=50"])


def test_chorales_brings_its_own_budget():
    """210 training chorales are 4 batches an epoch: chorales trains up to 300 epochs
    with patience 20, where the other tasks keep 30 and 5; overrides still win."""
    cfg = compose_run(["task=chorales"])
    assert (cfg.train.epochs, cfg.train.patience, cfg.train.batch_size) == (300, 20, 64)
    assert (cfg.optimizer.name, cfg.task.name, cfg.task.split_seed) == ("adam", "chorales", 0)
    assert compose_run(["task=co2"]).train.epochs == 30
    short = compose_run(["task=chorales", "train.epochs=30", "train.patience=5"])
    assert (short.train.epochs, short.train.patience) == (30, 5)
    assert compose_run(["task=chorales", "debug=smoke"]).train.epochs == 2


def test_cli_language_model_carries_state_and_reports_against_the_unigram(tmp_path):
    proc = run_cli(["task=lm_char", "task.corpus=lee", "debug=smoke", "task.limit=24",
                    "task.bptt=25"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test bpc" in proc.stdout and "(baseline" in proc.stdout
    runs = store_runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["task.carry_state"] == "True"
    assert runs[0].data.metrics["baseline_bpc"] > 3.5  # unigram entropy of 27 symbols

