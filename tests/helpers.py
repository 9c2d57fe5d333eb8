"""What several test modules share: the real CLI in a temporary folder and its MLflow
store, the benchmark scripts as modules, composed configs, tiny training runs and sweeps, and a float64 NumPy reference of
every cell. Fixtures stay in conftest.py; test modules import from here, never from each
other."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def load_benchmark(name: str):
    """The script `benchmarks/<name>.py` as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}",
                                                  ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------ the CLI and its store
def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)  # the user's view: no stack traces
    # rnnbench honours MLflow's variables, and mlflow.set_tracking_uri() in this process
    # (an earlier test) sets MLFLOW_TRACKING_URI: a test that wants one passes it in extra
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    env.update({"PYTHONUNBUFFERED": "1", **extra})
    return env


def run_cli(args: list[str], cwd: Path, *, module: str = "rnnbench", timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` (the real CLI) in ``cwd``."""
    if module == "rnnbench":
        cmd = [sys.executable, "-m", "rnnbench", *args]
    else:
        cmd = [sys.executable, "-c", f"from rnnbench.cli import {module}; {module}()", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env())


def store_runs(cwd: Path, uri: str | None = None) -> list:
    """Every run in the store of ``cwd`` (default: its ./mlflow.db), all experiments."""
    import mlflow

    uri = uri or f"sqlite:///{cwd / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return []
    client = mlflow.MlflowClient(tracking_uri=uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=10000) if exps else []


# ------------------------------------------------------ tiny runs and sweeps
def task_overrides(name: str, inputs) -> list[str]:
    return {
        "co2": ["task.limit=32"],
        "sunspots": ["task.limit=32"],
        "electricity": ["task.limit=16", "task.lookback=96"],
        "timeseries_csv": [f"task.path={inputs['csv']}", "task.column=value", "task.limit=32",
                           "task.lookback=12", "task.horizon=3"],
        "lm_char": ["task.corpus=lee", "task.limit=12", "task.bptt=20"],
        "lm_word": ["task.corpus=lee", "task.limit=12", "task.carry_state=false"],
        "speech_vowels": ["task.limit=48", "cell.bidirectional=true"],
        "speech_audio": [f"task.path={inputs['wavs']}"],
        "adding": ["task.length=20", "task.limit=64"],
        "copy": ["task.length=8", "task.limit=64"],
        "chorales": ["task.limit=2"],
    }[name]


def compose_run(overrides: list[str]):
    """The run config exactly as ``rnnbench <overrides>`` composes it, as objects."""
    from hydra import compose, initialize_config_dir

    from rnnbench.cli.schema import register_configs
    from rnnbench.config import to_object

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_object(compose("config", overrides=overrides))


def tiny_task_run(name: str, inputs, db, *extra: str):
    """One real training run of task ``name`` on tiny data (8 units, 2 steps of 8 per
    epoch, XLA off), logged to ``db``; ``extra`` overrides go last. Returns the
    composed config and the run's result."""
    from rnnbench.train import RunContext, run

    cfg = compose_run([f"task={name}", "debug=smoke", "model.units=8",
                       "train.steps_per_epoch=2", "train.batch_size=8", "hardware.xla=off",
                       f"tracking.uri=sqlite:///{db}", *task_overrides(name, inputs), *extra])
    return cfg, run(cfg, RunContext(command=f"test {name}"))


# Tiny trials: a smoke-sized run without XLA (compiling costs more than the training),
# without the gradient diagnostics and without saving the model.
FAST = ["debug=smoke", "hardware.xla=off", "diagnostics.enabled=false",
        "tracking.log_model=false", "train.verbose=0", "tuner.max_epochs=2"]


def compose_tune(overrides: list[str]):
    """The sweep config exactly as ``rnnbench-tune <overrides>`` composes it, as objects
    (every value check runs)."""
    from hydra import compose, initialize_config_dir

    from rnnbench.cli.schema import register_configs
    from rnnbench.config import to_object

    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("tune", overrides=overrides)
    return to_object(cfg)


def oracle_sequence(cfg, tmp_path: Path, n: int) -> list[dict]:
    """Drive the sweep's real oracle for ``n`` trials with a fixed, deterministic score
    (the oracle's choices may depend on the scores: Bayesian optimisation)."""
    from rnnbench.tuning.plan import SweepPlan
    from rnnbench.tuning.tuner import SweepTuner, make_oracle

    plan = SweepPlan.create(cfg)
    tuner = SweepTuner(make_oracle(plan), plan, record=None, directory=str(tmp_path),
                       project_name="p", overwrite=True)
    oracle, seq = tuner.oracle, []
    for _ in range(n):
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            break
        values = dict(trial.hyperparameters.values)
        seq.append(values)
        score = (math.log10(values["lr"]) + 2.5) ** 2 + values["units"] / 100
        oracle.update_trial(trial.trial_id, {plan.objective: score})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    return seq


# ------------------------------------------- a float64 reference of every cell
# Written from the spec's equations (docs/cells.md), one gate at a time, with separate
# matrices per gate (`W[g]` is d×n, `U[g]` n×n, `b[g]`, `p[g]` n); `load_params` maps
# them onto the layers' documented fused layout.
B, T, D, N = 3, 60, 5, 7


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def ref_rnn(x, P):
    h = np.zeros((x.shape[0], N))
    hs = []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ P["W"]["h"] + h @ P["U"]["h"] + P["b"]["h"])
        hs.append(h)
    return np.stack(hs, 1), [h]


def ref_gru(x, P, reset_after):
    W, U, b = P["W"], P["U"], P["b"]
    h = np.zeros((x.shape[0], N))
    hs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = sigmoid(xt @ W["z"] + h @ U["z"] + b["z"])
        r = sigmoid(xt @ W["r"] + h @ U["r"] + b["r"])
        if reset_after:
            g = np.tanh(xt @ W["h"] + b["h"] + r * (h @ U["h"] + P["bh2"]))
        else:
            g = np.tanh(xt @ W["h"] + (r * h) @ U["h"] + b["h"])
        h = z * h + (1 - z) * g
        hs.append(h)
    return np.stack(hs, 1), [h]


def ref_lstm_family(x, P, variant):
    """`lstm`/`np` (no peepholes), `peephole`, and the Greff et al. variants."""
    W, U, b, p, R = P["W"], P["U"], P["b"], P.get("p", {}), P.get("R", {})
    peep = variant not in ("lstm", "np")
    batch = x.shape[0]
    h, c = np.zeros((batch, N)), np.zeros((batch, N))
    prev = {g: np.zeros((batch, N)) for g in "ifo"}  # fgr: previous gate activations
    hs = []

    def pre(gate, xt, cell_state):
        a = xt @ W[gate] + h @ U[gate] + b[gate]
        if peep:
            a = a + p[gate] * cell_state
        if variant == "fgr":
            a = a + sum(prev[src] @ R[gate + src] for src in "ifo")
        return a

    for t in range(x.shape[1]):
        xt = x[:, t]
        i = np.ones_like(h) if variant == "nig" else sigmoid(pre("i", xt, c))
        if variant == "nfg":
            f = np.ones_like(h)
        elif variant == "cifg":
            f = 1 - i
        else:
            f = sigmoid(pre("f", xt, c))
        a_c = xt @ W["c"] + h @ U["c"] + b["c"]
        g = a_c if variant == "niaf" else np.tanh(a_c)
        c_new = f * c + i * g
        o = np.ones_like(h) if variant == "nog" else sigmoid(pre("o", xt, c_new))
        h_new = o * c_new if variant == "noaf" else o * np.tanh(c_new)
        prev = {"i": i, "f": f, "o": o}
        h, c = h_new, c_new
        hs.append(h)
    states = [h, c]
    if variant == "fgr":
        states.append(np.concatenate([prev["i"], prev["f"], prev["o"]], axis=1))
    return np.stack(hs, 1), states


def ref_janet(x, P):
    W, U, b = P["W"], P["U"], P["b"]
    h = np.zeros((x.shape[0], N))
    hs = []
    for t in range(x.shape[1]):
        s = x[:, t] @ W["f"] + h @ U["f"] + b["f"]
        g = np.tanh(x[:, t] @ W["c"] + h @ U["c"] + b["c"])
        h = sigmoid(s) * h + (1 - sigmoid(s - 1.0)) * g
        hs.append(h)
    return np.stack(hs, 1), [h]


def reference(cell, x, P):
    if cell == "rnn":
        return ref_rnn(x, P)
    if cell in ("gru", "gru_v1"):
        return ref_gru(x, P, reset_after=cell == "gru")
    if cell == "janet":
        return ref_janet(x, P)
    return ref_lstm_family(x, P, cell)


BLOCKS = {
    "rnn": "h",
    "gru": "zrh",
    "gru_v1": "zrh",
    "janet": "fc",
    "nig": "fco",
    "nfg": "ico",
    "cifg": "ico",
    "nog": "ifc",
}
PEEPHOLES = {"lstm": "", "np": "", "nig": "fo", "nfg": "io", "cifg": "io", "nog": "if"}
PEEPHOLE_NAME = {"i": "input", "f": "forget", "o": "output"}


def random_params(cell, rng, scale=0.6):
    from rnnbench.cells import CELLS

    blocks = BLOCKS.get(cell, "ifco")
    P = {
        "W": {g: rng.uniform(-scale, scale, (D, N)) for g in blocks},
        "U": {g: rng.uniform(-scale, scale, (N, N)) / np.sqrt(N) * 2 for g in blocks},
        "b": {g: rng.uniform(-0.5, 0.5, N) for g in blocks},
    }
    if cell == "gru":
        P["bh2"] = rng.uniform(-0.5, 0.5, N)
    if CELLS[cell].family == "lstm":
        P["p"] = {g: rng.uniform(-0.5, 0.5, N) for g in PEEPHOLES.get(cell, "ifo")}
    if cell == "fgr":
        P["R"] = {
            a + s: rng.uniform(-scale, scale, (N, N)) / np.sqrt(N) for a in "ifo" for s in "ifo"
        }
    return P


def load_params(layer, cell, P):
    blocks = BLOCKS.get(cell, "ifco")
    c = layer.cell
    c.kernel.assign(np.concatenate([P["W"][g] for g in blocks], 1))
    c.recurrent_kernel.assign(np.concatenate([P["U"][g] for g in blocks], 1))
    c.bias.assign(np.concatenate([P["b"][g] for g in blocks]))
    if cell == "gru":
        c.recurrent_bias.assign(P["bh2"])
    for g, value in P.get("p", {}).items():
        getattr(c, f"peephole_{PEEPHOLE_NAME[g]}").assign(value)
    if cell == "fgr":
        # rows: the previous gate (source), columns: the gate it feeds (target)
        R = np.block([[P["R"][tgt + src] for tgt in "ifo"] for src in "ifo"])
        c.gate_recurrent_kernel.assign(R)


def fill_disk(folder: Path, leave: int = 0) -> None:
    """Write filler into `folder` until its filesystem has at most `leave` bytes free."""
    filler = folder / ".filler"
    with open(filler, "ab") as out:
        chunk = b"\0" * 4096
        while True:
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            if free <= leave:
                break
            try:
                out.write(chunk[: max(1, min(len(chunk), free - leave))])
                out.flush()
            except OSError:
                break


SMOKE_TASKS = ("adding", "chorales", "co2", "speech_vowels")


def assert_trains_on_smoke_tasks(cell: str, inputs, tmp_path: Path) -> None:
    """`cell` trains one epoch of `debug=smoke` on each task of `SMOKE_TASKS` and ends
    FINISHED with finite test metrics (the done-when check of every new cell)."""
    for task in SMOKE_TASKS:
        _, result = tiny_task_run(task, inputs, tmp_path / f"{task}.db", f"cell={cell}",
                                  "train.epochs=1", "diagnostics.enabled=false",
                                  "tracking.log_model=false")
        assert result.status == "FINISHED", (cell, task, result.status)
        assert all(math.isfinite(v) for v in result.test_metrics.values()), (cell, task, result)
