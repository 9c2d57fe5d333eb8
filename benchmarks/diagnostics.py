"""Overhead of the diagnostics: epoch time with diagnostics on / off, in one run.

    python benchmarks/diagnostics.py [--epochs N] [hydra overrides ...]   # ~3 minutes
    python benchmarks/diagnostics.py --init-table     # the docs' table at initialisation

Two real training runs (``rnnbench.train.run``, default config: co2, LSTM, 64 units, XLA
auto; MLflow's SQLite store in a temporary folder), one with ``diagnostics.enabled=false``
and one with ``=true`` at the default frequency, go side by side in one process and take
turns epoch by epoch: one trains an epoch while the other waits, in the order first,
second, second, first, first, … On a machine shared with other work, load that changes
from one minute to the next swamps a few percent when whole runs take turns; adjacent
epochs see the same load. Both train the same steps (same seed, early stopping pushed
past the last epoch).

An epoch's time runs from the start of its turn (after the diagnostics' own
``on_epoch_begin``) to the end of its last callback's ``on_epoch_end``: the training
steps with the gradient-norm recording inside them, validation, the MLflow writes, and
the diagnostics' epoch end (refreshing the probe's copy of the weights). The probe
evaluation runs in the diagnostics' worker thread while the run's next epoch trains, as
in a normal run; here that worker is held until the "on" run's next turn, so that it
never works during the other run's epoch. Python's garbage collector runs between
turns, not during them (in one process, either run would otherwise pay for the other's
garbage). The first two epochs (which compile the train steps and overlap the probe's
compilation) are left out.

Two runs in one process are not quite alike: with diagnostics off in both, the run
whose thread starts first had epochs 4–11% slower here. So the benchmark runs two
sessions, one with each run first, and the ratio printed last is the geometric mean of
the two sessions' ratios of mean epoch times (means without the 10% slowest and 10%
fastest epochs, which are other processes' load spikes; a mean rather than a median,
since with ``every_n_epochs`` above 1 epochs with and without an evaluation
alternate). Also printed: each session's medians and adjacent-epoch ratios, the
process's CPU time per epoch, and the diagnostics' once-per-run cost at the start and
end of ``fit``.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=40, help="epochs per run")
    p.add_argument("--init-table", action="store_true",
                   help="print the decay ratio at initialisation on the adding problem")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run config")
    return p.parse_args(argv)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnbench import config
    from rnnbench.cli.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return config.to_object(hydra_compose("config", overrides=overrides))


class Turns:
    """Two runs take turns, one epoch each, in the order first, second, second, first,
    first, … (each round of two epochs starts with the run the last one ended with), so
    that neither run is always the one that follows the other."""

    def __init__(self, epochs: int, first: str = "off") -> None:
        self.cond = threading.Condition()
        self.epochs = epochs
        pair = (first, "on" if first == "off" else "off")
        self.order = [w for r in range(epochs) for w in (pair if r % 2 == 0 else pair[::-1])]
        self.position = 0
        self.count = {"off": 0, "on": 0}  # turns taken so far
        self.done: set[str] = set()

    @property
    def holder(self) -> str | None:
        while self.position < len(self.order) and self.order[self.position] in self.done:
            self.position += 1
        return self.order[self.position] if self.position < len(self.order) else None

    def acquire(self, who: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.holder == who)
            self.count[who] += 1
            self.cond.notify_all()

    def release(self, who: str) -> None:
        gc.collect()  # between turns, so that neither run pays for the other's garbage
        with self.cond:
            if self.count[who] >= self.epochs:
                self.done.add(who)
            self.position += 1
            self.cond.notify_all()

    def finish(self, who: str) -> None:
        with self.cond:
            self.done.add(who)
            self.cond.notify_all()

    def wait_next_turn(self, who: str, after: int) -> None:
        """Until ``who`` holds a turn later than its turn number ``after`` (or is done)."""
        with self.cond:
            self.cond.wait_for(lambda: who in self.done or (
                self.count[who] > after and self.holder == who))


def trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    """Mean of ``values`` without the lowest and highest ``cut`` fraction (load spikes)."""
    v = sorted(values)
    k = int(len(v) * cut)
    return statistics.fmean(v[k:len(v) - k] if len(v) > 2 * k else v)


def session(args, first: str) -> dict:
    """Both runs side by side, ``first``'s thread started first and taking the first
    turn; returns the epoch times, CPU times and once-per-run costs."""
    tmp = tempfile.mkdtemp(prefix="rnnbench-diag-bench-")
    cfgs = {v: compose([f"train.epochs={args.epochs}", f"train.patience={args.epochs + 1}",
                        "train.verbose=0", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                        "tracking.log_model=false", *args.overrides,
                        f"diagnostics.enabled={str(v == 'on').lower()}"])
            for v in ("off", "on")}
    from rnnbench import hardware

    hardware.select_backend(cfgs["off"].backend.name)
    import keras

    from rnnbench import callbacks, train
    from rnnbench.diagnostics import DiagnosticsCallback

    turns = Turns(args.epochs, first)
    times: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    once: dict[str, float] = {}
    errors: list[BaseException] = []

    class Turn(keras.callbacks.Callback):
        """Last callback of the list: waits for its run's turn, times the epoch."""

        def __init__(self, who: str) -> None:
            super().__init__()
            self.who = who

        def on_epoch_begin(self, epoch, logs=None):
            turns.acquire(self.who)
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            times[self.who].append(time.perf_counter() - self._t)
            cpu[self.who].append(time.process_time() - self._c)
            turns.release(self.who)

        def on_train_end(self, logs=None):
            turns.finish(self.who)

    def hold_worker(callback: DiagnosticsCallback, who: str) -> None:
        """Let the diagnostics' worker start a job only in its own run's next turn (the
        epoch that follows the one whose end submitted it, as in a normal run)."""
        submit = callback._submit

        def gated(fn, *a):
            after = turns.count[who]

            def job(*b):
                turns.wait_next_turn(who, after)
                return fn(*b)
            return submit(job, *a)

        callback._submit = gated

    def timed(callback: DiagnosticsCallback, name: str) -> None:
        """Record how long the diagnostics' own ``name`` (a once-per-run hook) takes."""
        method = getattr(callback, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return method(*a, **k)
            finally:
                once[name] = time.perf_counter() - t

        setattr(callback, name, wrapper)

    real_hook = callbacks.diagnostics_callbacks

    def hook(cfg, *a, **k):
        who = "on" if cfg.diagnostics.enabled else "off"
        cbs = real_hook(cfg, *a, **k)
        for cb in cbs:
            if isinstance(cb, DiagnosticsCallback):
                hold_worker(cb, who)
                timed(cb, "on_train_begin")
                timed(cb, "on_train_end")
        return cbs + [Turn(who)]

    callbacks.diagnostics_callbacks = hook

    def run(who: str) -> None:
        try:
            train.run(cfgs[who], train.RunContext(command=f"benchmark {who}"))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            turns.finish(who)

    order = (first, "on" if first == "off" else "off")
    threads = [threading.Thread(target=run, args=(v,), name=f"run-{v}") for v in order]
    gc.disable()  # collected between turns instead (one process, two runs)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.enable()
        callbacks.diagnostics_callbacks = real_hook
    if errors:
        raise errors[0]
    return {"times": {v: times[v][2:] for v in times}, "cpu": {v: cpu[v][2:] for v in cpu},
            "once": once, "cfg": cfgs["on"]}


def overhead(args) -> int:
    results = []
    for first in ("off", "on"):
        res = session(args, first)
        t, c = res["times"], res["cpu"]
        off, on = trimmed_mean(t["off"]), trimmed_mean(t["on"])
        pairs = [b / a for a, b in zip(t["off"], t["on"])]
        q = statistics.quantiles(pairs, n=4)
        res.update(ratio=on / off, cpu_ratio=trimmed_mean(c["on"]) / trimmed_mean(c["off"]))
        results.append(res)
        print(f"session with the {first!r} run first: epoch time (10%-trimmed mean) off "
              f"{off:.4f} s, on {on:.4f} s, ratio {on / off:.3f}; medians "
              f"{statistics.median(t['off']):.4f} s, {statistics.median(t['on']):.4f} s; "
              f"adjacent-epoch ratios: median {statistics.median(pairs):.3f}, quartiles "
              f"{q[0]:.3f} … {q[2]:.3f}; CPU time per epoch ratio {res['cpu_ratio']:.3f}",
              flush=True)
    cfg, once = results[-1]["cfg"], results[-1]["once"]
    ratio = math.sqrt(results[0]["ratio"] * results[1]["ratio"])
    cpu_ratio = math.sqrt(results[0]["cpu_ratio"] * results[1]["cpu_ratio"])
    print()
    print(f"task {cfg.task.name}, cell {cfg.cell.name}, units {cfg.model.units}, batch "
          f"{cfg.train.batch_size}, xla {cfg.hardware.xla}; diagnostics every "
          f"{cfg.diagnostics.every_n_epochs} epoch(s), probe {cfg.diagnostics.probe_batch_size}; "
          f"{len(results[0]['times']['on'])} epoch pairs timed per session (of {args.epochs})")
    print(f"once per run, not in any epoch: diagnostics' on_train_begin (copy of the model, "
          f"probe compiled, evaluation before training) {once['on_train_begin']:.2f} s, "
          f"on_train_end (last evaluation's write, artifacts) {once['on_train_end']:.2f} s")
    print(f"CPU time per epoch, on / off (geometric mean of the two sessions): {cpu_ratio:.3f}")
    print(f"epoch time ratio (on / off, geometric mean of the two sessions): {ratio:.3f}")
    return 0


def init_table(args) -> int:
    """Decay ratio and horizon at initialisation on the adding problem (T = 100, 16 units,
    16 sequences, seeds 0-4), as in `docs/diagnostics.md`."""
    import keras
    import numpy as np

    from rnnbench.cells import make_recurrent_layer
    from rnnbench.diagnostics import GradientFlow, summarize

    steps, units = 100, 16
    cells = {"rnn": {"name": "rnn"}, "lstm": {"name": "lstm"},
             "lstm, chrono_init=100": {"name": "lstm", "chrono_init": steps},
             "gru": {"name": "gru"}}
    for label, cell in cells.items():
        ratios, horizons = [], []
        for seed in range(5):
            rng = np.random.default_rng(seed)
            values = rng.uniform(0, 1, (16, steps))
            marks = np.zeros((16, steps))
            marks[np.arange(16), rng.integers(0, steps // 2, 16)] = 1
            marks[np.arange(16), steps // 2 + rng.integers(0, steps // 2, 16)] = 1
            x = np.stack([values, marks], -1).astype("float32")
            y = (values * marks).sum(1, keepdims=True).astype("float32")
            keras.utils.set_random_seed(seed)
            inp = keras.Input((steps, 2), name="inputs")
            h = make_recurrent_layer(cell, units, return_sequences=False, name="rnn_0")(inp)
            model = keras.Model(inp, keras.layers.Dense(1, name="head")(h))
            profile, _ = GradientFlow(model, "mse", seq2seq=False).compute(x, y)
            s = summarize(profile, 0.01)
            ratios.append(s["grad_flow/decay_ratio"])
            horizons.append(int(s["grad_flow/horizon"]))
        print(f"{label:22s} decay ratio {min(ratios):.1e} … {max(ratios):.1e}  "
              f"horizon {min(horizons)} … {max(horizons)}", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from rnnbench.cli.startup import quiet_tensorflow

    quiet_tensorflow()  # without TensorFlow's start-up lines
    return init_table(args) if args.init_table else overhead(args)


if __name__ == "__main__":
    sys.exit(main())
