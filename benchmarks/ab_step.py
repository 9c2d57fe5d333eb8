"""The training step of a recurrent layer at another commit of the project against the
working tree, timed turn by turn in one process.

    python benchmarks/ab_step.py --before REV [--cells lstm gru] [--gradient bptt]
                                 [--rounds 24] [--steps 3] [--time T] [--n N]

A change that makes a cell a few percent faster cannot be seen by running the benchmark
once before and once after it: two runs on this machine differ by more than that. Here
the rnnbench package of revision `REV` (`git show REV:rnnbench/...`) is loaded next to
the working tree's under another name, both build the same model (`Input(T, d) ->
recurrent layer (n units) -> Dense(10, softmax)`, Adam, XLA on, one fixed random
batch, the same initial weights), and their training steps are timed in alternating
order, `--steps` steps per turn. Each turn gives a ratio of the two (both timed back to
back, so load from other jobs falls on both); the script prints, per cell, the best
turn of each side and the median [lowest–highest] of the per-turn speed ratios
(after ÷ before: above 1, the working tree is faster), in wall and in CPU time.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = pathlib.Path(__file__).resolve().parent.parent


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="git revision to compare against")
    p.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    p.add_argument("--gradient", default="bptt", choices=["bptt", "autodiff"])
    p.add_argument("--rounds", type=int, default=24, help="turns (both sides once each)")
    p.add_argument("--steps", type=int, default=3, help="training steps per side and turn")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--time", type=int, default=100)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def load_revision(rev: str, into: pathlib.Path):
    """The `rnnbench` package of git revision `rev`, imported as `rnnbench_before`.

    Raises SystemExit with the reason when `rev` is not a revision of this repository.
    """
    name = "rnnbench_before"
    try:
        files = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "rnnbench"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise SystemExit(f"--before {rev!r} is not a revision of {ROOT} ({str(detail).strip()}); "
                         "give a commit, tag or branch, e.g. --before HEAD~1") from None
    for path in files.split():
        if not path.endswith(".py"):
            continue
        text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
        # the package under another name, and its Keras objects in their own namespace
        text = (text.replace("from rnnbench", f"from {name}")
                .replace("import rnnbench", f"import {name}")
                .replace('package="rnnbench"', f'package="{name}"')
                .replace('"rnnbench.', f'"{name}.'))
        target = into / name / pathlib.Path(path).relative_to("rnnbench")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]  # a revision loaded before in this process
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{name}.cells")


def build(cells_module, cell, args, tag):
    import keras

    keras.utils.set_random_seed(args.seed)  # the same initial weights on both sides
    layer = cells_module.make_recurrent_layer(
        {"name": cell, "impl": "custom", "gradient": args.gradient}, args.n,
        return_sequences=False, name=f"rec_{tag}")
    inputs = keras.Input((args.time, args.d))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(layer(inputs)))
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
    return model


def spread(values):
    return f"{statistics.median(values):.3f} [{min(values):.3f}–{max(values):.3f}]"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import rnnbench.cells as after_cells

    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.batch, args.time, args.d)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch,))
    with tempfile.TemporaryDirectory() as tmp:
        before_cells = load_revision(args.before, pathlib.Path(tmp))
        print(f"B={args.batch} T={args.time} d={args.d} n={args.n}, cell.gradient="
              f"{args.gradient}, XLA on; {args.rounds} turns of {args.steps} steps; "
              f"before = {args.before}, after = the working tree; load average "
              f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
        print("| cell | before: best ms/step | after: best ms/step | speed after ÷ before, "
              "wall, turn by turn | CPU time, turn by turn |")
        print("|---|---|---|---|---|")
        for cell in args.cells:
            models = {"before": build(before_cells, cell, args, "before"),
                      "after": build(after_cells, cell, args, "after")}
            for model in models.values():
                model.train_on_batch(x, y)  # compiles
            wall = {k: [] for k in models}
            cpu = {k: [] for k in models}
            for turn in range(args.rounds):
                order = list(models) if turn % 2 == 0 else list(models)[::-1]
                for key in order:
                    start, start_cpu = time.perf_counter(), time.process_time()
                    for _ in range(args.steps):
                        models[key].train_on_batch(x, y)
                    wall[key].append((time.perf_counter() - start) / args.steps)
                    cpu[key].append((time.process_time() - start_cpu) / args.steps)
            speed = [b / a for b, a in zip(wall["before"], wall["after"])]
            speed_cpu = [b / a for b, a in zip(cpu["before"], cpu["after"])]
            print(f"| {cell} | {min(wall['before']) * 1e3:.1f} | {min(wall['after']) * 1e3:.1f} "
                  f"| {spread(speed)} | {spread(speed_cpu)} |", flush=True)
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
