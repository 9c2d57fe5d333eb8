"""What bucketing by length buys on variable-length sequences (the chorales task).

    python benchmarks/bucketing.py [--epochs N] [--rounds R] [hydra overrides ...]

Two real training runs (``rnnbench.train.run``, ``task=chorales``, the default cell,
``train.steps_per_epoch=40``): one with the task's batches bucketed by length and cut
to their bucket (what the task does), one with every batch padded to the longest
chorale (``BUCKETS = ()``: one bucket). They alternate ``--rounds`` times, so a busy
machine slows both alike. Printed per mode: the median epoch time after the first epoch
(which compiles one program per batch shape), the first epoch, the whole fit, and the
ratios bucketed / padded. The test NLL of both is printed too: bucketing changes which
chorales share a batch, not the loss (padding has weight 0 either way).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent


def one_run(overrides: list[str], bucketed: bool, store: Path) -> dict:
    import mlflow
    from hydra import compose, initialize_config_dir

    from rnnbench import config
    from rnnbench.tasks import music
    from rnnbench.train import RunContext, run

    saved = music.BUCKETS
    music.BUCKETS = saved if bucketed else ()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = config.to_object(compose("config", overrides=[
                "task=chorales", "train.steps_per_epoch=40", "train.verbose=0",
                f"tracking.uri=sqlite:///{store}", *overrides]))
        result = run(cfg, RunContext(command="benchmarks/bucketing.py"))
    finally:
        music.BUCKETS = saved
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    times = [m.value for m in sorted(client.get_metric_history(result.run_id, "epoch_time_s"),
                                     key=lambda m: m.step)]
    metrics = client.get_run(result.run_id).data.metrics
    return {"first": times[0], "later": statistics.median(times[1:]),
            "fit": metrics["fit_time_s"], "nll": metrics["test_nll"]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    args, overrides = ap.parse_known_args(argv)
    from rnnbench.cli.startup import quiet_tensorflow

    quiet_tensorflow()  # without TensorFlow's start-up lines
    from rnnbench.cli.schema import register_configs

    register_configs()
    overrides = [f"train.epochs={args.epochs}", f"train.patience={args.epochs}", *overrides]
    results: dict[str, list[dict]] = {"bucketed": [], "padded": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for mode in results:
                results[mode].append(one_run(overrides, mode == "bucketed",
                                             Path(tmp) / "mlflow.db"))
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for mode, rs in results.items()}
    print(f"\nchorales, {args.epochs} epochs of 40 steps, {args.rounds} round(s) "
          f"(overrides: {' '.join(overrides)})")
    print(f"{'':10}{'epoch (s)':>12}{'1st epoch':>12}{'fit (s)':>10}{'test nll':>10}")
    for mode, m in med.items():
        print(f"{mode:10}{m['later']:12.2f}{m['first']:12.2f}{m['fit']:10.1f}{m['nll']:10.3f}")
    b, p = med["bucketed"], med["padded"]
    print(f"{'ratio':10}{b['later'] / p['later']:12.2f}{b['first'] / p['first']:12.2f}"
          f"{b['fit'] / p['fit']:10.2f}   (bucketed / padded)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
