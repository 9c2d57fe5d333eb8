"""Training speed of every cell, against Keras's LSTM and against the matmul ceiling.

    python benchmarks/cells.py [--steps N] [--rounds R] [--cells lstm peephole ...]
                               [--xla on|off|both] [--builtins rnn gru gru_v1]

Each model is `Input(T, d) -> recurrent layer (n units) -> Dense(classes, softmax)`,
trained with Adam on one fixed random batch (B=64, T=100, d=64, n=256, 10 classes by
default). Every cell runs in rnnbench's own implementation (`impl=custom`); the
reference row is `keras.layers.LSTM`, compiled the same way (XLA on: every model is
compiled with `jit_compile=True`; off: `jit_compile=False`).

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
each other weight, `y = a @ W`, `a' = y @ Wᵀ` and `G += aᵀ @ y`.
"""

from __future__ import annotations

import argparse
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
    return 3 * 2 * batch * steps * sum(r * c for _, (r, c) in weights) / 1e9


def ceiling_function(weights, batch, steps):
    """An XLA-compiled function doing only the cell's matrix products (see above)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    (_, (d, k)), recurrent = weights[0], weights[1:]
    kernel = tf.constant(rng.normal(size=(d, k)).astype("float32") * 0.05)
    xs = tf.constant(rng.normal(size=(batch * steps, d)).astype("float32"))
    mats = [tf.constant(rng.normal(size=s).astype("float32") * 0.05) for _, s in recurrent]
    a0 = [tf.constant(rng.normal(size=(batch, s[0])).astype("float32")) for _, s in recurrent]

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


def build_model(layer, args, jit):
    import keras

    inputs = keras.Input((args.time, args.d))
    outputs = keras.layers.Dense(args.classes, activation="softmax")(layer(inputs))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=jit)
    return model


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import keras
    import numpy as np

    from rnnbench.cells import describe_layer, make_recurrent_layer

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.batch, args.time, args.d)).astype("float32")
    y = rng.integers(0, args.classes, size=(args.batch,))
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.xla]

    rows = [("lstm", "builtin")] + [(b, "builtin") for b in args.builtins]
    rows += [(c, "custom") for c in args.cells]
    print(
        f"B={args.batch} T={args.time} d={args.d} n={args.n}, {args.rounds} turns of "
        f"{args.steps} steps, best turn; GFLOP/s from the cell's matrix products (×3 for "
        "training)",
        flush=True,
    )
    table = []
    ceilings = {}  # weight shapes -> [run, best seconds]
    for jit in modes:
        models = {}
        for cell, impl in rows:
            layer = make_recurrent_layer(
                {"name": cell, "impl": impl}, args.n, return_sequences=False, name=f"rec_{cell}"
            )
            model = build_model(layer, args, jit)
            model.train_on_batch(x, y)  # compiles
            weights = matmul_weights(layer)
            shapes = tuple(s for _, s in weights)
            if shapes not in ceilings:
                ceilings[shapes] = [ceiling_function(weights, args.batch, args.time), float("inf")]
            models[(cell, impl)] = (model, weights, describe_layer(layer))
        best = {key: float("inf") for key in models}
        best_cpu = dict(best)
        keys = list(models)
        for turn in range(args.rounds):
            # a different model opens each turn, so that no model always runs right
            # after the ceiling functions
            for key in keys[turn % len(keys) :] + keys[: turn % len(keys)]:
                model = models[key][0]
                start, start_cpu = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    model.train_on_batch(x, y)
                best[key] = min(best[key], (time.perf_counter() - start) / args.steps)
                best_cpu[key] = min(best_cpu[key], (time.process_time() - start_cpu) / args.steps)
            for entry in ceilings.values():
                start = time.perf_counter()
                entry[0]()
                entry[1] = min(entry[1], time.perf_counter() - start)
        ref = ("lstm", "builtin")
        ref_gflop = train_gflop(models[ref][1], args.batch, args.time)
        for key, (model, weights, info) in models.items():
            gflop = train_gflop(weights, args.batch, args.time)
            ceiling = gflop / ceilings[tuple(s for _, s in weights)][1]
            gflops = gflop / best[key]
            cpu_ratio = (gflop / best_cpu[key]) / (ref_gflop / best_cpu[ref])
            table.append(
                (
                    key[0],
                    key[1],
                    "on" if jit else "off",
                    1 / best[key],
                    gflops,
                    gflops / (ref_gflop / best[ref]),
                    gflops / ceiling,
                    ceiling,
                    best_cpu[key] * 1e3,
                    cpu_ratio,
                    info["params"],
                )
            )

    header = (
        "cell",
        "impl",
        "xla",
        "steps/s",
        "GFLOP/s",
        "×keras LSTM",
        "×ceiling",
        "ceiling GFLOP/s",
        "CPU ms/step",
        "×keras LSTM (CPU time)",
        "params",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cell, impl, xla, sps, gf, ref, ceil, ceiling, cpu_ms, cpu_ref, params in table:
        print(
            f"| {cell} | {impl} | {xla} | {sps:.2f} | {gf:.1f} | {ref:.2f} | {ceil:.2f} "
            f"| {ceiling:.1f} | {cpu_ms:.0f} | {cpu_ref:.2f} | {params} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
