"""Overhead of the diagnostics: epoch time with diagnostics on / off, in one process.

    python benchmarks/diagnostics.py [--epochs N] [--repeats R] [hydra overrides ...]

Runs the real training run (``rnnbench.train.run``, default config: co2, LSTM, 64
units, XLA auto; MLflow's SQLite store in a temporary folder) with
``diagnostics.enabled=false`` and ``=true`` (default frequency), in turns
(off, on, off, on, …) so that load from other processes falls on both alike. Both
variants train the same steps (same seed; early stopping is pushed past the last epoch).

Epoch time is the wall time between the moments when every callback has finished with
one epoch and with the next (the first epoch is timed from the end of
``on_train_begin``), so it holds the training steps (with the gradient-norm recording
inside them), validation, the probe evaluation, the spectral norms and the MLflow
writes of both the epoch logger and the diagnostics. The first epoch of every run
(which compiles the train step) is left out; the ratio is the median epoch time with
diagnostics over the median without. Printed separately: the one-off cost at the
start (compiling the probe function, the evaluation before training) and at the end
(artifacts), from the difference in ``fit`` time less the epochs' difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10, help="epochs per run")
    p.add_argument("--repeats", type=int, default=2, help="runs per variant")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run config")
    return p.parse_args(argv)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnbench import config

    config.register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return config.to_object(hydra_compose("config", overrides=overrides))


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tmp = tempfile.mkdtemp(prefix="rnnbench-diag-bench-")
    base = [f"train.epochs={args.epochs}", f"train.patience={args.epochs + 1}",
            "train.verbose=0", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            "tracking.log_model=false", *args.overrides]
    cfgs = {v: compose([*base, f"diagnostics.enabled={str(v == 'on').lower()}"])
            for v in ("off", "on")}
    from rnnbench import hardware

    hardware.select_backend(cfgs["off"].backend.name)
    import keras

    from rnnbench import callbacks, tracking, train

    class EpochClock(keras.callbacks.Callback):
        """Wall time between the ends of consecutive epochs (last callback of the list)."""

        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self.cpu: list[float] = []

        def on_train_begin(self, logs=None):
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            now, cpu = time.perf_counter(), time.process_time()
            self.times.append(now - self._t)
            self.cpu.append(cpu - self._c)
            self._t, self._c = now, cpu

    real_hook = callbacks.diagnostics_callbacks
    clocks: list[EpochClock] = []

    def timed_hook(*a, **k):
        clocks.append(EpochClock())
        return real_hook(*a, **k) + [clocks[-1]]

    callbacks.diagnostics_callbacks = timed_hook  # the clock goes last in the list
    epochs: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    extra: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for rep in range(args.repeats):
            for variant in ("off", "on"):
                t0 = time.perf_counter()
                result = train.run(cfgs[variant], train.RunContext(command="benchmark"))
                wall = time.perf_counter() - t0
                times = clocks[-1].times
                epochs[variant] += times[1:]
                cpu[variant] += clocks[-1].cpu[1:]
                fit = tracking.metric_history(result.run_id, "fit_time_s")[-1][1]
                extra[variant].append(fit - sum(times))
                print(f"run {rep + 1} diagnostics {variant:>3}: {len(times)} epochs, "
                      f"median epoch (2nd on) {statistics.median(times[1:]):.4f} s, "
                      f"first epoch {times[0]:.2f} s, fit {fit:.2f} s, whole run "
                      f"{wall:.1f} s", flush=True)
    finally:
        callbacks.diagnostics_callbacks = real_hook

    off, on = statistics.median(epochs["off"]), statistics.median(epochs["on"])
    cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    cfg = cfgs["on"]
    print()
    print(f"task {cfg.task.name}, cell {cfg.cell.name}, units {cfg.model.units}, "
          f"batch {cfg.train.batch_size}, every_n_epochs {cfg.diagnostics.every_n_epochs}, "
          f"probe {cfg.diagnostics.probe_batch_size}, xla {cfg.hardware.xla}; "
          f"{len(epochs['on'])} epochs timed per variant")
    print(f"median epoch time: diagnostics off {off:.4f} s, on {on:.4f} s")
    print(f"median epoch CPU time of this process: off {cpu_off:.4f} s, on {cpu_on:.4f} s "
          f"(ratio {cpu_on / cpu_off:.3f})")
    print(f"one-off cost outside the epochs (start + end of fit): "
          f"{statistics.median(extra['on']) - statistics.median(extra['off']):.2f} s")
    print(f"epoch time ratio (on / off): {on / off:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
