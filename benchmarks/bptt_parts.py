"""Where the time of one training step of a custom cell goes: the hand-written backward
pass through time (`cell.gradient=bptt`) taken apart, next to autodiff of the same loop.

    python benchmarks/bptt_parts.py [--cells lstm gru] [--time 100] [--n 256] [--rounds 8]

For each cell, on the shapes of `benchmarks/cells.py` (B=64, T=100, d=64, n=256), one
XLA-compiled TensorFlow function per part, each fed the same random pre-activations
`zx` (the input projection is left out: both gradients share it):

| part | what it computes |
|---|---|
| `h·U` loop | T steps of the recurrent products alone, `h = tanh(h·U)` (the floor of any forward) |
| forward | the bptt forward loop, keeping what the reverse loop needs |
| + reverse loop | the forward, then the reverse loop (`dA` and `dA·Uᵀ` per step) |
| + weight gradients | the whole bptt backward: the batched `(T·B)`-row weight gradients too |
| batched `dU` alone | the weight-gradient products alone, on stacked random operands |
| `h·U` products, one loop | the recurrent kernel's three products as `benchmarks/cells.py`'s batched ceiling runs them: a step's forward and backward product in one loop iteration, then one `(T·B)`-row weight-gradient product |
| `h·U` products, two loops | the same products in the order a backward pass has to run them: the forward loop first, then the reverse loop |
| autodiff | the gradient tape of the same step in a plain `tf.while_loop`, for every input |
| layer, bptt | the whole layer's gradient (input projection included) with `cell.gradient=bptt` |
| layer, autodiff of Keras's loop | the same with `cell.gradient=autodiff`: what training runs |

Timing is interleaved (every part once per turn, `--rounds` turns, best turn kept),
with both the process CPU time and the wall time; on a shared machine the CPU time is the
steadier figure. Differences between consecutive rows are the cost of what each adds;
the two layer rows differ from the loop rows by the input projection and its gradient,
the same on both paths.

`--kernels` then profiles the one-loop products and the two whole-layer parts kernel by
kernel (TensorFlow's
profiler records every kernel XLA's CPU runtime runs): the kernels that run once per
loop step, summed as matrix products, waits of one thread for the other, and the rest
(element-wise fusions, stores of kept values, copies), and the costliest kernels. The
profiler's CPU times are those of the thread that runs a kernel; a product split over
both threads shows as one kernel plus the other thread's wait.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args(argv):
    from rnnbench.cells import cell_names

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=cell_names())
    p.add_argument("--rounds", type=int, default=8, help="turns (best is kept)")
    p.add_argument("--repeat", type=int, default=3, help="calls per turn")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--time", type=int, default=100)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kernels", action="store_true",
                   help="also profile the two whole-layer parts kernel by kernel")
    return p.parse_args(argv)


def parts(cell_name, args):
    """`{part: zero-argument function}` for one cell, each compiled and run once. Every
    function returns the sum of what it computed: "+ weight gradients" and "autodiff"
    compute the same gradients, so their sums agree to float round-off."""
    import numpy as np
    import tensorflow as tf

    from rnnbench.cells import bptt, make_recurrent_layer
    from rnnbench.cells.bptt_kernels import kernel_for

    layer = make_recurrent_layer({"name": cell_name, "impl": "custom", "gradient": "bptt"},
                                 args.n, return_sequences=False, name=f"rec_{cell_name}")
    layer.build((args.batch, args.time, args.d))
    cell = layer.cell
    rng = np.random.default_rng(args.seed)
    kernel = kernel_for(cell)
    w = {k: tf.constant(v) for k, v in cell.read_step_weights().items()}
    width = int(cell.kernel.shape[-1])
    zx = tf.constant(rng.normal(size=(args.time, args.batch, width)).astype("float32") * 0.5)
    states0 = [tf.zeros((args.batch, s), tf.float32) for s in kernel.state_widths]
    plan = bptt._Plan(kernel, masked=False, return_sequences=False, zero_output=False,
                      batch=args.batch)
    d_out = tf.constant(rng.normal(size=(args.batch, args.n)).astype("float32"))

    def total(*tensors):
        return tf.add_n([tf.reduce_sum(t) for t in tf.nest.flatten(tensors)])

    mats = [v for v in w.values() if len(v.shape) == 2 and v.shape[0] == args.n]

    @tf.function(jit_compile=True)
    def hu_loop():
        def body(t, h):
            return t + 1, tf.tanh(tf.add_n([(h @ m)[:, : args.n] for m in mats]))

        _, h = tf.while_loop(lambda t, h: t < args.time, body, (0, states0[0]),
                             maximum_iterations=args.time)
        return tf.reduce_sum(h)

    @tf.function(jit_compile=True)
    def forward():
        outputs, final, residuals = bptt._forward(plan, zx, states0, w, None, None)
        return total(outputs, final, residuals)

    def back(with_weights):
        @tf.function(jit_compile=True)
        def f():
            outputs, final, residuals = bptt._forward(plan, zx, states0, w, None, None)
            d_final = [tf.zeros_like(s) for s in final]
            da, d_init, d_w = bptt._backward(plan, residuals, w, None, None, d_out, d_final)
            return total(da, d_init, d_w) if with_weights else total(da, d_init)
        return f

    stacked = {name: (tf.constant(rng.normal(size=(args.time * args.batch, v.shape[0]))
                                  .astype("float32")),
                      tf.constant(rng.normal(size=(args.time * args.batch, v.shape[1]))
                                  .astype("float32")))
               for name, v in w.items() if len(v.shape) == 2}

    u = w["recurrent_kernel"]
    k_n = int(u.shape[1])
    a0 = tf.constant(rng.normal(size=(args.batch, args.n)).astype("float32"))

    def kept(ta):
        return tf.reshape(ta.stack(), (args.time * args.batch, -1))

    @tf.function(jit_compile=True)
    def products_one_loop():
        """The recurrent products as `benchmarks/cells.py`'s batched ceiling does them:
        forward and backward product of a step in ONE loop, then `G = Aᵀ·Y`."""
        def body(t, a, ka, ky):
            y = a @ u
            return t + 1, tf.matmul(y, u, transpose_b=True) * 0.01, ka.write(t, a), ky.write(t, y)
        tas = (tf.TensorArray(tf.float32, size=args.time), tf.TensorArray(tf.float32, size=args.time))
        _, a, ka, ky = tf.while_loop(lambda t, *_: t < args.time, body, (0, a0, *tas),
                                     maximum_iterations=args.time)
        return total(a, tf.matmul(kept(ka), kept(ky), transpose_a=True))

    @tf.function(jit_compile=True)
    def products_two_loops():
        """The same products in the order a backward pass must run them: all forward
        products first (keeping `a`), then all backward products (keeping `y`)."""
        def fbody(t, a, ka):
            return t + 1, (a @ u)[:, : args.n] * 0.01, ka.write(t, a)
        _, a, ka = tf.while_loop(lambda t, *_: t < args.time, fbody,
                                 (0, a0, tf.TensorArray(tf.float32, size=args.time)),
                                 maximum_iterations=args.time)

        def rbody(t, y, ky):
            back = tf.matmul(y, u, transpose_b=True) * 0.01
            return t - 1, tf.tile(back, (1, k_n // args.n)), ky.write(t, y)
        _, y, ky = tf.while_loop(lambda t, *_: t >= 0, rbody,
                                 (args.time - 1, tf.tile(a, (1, k_n // args.n)),
                                  tf.TensorArray(tf.float32, size=args.time)),
                                 maximum_iterations=args.time)
        return total(y, tf.matmul(kept(ka), kept(ky), transpose_a=True))

    @tf.function(jit_compile=True)
    def batched_dw():
        return total([tf.matmul(a, b, transpose_a=True) for a, b in stacked.values()])

    @tf.function(jit_compile=True)
    def autodiff():
        with tf.GradientTape() as tape:
            tape.watch([zx, *states0, *w.values()])
            ns = len(kernel.state_widths)

            def body(t, states):
                new, _, _ = kernel.step(zx[t], list(states), w, None)
                return t + 1, new[:ns]
            _, final = tf.while_loop(lambda t, s: t < args.time, body, (0, states0),
                                     maximum_iterations=args.time)
            loss = tf.reduce_sum(final[0] * d_out)
        return total(tape.gradient(loss, [zx, *states0, *w.values()]))

    x = tf.constant(rng.normal(size=(args.batch, args.time, args.d)).astype("float32"))

    def whole_layer(gradient):
        """The whole layer (projection, loop, gradient of every weight), as training
        differentiates it: `bptt`, or autodiff of Keras's own loop over the cell."""
        other = make_recurrent_layer({"name": cell_name, "impl": "custom", "gradient": gradient},
                                     args.n, return_sequences=False, name=f"{cell_name}_{gradient}")
        other.build((args.batch, args.time, args.d))
        other.set_weights(layer.get_weights())

        @tf.function(jit_compile=True)
        def f():
            with tf.GradientTape() as tape:
                h = other(x, training=True)
                loss = tf.reduce_sum(h * d_out)
            return total(tape.gradient(loss, other.trainable_variables))
        return f

    fns = {
        "h·U loop": hu_loop,
        "forward": forward,
        "+ reverse loop": back(False),
        "+ weight gradients": back(True),
        "batched dU alone": batched_dw,
        "h·U products, one loop": products_one_loop,
        "h·U products, two loops": products_two_loops,
        "autodiff": autodiff,
        "layer, bptt": whole_layer("bptt"),
        "layer, autodiff of Keras's loop": whole_layer("autodiff"),
    }
    runs = {}
    for name, fn in fns.items():
        def run(fn=fn):
            return float(fn().numpy())
        run()  # compiles
        runs[name] = run
    return runs


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from rnnbench.cli.startup import quiet_tensorflow

    quiet_tensorflow()  # without TensorFlow's start-up lines
    import keras

    keras.utils.set_random_seed(args.seed)
    print(f"B={args.batch} T={args.time} n={args.n}, XLA on, {args.rounds} turns of "
          f"{args.repeat} calls, best turn; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs",
          flush=True)
    fns = {(c, part): run for c in args.cells for part, run in parts(c, args).items()}
    wall = {k: float("inf") for k in fns}
    cpu = dict(wall)
    keys = list(fns)
    for turn in range(args.rounds):
        for key in keys[turn % len(keys):] + keys[: turn % len(keys)]:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.repeat):
                fns[key]()
            wall[key] = min(wall[key], (time.perf_counter() - t0) / args.repeat)
            cpu[key] = min(cpu[key], (time.process_time() - c0) / args.repeat)
    print("| cell | part | CPU ms | wall ms | CPU ×autodiff |")
    print("|---|---|---|---|---|")
    for cell in args.cells:
        ref = cpu[(cell, "autodiff")]
        for (c, part) in keys:
            if c == cell:
                print(f"| {cell} | {part} | {cpu[(c, part)] * 1e3:.1f} | "
                      f"{wall[(c, part)] * 1e3:.1f} | {cpu[(c, part)] / ref:.2f} |")
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if args.kernels:
        for cell in args.cells:
            for part in ("h·U products, one loop", "layer, bptt",
                         "layer, autodiff of Keras's loop"):
                print(kernel_table(f"{cell}: {part}", kernel_profile(fns[(cell, part)],
                                                                     args.repeat), args.time))
    return 0


#: an XLA kernel's name (`MatMul.24`, `add_divide_fusion.1`, `copy.20`); a loop's own
#: event (`while.9`) spans the kernels it runs and is left out
KERNEL_NAME = re.compile(r"^(?!while\b)[A-Za-z_][\w\-]*(\.\d+)?$")


def kernel_profile(run, calls):
    """`{kernel: (CPU seconds per call, executions per call)}` of an XLA-compiled
    function, from TensorFlow's profiler: XLA's CPU runtime records each compiled kernel
    (a fusion, a matrix product, a copy) it runs, on the thread that runs it."""
    import collections
    import glob
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    seconds, count = collections.Counter(), collections.Counter()
    with tempfile.TemporaryDirectory() as logdir:
        run()
        tf.profiler.experimental.start(logdir)
        for _ in range(calls):
            run()
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        for path in glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True):
            with open(path, "rb") as f:
                space.ParseFromString(f.read())
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:  # one per thread; small loops may run on the caller's
            # kernels are the events inside XLA's executor spans (the caller's thread
            # also records Python and TensorFlow events outside them)
            spans = [(e.offset_ps, e.offset_ps + e.duration_ps) for e in line.events
                     if names.get(e.metadata_id) == "ThunkExecutor::Execute"]
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                if not (KERNEL_NAME.match(name) or "Await" in name):
                    continue
                if line.name == "python" and not any(
                        a <= event.offset_ps and event.offset_ps + event.duration_ps <= b
                        for a, b in spans):
                    continue
                seconds[name] += event.duration_ps * 1e-12
                count[name] += 1
    return {k: (seconds[k] / calls, count[k] / calls) for k in seconds}


def kernel_table(title, profile, steps, top=12):
    """The kernels run once per loop step, summed as matrix products, waits for the
    other threads, and the rest (element-wise fusions, stores, copies), then the
    costliest kernels."""
    per_step = {k: v for k, v in profile.items() if v[1] >= steps or "Await" in k}
    groups = {"matrix products": 0.0, "waits for other threads": 0.0, "the rest": 0.0}
    kinds = {"matrix products": 0, "waits for other threads": 0, "the rest": 0}
    for name, (sec, _) in per_step.items():
        kind = ("matrix products" if "matmul" in name.lower() or name.startswith("dot")
                else "waits for other threads" if "Await" in name else "the rest")
        groups[kind] += sec
        kinds[kind] += 1
    lines = [f"\n{title}: kernels run once or more per loop step (CPU ms per call, kernels)",
             "| per-step kernels | CPU ms | kernels |", "|---|---|---|"]
    lines += [f"| {k} | {groups[k] * 1e3:.1f} | {kinds[k]} |" for k in groups]
    lines += ["| kernel | CPU ms per call | runs per call | µs per run |", "|---|---|---|---|"]
    for name, (sec, runs) in sorted(profile.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"| {name} | {sec * 1e3:.2f} | {runs:.0f} | {sec / runs * 1e6:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
