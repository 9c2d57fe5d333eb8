"""Overhead of the diagnostics: epoch time with diagnostics on / off.

    python benchmarks/diagnostics.py [--epochs N] [--pairs P] [hydra overrides ...]

Runs the real training run (``rnnbench.train.run``; default config: co2, LSTM, 64 units,
XLA auto; MLflow's SQLite store in a temporary folder) with ``diagnostics.enabled=false``
and ``=true`` (at the default frequency unless overridden), each in a fresh process, in
turns (off, on, off, on, …) so that load from other processes falls on both alike. Both
train the same steps: same seed, early stopping pushed past the last epoch.

Epoch time is the wall time between the moments when every callback has finished with
one epoch and with the next (the first epoch from the end of ``on_train_begin``), so it
holds the training steps with the gradient-norm recording inside them, validation, the
MLflow writes, and the diagnostics' work at the epoch end (refreshing the probe's copy
of the weights); the probe evaluation and its MLflow write run in the diagnostics'
worker thread during the next epoch, so their cost shows as whatever they take from
it. The first epoch of every run (which compiles the train step) is left out. The ratio
printed last is the median epoch time with diagnostics over the median without, all
pairs pooled; each pair's own ratio and the process CPU time per epoch (all threads)
are printed too. Printed separately: the one-off cost at the start and end of ``fit``
(compiling the probe function, the evaluation before training, the artifacts), the
difference in ``fit`` time less the epochs' difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=12, help="epochs per run")
    p.add_argument("--pairs", type=int, default=3, help="pairs of runs (off, on)")
    p.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run config")
    return p.parse_args(argv)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnbench import config

    config.register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return config.to_object(hydra_compose("config", overrides=overrides))


def worker(args) -> int:
    """One run; prints its per-epoch times as JSON."""
    tmp = tempfile.mkdtemp(prefix="rnnbench-diag-bench-")
    cfg = compose([f"train.epochs={args.epochs}", f"train.patience={args.epochs + 1}",
                   "train.verbose=0", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                   "tracking.log_model=false", *args.overrides,
                   f"diagnostics.enabled={str(args.worker == 'on').lower()}"])
    from rnnbench import hardware

    hardware.select_backend(cfg.backend.name)
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

    clock = EpochClock()
    real_hook = callbacks.diagnostics_callbacks
    callbacks.diagnostics_callbacks = lambda *a, **k: real_hook(*a, **k) + [clock]
    result = train.run(cfg, train.RunContext(command="benchmark"))
    fit = tracking.metric_history(result.run_id, "fit_time_s")[-1][1]
    print("RESULT " + json.dumps({"epochs": clock.times, "cpu": clock.cpu, "fit": fit,
                                  "config": {"task": cfg.task.name, "cell": cfg.cell.name,
                                             "units": cfg.model.units,
                                             "every": cfg.diagnostics.every_n_epochs,
                                             "probe": cfg.diagnostics.probe_batch_size,
                                             "xla": cfg.hardware.xla}}), flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker(args)
    epochs: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    extra: dict[str, list[float]] = {"off": [], "on": []}
    ratios: list[float] = []
    config = {}
    for pair in range(args.pairs):
        medians = {}
        for variant in ("off", "on"):
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", variant, "--epochs", str(args.epochs),
                 *args.overrides], capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            res = json.loads(next(line for line in proc.stdout.splitlines()
                                  if line.startswith("RESULT "))[len("RESULT "):])
            times, config = res["epochs"], res["config"]
            epochs[variant] += times[1:]
            cpu[variant] += res["cpu"][1:]
            extra[variant].append(res["fit"] - sum(times))
            medians[variant] = statistics.median(times[1:])
            print(f"pair {pair + 1} diagnostics {variant:>3}: {len(times)} epochs, median "
                  f"epoch (2nd on) {medians[variant]:.4f} s, CPU "
                  f"{statistics.median(res['cpu'][1:]):.4f} s, first epoch {times[0]:.2f} s, "
                  f"fit {res['fit']:.2f} s", flush=True)
        ratios.append(medians["on"] / medians["off"])

    off, on = statistics.median(epochs["off"]), statistics.median(epochs["on"])
    print()
    print(f"task {config['task']}, cell {config['cell']}, units {config['units']}, "
          f"every_n_epochs {config['every']}, probe {config['probe']}, xla {config['xla']}; "
          f"{len(epochs['on'])} epochs timed per variant")
    print(f"median epoch time: diagnostics off {off:.4f} s, on {on:.4f} s; per pair "
          f"on / off: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"median process CPU time per epoch: off {statistics.median(cpu['off']):.4f} s, "
          f"on {statistics.median(cpu['on']):.4f} s (ratio "
          f"{statistics.median(cpu['on']) / statistics.median(cpu['off']):.3f})")
    print(f"one-off cost outside the epochs (start + end of fit): "
          f"{statistics.median(extra['on']) - statistics.median(extra['off']):.2f} s")
    print(f"epoch time ratio (on / off): {on / off:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
