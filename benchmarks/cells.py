"""Training speed of every cell, against Keras's LSTM and against the matmul ceiling.

    python benchmarks/cells.py [--steps N] [--rounds R] [--cells lstm peephole ...]
                               [--xla on|off|both] [--builtins rnn gru gru_v1]
                               [--gradients bptt autodiff] [--time T] [--n N]

Each model is `Input(T, d) -> recurrent layer (n units) -> Dense(classes, softmax)`,
trained with Adam on one fixed random batch (B=64, T=100, d=64, n=256, 10 classes by
default). Every cell runs in rnnbench's own implementation (`impl=custom`); the
reference row is `keras.layers.LSTM`, compiled the same way (XLA on: every model is
compiled with `jit_compile=True`; off: `jit_compile=False`). Each custom cell runs once
per `--gradients` entry: `bptt` (the hand-written backward pass through time,
`cell.gradient=bptt`) and `autodiff` (autodiff of the loop).

Timing: the models are built and compiled first, then timed in turns (round-robin,
`--rounds` turns of `--steps` training steps each, the ceilings too) so that load from
other processes falls on all of them alike; each model's time per step is its best
turn. The last columns give the process CPU time per step (best turn) and the GFLOP
ratio to Keras's LSTM computed from it: on a machine shared with other jobs, CPU time
is much less disturbed than wall time (it does count threads' spin-waits).

FLOPs count only the cell's own matrix products. A kernel `W` of shape `r × c`
(input kernel, recurrent kernel, fgr's gate recurrence) is applied once per step to a
`B × r` operand: `2·B·r·c` forward FLOPs per step. A training step is about three
times the forward work (forward, gradient w.r.t. the operand, gradient w.r.t. the
weight):

    GFLOP per training step = 3 · 2 · B · T · Σ_W r·c / 1e9

The matmul ceiling of a cell is the GFLOP/s of one XLA-compiled function that does
exactly those products with the same shapes and nothing else: the input kernel as one
`(B·T) × d` product plus its two gradient-shaped products, and a T-step loop doing, for
each other weight, `y = a @ W`, `a' = y @ Wᵀ` and `G += aᵀ @ y`. The batched ceiling
does the same, except that the loop only keeps `a` and `y` of every step and each
weight gradient is ONE `(B·T)`-row product after the loop, `G = Aᵀ @ Y`: the limit a
backward pass that batches its weight gradients (as `cell.gradient=bptt` does) can
reach.

Cells without a hand-written gradient (the families of issue 24: indrnn, mingru,
minlstm, lru, slstm, mlstm) run once, with `cell.gradient=auto` (autodiff). The `form`
column says which form of the recurrence ran in the timed training step: `scan` (the
family's parallel form over time, `rnnbench.cells.scan`) or `step` (the step loop:
a family without a parallel form, or one whose scan declined); Keras's built-in layers
and the `bptt` rows are `step`. The `steps/s ×keras LSTM` column is the plain ratio of
training steps per second (not normalised by work), which the targets of issue 24 use.
The ceilings are computed only for cells whose matrices are all 2-D; others show `—`.

After the table, the script prints the targets of issue 17 side by side (XLA on, the
`bptt` rows): every gated custom cell ≥ 1.0× Keras's LSTM in wall and CPU time, the
custom LSTM ≥ 1.25× and ≥ 0.85× the batched ceiling, with the load average of the
machine before and after the timing (the figures mean little when it is far above the
number of cores). `met` judges the ratio of the best turns; next to it, each ratio turn
by turn (the two timings of one turn run back to back), as median [lowest–highest], so
that a verdict inside the machine's noise shows as one. Then the targets of issue 24, as
ratios of steps/s to Keras's LSTM: at T ≥ 1000 (run with `--time 1000`), `mingru` and
`minlstm` ≥ 10× and `lru` ≥ 5×; at T = 100, `mingru` ≥ 3×, and the step forms of `indrnn`
and `slstm` ≥ 0.8×. Each shows the form that ran; a target whose cell did not run in
the form the target names reads `NO (ran <form>)`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args(argv):
    from rnnbench.cells import cell_names

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="training steps per turn")
    p.add_argument("--rounds", type=int, default=4, help="turns per model (best is kept)")
    p.add_argument("--cells", nargs="+", default=cell_names(), choices=cell_names())
    p.add_argument(
        "--builtins",
        nargs="*",
        default=[],
        choices=["rnn", "gru", "gru_v1"],
        help="also time these Keras built-in layers",
    )
    p.add_argument("--xla", choices=["on", "off", "both"], default="both")
    p.add_argument(
        "--gradients",
        nargs="+",
        default=["bptt", "autodiff"],
        choices=["bptt", "autodiff"],
        help="gradient(s) of the custom cells (cell.gradient)",
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--time", type=int, default=100)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def matmul_weights(layer):
    """`(name, shape)` of the matrices of a recurrent layer, input kernel first.

    The kernels only: Keras's GRU keeps its biases as a 2-D `(2, 3n)` weight.
    """
    ws = [(w.name, tuple(w.shape)) for w in layer.weights if w.name.endswith("kernel")]
    return sorted(ws, key=lambda item: item[0] != "kernel")


def train_gflop(weights, batch, steps):
    """A `(heads, r, c)` weight (sLSTM's block-diagonal heads) counts `heads·r·c`."""
    return 3 * 2 * batch * steps * sum(math.prod(shape) for _, shape in weights) / 1e9


def has_ceiling(weights, form):
    """Whether the ceilings apply: a step loop over 2-D recurrent matrices."""
    return form == "step" and len(weights) > 1 and all(len(s) == 2 for _, s in weights)


def row_gradients(cell, gradients):
    """The `--gradients` a custom cell runs with: its family's hand-written gradient
    exists, or only autodiff (`cell.gradient=bptt` is refused for it)."""
    from rnnbench.cells.registry import family_of

    return list(gradients) if family_of(cell).kernel else ["autodiff"]


def _operands(weights, batch, steps):
    """The ceilings' random operands: input kernel, inputs of all steps, recurrent
    matrices and their first activations."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    (_, (d, k)), recurrent = weights[0], weights[1:]
    kernel = tf.constant(rng.normal(size=(d, k)).astype("float32") * 0.05)
    xs = tf.constant(rng.normal(size=(batch * steps, d)).astype("float32"))
    mats = [tf.constant(rng.normal(size=s).astype("float32") * 0.05) for _, s in recurrent]
    a0 = [tf.constant(rng.normal(size=(batch, s[0])).astype("float32")) for _, s in recurrent]
    return kernel, xs, mats, a0


def ceiling_function(weights, batch, steps):
    """An XLA-compiled function doing only the cell's matrix products (see above)."""
    import tensorflow as tf

    kernel, xs, mats, a0 = _operands(weights, batch, steps)

    @tf.function(jit_compile=True)
    def products():
        z = xs @ kernel
        grads = [tf.matmul(xs, z, transpose_a=True), tf.matmul(z, kernel, transpose_b=True)]

        def body(t, acts, accs):
            new_acts, new_accs = [], []
            for a, w, g in zip(acts, mats, accs):
                y = a @ w
                new_acts.append(tf.matmul(y, w, transpose_b=True) * 0.01)
                new_accs.append(g + tf.matmul(a, y, transpose_a=True))
            return t + 1, new_acts, new_accs

        accs = [tf.zeros(m.shape) for m in mats]
        _, acts, accs = tf.while_loop(
            lambda t, *_: t < steps, body, (0, a0, accs), maximum_iterations=steps
        )
        return [tf.reduce_sum(v) for v in grads + acts + accs]

    def run():
        [v.numpy() for v in products()]

    run()
    return run


def batched_ceiling_function(weights, batch, steps):
    """Like `ceiling_function`, but each weight gradient is one product after the loop."""
    import tensorflow as tf

    kernel, xs, mats, a0 = _operands(weights, batch, steps)

    @tf.function(jit_compile=True)
    def products():
        z = xs @ kernel
        grads = [tf.matmul(xs, z, transpose_a=True), tf.matmul(z, kernel, transpose_b=True)]

        def body(t, acts, kept_a, kept_y):
            new_acts, new_a, new_y = [], [], []
            for a, w, ta_a, ta_y in zip(acts, mats, kept_a, kept_y):
                y = a @ w
                new_acts.append(tf.matmul(y, w, transpose_b=True) * 0.01)
                new_a.append(ta_a.write(t, a))
                new_y.append(ta_y.write(t, y))
            return t + 1, new_acts, new_a, new_y

        kept_a = [tf.TensorArray(tf.float32, size=steps) for _ in mats]
        kept_y = [tf.TensorArray(tf.float32, size=steps) for _ in mats]
        _, acts, kept_a, kept_y = tf.while_loop(
            lambda t, *_: t < steps, body, (0, a0, kept_a, kept_y), maximum_iterations=steps
        )
        accs = [
            tf.matmul(
                tf.reshape(ta_a.stack(), (-1, w.shape[0])),
                tf.reshape(ta_y.stack(), (-1, w.shape[1])),
                transpose_a=True,
            )
            for ta_a, ta_y, w in zip(kept_a, kept_y, mats)
        ]
        return [tf.reduce_sum(v) for v in grads + acts + accs]

    def run():
        [v.numpy() for v in products()]

    run()
    return run


def build_model(layer, args, jit):
    import keras

    inputs = keras.Input((args.time, args.d))
    outputs = keras.layers.Dense(args.classes, activation="softmax")(layer(inputs))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=jit)
    return model


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def targets(table, args, load_before, load_after):
    """The issue's targets, side by side, from the XLA-on `bptt` rows of `table`."""
    rows = {(r["cell"], r["impl"], r["gradient"]): r for r in table if r["xla"] == "on"}
    lines = [
        f"targets (XLA on, B={args.batch} T={args.time} d={args.d} n={args.n}; "
        f"load average before {load_before}, after {load_after}, {os.cpu_count()} CPUs):",
        "| target | cell | wall | CPU time | met | wall, turn by turn | CPU time, turn by turn |",
        "|---|---|---|---|---|---|---|",
    ]

    def line(target, r, key, goal, with_cpu=True):
        wall, cpu = r[key], r[f"{key}_cpu"] if with_cpu else None
        cpu_text = "—" if cpu is None else f"{cpu:.3f}"  # 3 digits: 1.249 is not 1.25
        met = wall >= goal and (cpu is None or cpu >= goal)
        turns = [spread(r[f"{key}_turns"])]
        turns.append(spread(r[f"{key}_cpu_turns"]) if with_cpu else "—")
        lines.append(
            f"| {target} | {r['cell']} | {wall:.3f} | {cpu_text} | {'yes' if met else 'NO'} "
            f"| {turns[0]} | {turns[1]} |"
        )

    for (cell, impl, gradient), r in rows.items():
        if impl == "custom" and gradient == "bptt" and cell != "rnn":
            line("≥ 1.0× keras LSTM", r, "x_ref", 1.0)
    lstm = rows.get(("lstm", "custom", "bptt"))
    if lstm is not None:
        line("≥ 1.25× keras LSTM", lstm, "x_ref", 1.25)
        line("≥ 0.85× batched ceiling", lstm, "x_batched", 0.85, with_cpu=False)
    if len(lines) == 3:
        return ""
    lines.append(
        "\n`wall`, `CPU time`: ratio of the best turns (what `met` judges); the turn-by-turn "
        "columns: the ratio within each turn (both timed back to back), median [lowest–"
        "highest]. A target inside a turn-by-turn range is within this machine's noise."
    )
    return "\n".join(lines)


def fmt(value, digits):
    return "—" if value is None else f"{value:.{digits}f}"


#: The speed targets of issue 24, by the sequence length they are set at:
#: `(cell, form the target is about, least steps/s ratio to keras.layers.LSTM)`.
MODERN_TARGETS = {
    1000: (("mingru", "scan", 10.0), ("minlstm", "scan", 10.0), ("lru", "scan", 5.0)),
    100: (("mingru", "scan", 3.0), ("indrnn", "step", 0.8), ("slstm", "step", 0.8)),
}


def modern_targets(table, args, load_before, load_after):
    """The targets of issue 24 (steps/s ratios to Keras's LSTM), side by side: the set
    of T = 1000 when `--time` ≥ 1000, else that of T = 100; XLA-on rows first."""
    at = 1000 if args.time >= 1000 else 100
    rows = {}
    for r in table:
        if r["impl"] == "custom" and (r["cell"] not in rows or r["xla"] == "on"):
            rows[r["cell"]] = r
    lines = [
        f"targets of issue 24 (set at T={at}, B=64 d=64 n=256; this run B={args.batch} "
        f"T={args.time} d={args.d} n={args.n}; load average before {load_before}, after "
        f"{load_after}, {os.cpu_count()} CPUs):",
        "| target | cell | form | xla | steps/s ×keras LSTM | CPU time | met "
        "| wall, turn by turn | CPU time, turn by turn |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, form, goal in MODERN_TARGETS[at]:
        r = rows.get(cell)
        if r is None:
            continue
        met = "yes" if min(r["x_steps"], r["x_steps_cpu"]) >= goal else "NO"
        if r["form"] != form:
            met = f"NO (ran {r['form']})"
        lines.append(
            f"| ≥ {goal:g}× keras LSTM steps/s, {form} | {cell} | {r['form']} | {r['xla']} "
            f"| {r['x_steps']:.3f} | {r['x_steps_cpu']:.3f} | {met} "
            f"| {spread(r['x_steps_turns'])} | {spread(r['x_steps_cpu_turns'])} |")
    return "\n".join(lines) if len(lines) > 3 else ""


def spread(values):
    """`median [min–max]` of per-turn ratios."""
    import statistics

    return f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from rnnbench.cli.startup import quiet_tensorflow

    quiet_tensorflow()  # without TensorFlow's start-up lines
    import keras
    import numpy as np

    from rnnbench.cells import describe_layer, make_recurrent_layer

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.batch, args.time, args.d)).astype("float32")
    y = rng.integers(0, args.classes, size=(args.batch,))
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.xla]

    rows = [("lstm", "builtin", "autodiff")] + [(b, "builtin", "autodiff") for b in args.builtins]
    rows += [(c, "custom", g) for c in args.cells for g in row_gradients(c, args.gradients)]
    load_before = load_average()
    print(
        f"B={args.batch} T={args.time} d={args.d} n={args.n}, {args.rounds} turns of "
        f"{args.steps} steps, best turn; GFLOP/s from the cell's matrix products (×3 for "
        f"training); load average {load_before} on {os.cpu_count()} CPUs",
        flush=True,
    )
    table = []
    ceilings = {}  # (kind, weight shapes) -> [run, best seconds]
    for jit in modes:
        models = {}
        for cell, impl, gradient in rows:
            layer = make_recurrent_layer(
                {"name": cell, "impl": impl, "gradient": gradient},
                args.n,
                return_sequences=False,
                name=f"rec_{cell}",
            )
            model = build_model(layer, args, jit)
            model.train_on_batch(x, y)  # compiles (and records the form that ran)
            weights = matmul_weights(layer)
            shapes = tuple(s for _, s in weights)
            info = describe_layer(layer)  # its form: what the compiled step ran
            if has_ceiling(weights, info["form"]):
                for kind, make in (("loop", ceiling_function),
                                   ("batched", batched_ceiling_function)):
                    if (kind, shapes) not in ceilings:
                        ceilings[(kind, shapes)] = [make(weights, args.batch, args.time),
                                                    float("inf")]
            models[(cell, impl, gradient)] = (model, weights, info)
        keys = list(models)
        wall_turns = {key: [] for key in keys}  # seconds per step, turn by turn
        cpu_turns = {key: [] for key in keys}
        for entry in ceilings.values():
            entry[1] = []
        for turn in range(args.rounds):
            # a different model opens each turn, so that no model always runs right
            # after the ceiling functions
            for key in keys[turn % len(keys) :] + keys[: turn % len(keys)]:
                model = models[key][0]
                start, start_cpu = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    model.train_on_batch(x, y)
                wall_turns[key].append((time.perf_counter() - start) / args.steps)
                cpu_turns[key].append((time.process_time() - start_cpu) / args.steps)
            for entry in ceilings.values():
                start = time.perf_counter()
                entry[0]()
                entry[1].append(time.perf_counter() - start)
        best = {key: min(v) for key, v in wall_turns.items()}
        best_cpu = {key: min(v) for key, v in cpu_turns.items()}
        ref = ("lstm", "builtin", "autodiff")
        ref_gflop = train_gflop(models[ref][1], args.batch, args.time)
        for key, (model, weights, info) in models.items():
            gflop = train_gflop(weights, args.batch, args.time)
            shapes = tuple(s for _, s in weights)
            ceiling = batched = None
            batched_turns = []
            if ("loop", shapes) in ceilings and has_ceiling(weights, info["form"]):
                ceiling = gflop / min(ceilings[("loop", shapes)][1])
                batched_turns = ceilings[("batched", shapes)][1]
                batched = gflop / min(batched_turns)
            gflops = gflop / best[key]
            work = gflop / ref_gflop  # per-turn ratios: same turn, back to back
            per_turn = {
                "x_ref_turns": [work * r / t for r, t in zip(wall_turns[ref], wall_turns[key])],
                "x_ref_cpu_turns": [work * r / t for r, t in zip(cpu_turns[ref], cpu_turns[key])],
                "x_batched_turns": [c / t for c, t in zip(batched_turns, wall_turns[key])],
                "x_steps_turns": [r / t for r, t in zip(wall_turns[ref], wall_turns[key])],
                "x_steps_cpu_turns": [r / t for r, t in zip(cpu_turns[ref], cpu_turns[key])],
            }
            table.append(
                {
                    "cell": key[0],
                    "impl": key[1],
                    "gradient": key[2],
                    "form": info["form"],
                    "xla": "on" if jit else "off",
                    "steps_s": 1 / best[key],
                    "x_steps": best[ref] / best[key],
                    "x_steps_cpu": best_cpu[ref] / best_cpu[key],
                    "gflops": gflops,
                    "x_ref": gflops / (ref_gflop / best[ref]),
                    "x_ceiling": None if ceiling is None else gflops / ceiling,
                    "x_batched": None if batched is None else gflops / batched,
                    "ceiling": ceiling,
                    "batched": batched,
                    "cpu_ms": best_cpu[key] * 1e3,
                    "x_ref_cpu": (gflop / best_cpu[key]) / (ref_gflop / best_cpu[ref]),
                    "params": info["params"],
                    **per_turn,
                }
            )
    load_after = load_average()

    header = (
        "cell",
        "impl",
        "gradient",
        "form",
        "xla",
        "steps/s",
        "steps/s ×keras LSTM",
        "GFLOP/s",
        "×keras LSTM",
        "×keras LSTM (CPU time)",
        "×ceiling",
        "×batched ceiling",
        "ceiling GFLOP/s",
        "batched ceiling GFLOP/s",
        "CPU ms/step",
        "params",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in table:
        print(
            f"| {r['cell']} | {r['impl']} | {r['gradient']} | {r['form']} | {r['xla']} "
            f"| {r['steps_s']:.2f} | {r['x_steps']:.2f} "
            f"| {r['gflops']:.1f} | {r['x_ref']:.2f} | {r['x_ref_cpu']:.2f} "
            f"| {fmt(r['x_ceiling'], 2)} | {fmt(r['x_batched'], 2)} | {fmt(r['ceiling'], 1)} "
            f"| {fmt(r['batched'], 1)} | {r['cpu_ms']:.0f} | {r['params']} |"
        )
    for summary in (targets(table, args, load_before, load_after),
                    modern_targets(table, args, load_before, load_after)):
        if summary:
            print()
            print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
