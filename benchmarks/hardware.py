"""What the hardware settings buy, measured in one run on the machine it runs on.

    python benchmarks/hardware.py [--steps N] [--rounds R] [--cells lstm janet ...]
                                  [--batch B] [--time T] [--d D] [--n N] [--json FILE]
    KERAS_BACKEND=jax python benchmarks/hardware.py ...

Prints, as training-step time ratios (below 1: the first is faster):

- XLA on / off, for Keras's LSTM and for rnnbench's own LSTM (``impl=custom``);
- ``mixed_bfloat16`` / ``float32``, for the same two layers (XLA on);
- each cell as a run builds it (``impl=auto``: Keras's layer for rnn, lstm, gru,
  gru_v1; rnnbench's own otherwise) / ``keras.layers.LSTM``, both with XLA on;
- on a GPU only: cuDNN (Keras's LSTM and GRU, which Keras runs without XLA on
  TensorFlow) / rnnbench's own LSTM and GRU (XLA on).

Every model is ``Input(T, d) -> recurrent layer (n units) -> Dense(10, softmax)``,
trained with Adam on one fixed random batch. The models are built and compiled first,
then timed in turns (``--rounds`` turns of ``--steps`` steps each) so that load from
other processes falls on all of them alike; a model's step time is its best turn.
"XLA" is what the compiled model really does (``model.jit_compile``): Keras turns it
off for a cuDNN layer on TensorFlow. On JAX, XLA off means an eager train step (timed
with one step a turn: each takes seconds).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args(argv):
    from rnnbench.cells import cell_names

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="training steps per turn")
    p.add_argument("--rounds", type=int, default=3, help="turns per model (best is kept)")
    p.add_argument("--cells", nargs="+", default=cell_names(), choices=cell_names())
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--time", type=int, default=100)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the measurements to this file")
    return p.parse_args(argv)


def device_report() -> dict:
    """Backend, its version and the device the models run on."""
    import keras

    from rnnbench.hardware import cpu_name

    backend = keras.backend.backend()
    info = {"backend": backend, "keras": keras.__version__, "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "gpu": ""}
    if backend == "tensorflow":
        import tensorflow as tf

        info["version"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            info["gpu"] = tf.config.experimental.get_device_details(gpus[0]).get(
                "device_name", gpus[0].name)
    elif backend == "jax":
        import jax

        info["version"] = jax.__version__
        dev = jax.devices()[0]
        if dev.platform == "gpu":
            info["gpu"] = dev.device_kind
    else:
        import torch

        info["version"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


class Variant:
    """One timed model.

    Args:
        key: a short unique name (``"lstm/builtin/xla=on/float32"``).
        cell: the cell's registry name.
        impl: ``auto``, ``builtin`` or ``custom``.
        jit: the ``jit_compile`` passed to ``compile``.
        precision: the Keras dtype policy the model is built under.
    """

    def __init__(self, key, cell, impl, jit, precision="float32"):
        self.key, self.cell, self.impl, self.jit, self.precision = key, cell, impl, jit, precision
        self.model = None
        self.best = float("inf")
        self.info: dict = {}

    def build(self, args, x, y):
        import keras

        from rnnbench.cells import describe_layer, make_recurrent_layer

        keras.mixed_precision.set_global_policy(self.precision)
        try:
            layer = make_recurrent_layer({"name": self.cell, "impl": self.impl}, args.n,
                                         return_sequences=False, name="rnn_0")
            inputs = keras.Input((args.time, args.d))
            outputs = keras.layers.Dense(args.classes, activation="softmax",
                                         dtype="float32")(layer(inputs))
            self.model = keras.Model(inputs, outputs)
            self.model.compile("adam", "sparse_categorical_crossentropy", jit_compile=self.jit)
            self.model.train_on_batch(x, y)  # compiles
        finally:
            keras.mixed_precision.set_global_policy("float32")
        desc = describe_layer(layer)
        self.info = {"impl": desc["impl"], "layer": type(layer).__name__,
                     "xla": "on" if self.model.jit_compile else "off",
                     "cudnn_eligible": desc["cudnn_eligible"], "params": desc["params"]}

    def time_turn(self, steps, x, y):
        start = time.perf_counter()
        for _ in range(steps):
            self.model.train_on_batch(x, y)
        self.best = min(self.best, (time.perf_counter() - start) / steps)


def plan(args, on_gpu: bool) -> tuple[list[Variant], list[tuple[str, str, str]]]:
    """The variants to time and the ratios to print, as (label, numerator, denominator)."""
    from rnnbench.cells import CELLS

    v: dict[str, Variant] = {}

    def add(cell, impl, jit, precision="float32"):
        key = f"{cell}/{impl}/xla={'on' if jit else 'off'}/{precision}"
        v.setdefault(key, Variant(key, cell, impl, jit, precision))
        return key

    ratios = []
    ref = add("lstm", "builtin", True)
    for impl, label in (("builtin", "keras.layers.LSTM"), ("custom", "rnnbench lstm")):
        on, off = add("lstm", impl, True), add("lstm", impl, False)
        ratios.append(("xla", f"XLA on / off, {label}", on, off))
    for impl, label in (("builtin", "keras.layers.LSTM"), ("custom", "rnnbench lstm")):
        bf16, f32 = add("lstm", impl, True, "mixed_bfloat16"), add("lstm", impl, True)
        ratios.append(("precision", f"mixed_bfloat16 / float32, {label}", bf16, f32))
    for cell in args.cells:
        impl = "builtin" if CELLS[cell].has_builtin else "custom"  # what impl=auto builds
        ratios.append(("cell", f"{cell} ({impl}) / keras.layers.LSTM",
                       add(cell, impl, True), ref))
    if on_gpu:
        for cell in ("lstm", "gru"):
            cudnn = add(cell, "builtin", False)  # Keras runs cuDNN layers without XLA
            ratios.append(("cudnn", f"cuDNN {cell.upper()} / rnnbench {cell} (XLA)", cudnn,
                           add(cell, "custom", True)))
    return list(v.values()), ratios


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from rnnbench.cli.startup import quiet_tensorflow

    quiet_tensorflow()  # without TensorFlow's start-up lines
    import keras
    import numpy as np

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes per model
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.batch, args.time, args.d)).astype("float32")
    y = rng.integers(0, args.classes, size=(args.batch,))
    dev = device_report()
    where = f"GPU {dev['gpu']}" if dev["gpu"] else f"CPU {dev['cpu']} ({dev['cpu_count']} cores)"
    print(f"backend {dev['backend']} {dev['version']}, Keras {dev['keras']}, {where}; "
          f"B={args.batch} T={args.time} d={args.d} n={args.n}; best of {args.rounds} turns "
          f"of {args.steps} training steps", flush=True)

    variants, ratios = plan(args, bool(dev["gpu"]))
    t0 = time.perf_counter()
    for variant in variants:
        variant.build(args, x, y)
    print(f"built and compiled {len(variants)} models in {time.perf_counter() - t0:.0f} s",
          flush=True)
    # an eager JAX step takes seconds: time those with fewer steps
    eager_steps = 1
    for _ in range(args.rounds):
        for variant in variants:
            eager = dev["backend"] == "jax" and variant.info["xla"] == "off"
            variant.time_turn(eager_steps if eager else args.steps, x, y)
    by_key = {variant.key: variant for variant in variants}

    print()
    print("| what | ratio of step times | faster | numerator | denominator |")
    print("|---|---|---|---|---|")
    rows = []
    for kind, label, num, den in ratios:
        a, b = by_key[num], by_key[den]
        ratio = a.best / b.best
        rows.append({"kind": kind, "what": label, "ratio": ratio, "numerator": num,
                     "denominator": den})
        desc = lambda v: f"{v.best * 1e3:.1f} ms, {v.info['layer']}, XLA {v.info['xla']}"
        print(f"| {label} | {ratio:.2f} | {1 / ratio:.2f}× | {desc(a)} | {desc(b)} |")
    if not dev["gpu"]:
        print("\n(no GPU here: the cuDNN rows are measured only on a GPU)")
    if args.json:
        out = {"device": dev, "args": vars(args), "ratios": rows,
               "step_ms": {v.key: {"ms": v.best * 1e3, **v.info} for v in variants}}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
