"""GPU check: did Keras's LSTM/GRU really run cuDNN, and how fast are the cells there?

    KERAS_BACKEND=jax python benchmarks/gpu_check.py [--out gpu_check.json]
        [--batch 64] [--time 100] [--d 64] [--n 256] [--steps 5] [--rounds 3]
        [--cells lstm gru peephole] [--allow-cpu]

For a machine with an NVIDIA GPU and the JAX backend (what such a machine offers
offline: keras, jax with CUDA, numpy and rnnbench; TensorFlow is not needed and is not
imported). It does three things and finishes in well under 5 minutes:

1. **cuDNN, checked from what ran**, for `keras.layers.LSTM` and `GRU` (default
   arguments, no mask): one training step (forward and gradient) is compiled with
   `jax.jit` and its optimised HLO searched for the cuDNN RNN custom call; the step
   then runs under `jax.profiler.trace` and the device kernels of the trace are searched
   for cuDNN's RNN kernels. A layer counts as cuDNN only when both show it (the trace
   alone when the profiler wrote no readable trace is reported as such). The project's
   own table (`rnnbench.hardware`) is not consulted.
2. **Timing**: training steps per second of the built-in LSTM and GRU and of
   rnnbench's own `lstm`, `gru` and `peephole` (`cell.gradient=bptt` and `autodiff`),
   on one fixed random batch, in interleaved rounds (best round kept).
3. **A small JSON** (`--out`) with the date, the device, the versions, the evidence and
   the timings; `benchmarks/README.md`'s hardware section quotes it.

Without a GPU it exits with status 2 and says so. `--allow-cpu` runs the same code on
the CPU (a dry run of the logic with the given shapes; nothing in it says anything about
a GPU), which is how it is tested.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

#: Names of cuDNN's RNN work in a profile: XLA's custom call and cuDNN's own kernels.
CUDNN_PATTERN = re.compile(r"cudnn|RNN_blockPersist|elemWiseRNN|LSTM_elementWise|GRU_elementWise",
                           re.IGNORECASE)
#: The custom call JAX lowers `jax.experimental.rnn.lstm` to on a GPU.
CUDNN_HLO_PATTERN = re.compile(r'custom_call_target="[^"]*cudnn[^"]*rnn[^"]*"', re.IGNORECASE)
BUDGET_S = 270  # stop timing more rows past this, so that the whole check stays < 5 min


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json", help="where to write the JSON")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--time", type=int, default=100)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="training steps per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds (best is kept)")
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "peephole"],
                   choices=["lstm", "gru", "peephole"],
                   help="cells timed in rnnbench's implementation (bptt and autodiff)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run on the CPU when there is no GPU (a dry run of the logic)")
    return p.parse_args(argv)


class CheckError(Exception):
    """A reason the check cannot run, printed without a traceback (exit status 2)."""


def start_backend():
    backend = os.environ.setdefault("KERAS_BACKEND", "jax")
    if backend != "jax":
        raise CheckError(f"KERAS_BACKEND={backend}: this check runs on the JAX backend; "
                         "run it with KERAS_BACKEND=jax (or unset)")
    try:
        import jax
    except ImportError as exc:
        raise CheckError(f"JAX is not installed ({exc}); on a GPU machine: "
                         "pip install 'jax[cuda12]'") from exc
    return jax


def find_gpu(jax, allow_cpu):
    """`(device, platform)`, or CheckError when there is no GPU (and no --allow-cpu)."""
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if gpus:
        return gpus[0], "gpu"
    if not allow_cpu:
        found = ", ".join(sorted({d.platform for d in jax.devices()})) or "none"
        raise CheckError(
            f"no GPU found: JAX sees only these platforms: {found}. This check needs an "
            "NVIDIA GPU with a CUDA build of jax (pip install 'jax[cuda12]'); "
            "--allow-cpu runs a dry run on the CPU instead"
        )
    return jax.devices("cpu")[0], "cpu"


def make_layer(cell, impl, gradient, n):
    import keras

    from rnnbench.cells import make_recurrent_layer

    if impl == "keras":
        cls = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
        return cls(n, return_sequences=False)
    return make_recurrent_layer({"name": cell, "impl": "custom", "gradient": gradient}, n,
                                return_sequences=False)


def grad_step(layer, x):
    """A jitted `(loss, grads)` of the layer's output, with its arguments."""
    import jax
    import jax.numpy as jnp

    layer.build(x.shape)
    trainable = [v.value for v in layer.trainable_variables]
    other = [v.value for v in layer.non_trainable_variables]

    def loss(trainable, x):
        out, _ = layer.stateless_call(trainable, other, x)
        return jnp.mean(out * out)

    return jax.jit(jax.value_and_grad(loss)), (trainable, x)


def trace_names(run, logdir):
    """Names of every event of a profile of `run()` (None when no trace was readable)."""
    import jax

    try:
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
            run()
    except Exception as exc:  # the profiler is optional equipment: say so, go on
        return None, f"profiler failed: {type(exc).__name__}: {exc}"
    names = set()
    files = glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)
    files += glob.glob(os.path.join(logdir, "**", "perfetto_trace.json.gz"), recursive=True)
    for path in files:
        try:
            with gzip.open(path, "rt") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        events = data.get("traceEvents", []) if isinstance(data, dict) else data
        names.update(e.get("name", "") for e in events if isinstance(e, dict))
    if not files:
        return None, "the profiler wrote no JSON trace"
    return names, None


def cudnn_evidence(cell, x, n, logdir):
    """Whether Keras's `cell` layer ran cuDNN: compiled HLO and the kernel trace."""
    layer = make_layer(cell, "keras", None, n)
    step, args = grad_step(layer, x)
    hlo = step.lower(*args).compile().as_text()
    hlo_calls = sorted(set(CUDNN_HLO_PATTERN.findall(hlo)))
    step(*args)[0].block_until_ready()

    def run():
        for _ in range(3):
            step(*args)[0].block_until_ready()

    names, problem = trace_names(run, os.path.join(logdir, cell))
    kernels = sorted(name for name in (names or ()) if CUDNN_PATTERN.search(name))
    return {
        "hlo_cudnn_custom_calls": hlo_calls,
        "trace_cudnn_events": kernels[:20],
        "trace_events": None if names is None else len(names),
        "trace_problem": problem,
        "cudnn": bool(hlo_calls) and (bool(kernels) if names is not None else True),
        "cudnn_basis": "hlo+trace" if names is not None else "hlo only (no trace)",
    }


def time_models(args, x, y, deadline):
    import keras

    rows = [("lstm", "keras", None), ("gru", "keras", None)]
    rows += [(c, "rnnbench", g) for c in args.cells for g in ("bptt", "autodiff")]
    models = {}
    for cell, impl, gradient in rows:
        if time.monotonic() > deadline:
            break
        inputs = keras.Input((args.time, args.d))
        out = keras.layers.Dense(10, activation="softmax")(
            make_layer(cell, impl, gradient, args.n)(inputs))
        model = keras.Model(inputs, out)
        model.compile("adam", "sparse_categorical_crossentropy")
        start = time.perf_counter()
        model.train_on_batch(x, y)
        models[(cell, impl, gradient)] = {"model": model,
                                          "compile_s": time.perf_counter() - start,
                                          "best_s": float("inf")}
    for turn in range(args.rounds):
        keys = list(models)
        for key in keys[turn % len(keys):] + keys[: turn % len(keys)]:
            if time.monotonic() > deadline:
                break
            entry = models[key]
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = entry["model"].train_on_batch(x, y)
            float(loss if not isinstance(loss, list) else loss[0])  # waits for the device
            entry["best_s"] = min(entry["best_s"], (time.perf_counter() - start) / args.steps)
    ref = models.get(("lstm", "keras", None), {}).get("best_s")
    table = []
    for (cell, impl, gradient), entry in models.items():
        best = entry["best_s"]
        table.append({
            "cell": cell, "impl": impl, "gradient": gradient or "autodiff",
            "steps_per_s": None if best == float("inf") else round(1 / best, 3),
            "x_keras_lstm": None if best == float("inf") or not ref else round(ref / best, 3),
            "compile_s": round(entry["compile_s"], 2),
        })
    return table


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    try:
        jax = start_backend()
        device, platform = find_gpu(jax, args.allow_cpu)
    except CheckError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.time, args.d)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch,))
    print(f"gpu_check: {platform} {device.device_kind}; B={args.batch} T={args.time} "
          f"d={args.d} n={args.n}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_trace_") as logdir:
        cudnn = {cell: cudnn_evidence(cell, x, args.n, logdir) for cell in ("lstm", "gru")}
    for cell, ev in cudnn.items():
        print(f"  {cell}: cuDNN {'yes' if ev['cudnn'] else 'no'} ({ev['cudnn_basis']}; "
              f"HLO {ev['hlo_cudnn_custom_calls'] or 'none'}; "
              f"trace {len(ev['trace_cudnn_events'])} cuDNN events)", flush=True)
    timings = time_models(args, x, y, started + BUDGET_S)
    for row in timings:
        print(f"  {row['cell']:9s} {row['impl']:9s} {row['gradient']:9s} "
              f"{row['steps_per_s']} steps/s  ×keras LSTM {row['x_keras_lstm']}", flush=True)
    result = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform,
        "dry_run": platform != "gpu",
        "device": device.device_kind,
        "versions": {"jax": jax.__version__, "keras": keras.__version__,
                     "python": sys.version.split()[0]},
        "shape": {"batch": args.batch, "time": args.time, "d": args.d, "n": args.n},
        "cudnn": cudnn,
        "timings": timings,
        "tensorflow_imported": sys.modules.get("tensorflow") is not None,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"gpu_check: wrote {args.out} ({result['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
