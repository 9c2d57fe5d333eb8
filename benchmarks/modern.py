"""Seconds per epoch of the modern-cells study's grid (conf/experiment/modern.yaml): each
cell at the study's equal size on each task, built and compiled exactly as a run builds
it (``rnnbench.model.build_model``, the task's loss and metrics, XLA as configured),
timed over training steps on the task's real batches, with the form that ran (scan over
time or a step loop) and the ratio to ``lstm`` on the same task, measured in one sitting.

    python benchmarks/modern.py [--tasks adding:100,adding:400,...] [--cells rnn,lstm,...]
                                [--steps 20] [--threads 1] [--out timing.csv]

Each task's size is the study's rule: the weight count of ``lstm`` at the project's
default 64 units on that task (``model.params`` of every cell, printed first). Each
(task, cell): the model is sized by it, one warm-up epoch of ``--steps`` steps (graph tracing and XLA compilation), then
a timed epoch of ``--steps`` steps; seconds per step times the study's steps per epoch
gives seconds per epoch. Training data are cut to a few batches (``task.n_train`` of the
synthetic probes) so that preparing them costs little; a step's time does not depend on
how many sequences the epoch draws from. No MLflow run, no diagnostics, no validation.

The study's README quotes these numbers from a quiet machine (nothing else running);
under load the ratios to ``lstm`` hold better than the seconds.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CELLS = ("rnn", "lstm", "gru", "indrnn", "mingru", "minlstm", "lru", "slstm", "mlstm")
TASKS = ("adding:100", "adding:400", "adding:1000", "copy:100", "copy:400", "chorales",
         "lm_char")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS),
                   help="task or task:length, comma-separated")
    p.add_argument("--cells", default=",".join(CELLS),
                   help="cells, comma-separated; a cell's options after colons, e.g. "
                        "mlstm:chunk=0 (the whole-sequence parallel form)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per (task, cell)")
    p.add_argument("--threads", type=int, default=1, help="hardware.threads of each build")
    p.add_argument("--out", default=None, help="also write the rows to this CSV file")
    p.add_argument("--quiet-table", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rnnbench.cli.schema import register_configs
    from rnnbench.config import to_object

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_object(hydra_compose("config", overrides=overrides))


def task_overrides(spec: str) -> list[str]:
    name, _, length = spec.partition(":")
    out = [f"task={name}", "experiment=modern"]
    if length:
        out.append(f"task.length={length}")
    if name in ("adding", "copy"):
        out += ["task.n_train=400", "task.n_val=100", "task.n_test=100"]
    return out


def reference_params(spec: str) -> int:
    """The study's size on a task: the weights of ``lstm`` at 64 units there."""
    from rnnbench.model import build_model
    from rnnbench.tasks import get_task

    cfg = compose([*task_overrides(spec), "cell=lstm", "model.units=64", "model.params=null"])
    task = get_task(cfg.task)
    return int(build_model(cfg, task, task.prepare(cfg.train.batch_size, cfg.seed))
               .count_params())


def time_one(spec: str, cell: str, steps: int, threads: int, params: int) -> dict:
    import keras

    from rnnbench import hardware
    from rnnbench.model import build_model, describe_model, make_optimizer
    from rnnbench.tasks import get_task

    name, _, options = cell.partition(":")  # mlstm:chunk=0 -> cell=mlstm cell.chunk=0
    cfg = compose([*task_overrides(spec), f"cell={name}", f"hardware.threads={threads}",
                   f"model.params={params}",
                   *(f"cell.{o}" for o in options.split(":") if o)])
    hw = hardware.setup(cfg.hardware, cfg.backend.name, cfg.seed)
    keras.backend.clear_session()
    task = get_task(cfg.task)
    data = task.prepare(cfg.train.batch_size, cfg.seed)
    with hw.scope():
        model = build_model(cfg, task, data)
        model.compile(optimizer=make_optimizer(cfg.optimizer, hw.lr_scale), loss=task.loss(),
                      metrics=task.compile_metrics(), jit_compile=hw.jit_compile)
    train = data.train.repeat()
    model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)  # warm-up
    t0 = time.perf_counter()
    model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    per_step = (time.perf_counter() - t0) / steps
    what = describe_model(model)  # after training: the form that ran is known
    per_epoch_steps = cfg.train.steps_per_epoch or task_steps(task, cfg)
    forms = sorted({layer.get("form") or "builtin" for layer in what["layers"].values()})
    return {"task": spec, "cell": cell, "units": what.get("sizing", {}).get("units"),
            "params": what["params_count"], "form": "/".join(forms),
            "seconds_per_step": per_step, "steps_per_epoch": per_epoch_steps,
            "seconds_per_epoch": per_step * per_epoch_steps}


def task_steps(task, cfg) -> int:
    """Steps of a whole epoch of the full training set (the timing run cuts it short)."""
    full = compose([f"task={cfg.task.name}"])
    n = getattr(full.task, "n_train", None)
    if n:
        return -(-int(n) // int(cfg.train.batch_size))
    data = task.prepare(cfg.train.batch_size, cfg.seed)
    return int(data.train.cardinality().numpy())


def in_processes(args: argparse.Namespace) -> list[dict]:
    """Each task in a process of its own: XLA's compiled code is never unmapped, and the
    63 settings of a full run in one process come near the kernel's memory-map limit
    (rnnbench.hardware.maps would refuse the last ones)."""
    import subprocess
    import tempfile

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(args.tasks.split(",")):
            out = Path(tmp) / f"{i}.csv"
            subprocess.run([sys.executable, __file__, "--tasks", spec, "--cells", args.cells,
                            "--steps", str(args.steps), "--threads", str(args.threads),
                            "--out", str(out), "--quiet-table"], check=True)
            with out.open(newline="") as f:
                rows += [{k: _value(k, v) for k, v in row.items()}
                         for row in csv.DictReader(f)]
    return rows


def _value(key: str, text: str):
    """A CSV field back as the row had it."""
    if key in ("task", "cell", "form"):
        return text
    if text == "":
        return None
    return int(text) if key in ("units", "params", "steps_per_epoch") else float(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from rnnbench.cli.startup import quiet_tensorflow

    quiet_tensorflow()  # without TensorFlow's start-up lines
    if len(args.tasks.split(",")) > 1:
        rows = in_processes(args)
    else:
        rows = timed(args)
    if not args.quiet_table:
        print("\ntask         cell      ratio to lstm (seconds per step, one sitting)")
        for row in rows:
            print(f"{row['task']:12s} {row['cell']:8s} {row['ratio_to_lstm']:6.2f}")
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


def timed(args: argparse.Namespace) -> list[dict]:
    from rnnbench import hardware

    # the thread pools first: building the reference model would start TensorFlow with
    # its defaults, and hardware.threads could no longer be applied
    first = compose([f"hardware.threads={args.threads}"])
    hardware.setup(first.hardware, first.backend.name, first.seed)
    rows = []
    for spec in args.tasks.split(","):
        base = None
        params = reference_params(spec)
        print(f"{spec}: model.params={params} (lstm at 64 units)", flush=True)
        for cell in args.cells.split(","):
            row = time_one(spec, cell, args.steps, args.threads, params)
            if cell == "lstm":
                base = row["seconds_per_step"]
            rows.append(row)
            print(f"{spec:12s} {cell:8s} units {row['units']!s:>5} params {row['params']:>7} "
                  f"{row['form']:8s} {row['seconds_per_step'] * 1000:8.1f} ms/step "
                  f"{row['seconds_per_epoch']:8.1f} s/epoch", flush=True)
        for row in rows:
            if row["task"] == spec:
                row["ratio_to_lstm"] = row["seconds_per_step"] / base if base else float("nan")
    return rows


if __name__ == "__main__":
    sys.exit(main())
