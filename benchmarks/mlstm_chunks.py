"""The mLSTM's parallel form over chunks: the training step at each chunk length L
against the whole-sequence form (`cell.chunk=0`, quadratic in T) and `keras.layers.LSTM`,
on the same shapes, turn by turn in one process.

    python benchmarks/mlstm_chunks.py [--time 400 1000] [--chunks 0 32 64 128 256]
                                      [--n 126] [--steps 3] [--rounds 4]

Each model is `Input(T, d) -> recurrent layer (n units, last output) -> Dense(1)`,
trained with Adam on one fixed random batch (B=20, d=64: the study's adding problem
behind its input projection; n=126 is the mLSTM's width there at the LSTM's size), XLA
on. The models are built and compiled first, then timed in turns (`--rounds` turns of
`--steps` steps each), so that load from other processes falls on all of them alike;
each model's time per step is its best turn, with the process CPU time of that turn.
The chunks cost T·L·n for the decay-weighted products inside them and T·n² for
carrying the matrix memory between them (the state after each chunk, and the
previous state's share of every output), so the best L grows with n.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--time", type=int, nargs="+", default=[400, 1000])
    p.add_argument("--chunks", type=int, nargs="+", default=[0, 32, 64, 128, 256])
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--n", type=int, default=126, help="mLSTM units")
    p.add_argument("--lstm-n", type=int, default=64, help="keras LSTM units (same weights)")
    p.add_argument("--steps", type=int, default=3, help="training steps per turn")
    p.add_argument("--rounds", type=int, default=4, help="turns per model (best is kept)")
    return p.parse_args(argv)


def build(layer, steps, d):
    import keras

    inputs = keras.Input((steps, d))
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    model.compile("adam", "mse", jit_compile=True)
    return model


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from rnnbench.cli.startup import quiet_tensorflow

    quiet_tensorflow()  # without TensorFlow's start-up lines
    import keras
    import numpy as np

    from rnnbench.cells import CustomRecurrent

    rng = np.random.default_rng(0)
    print(f"B={args.batch} d={args.d}, mLSTM n={args.n}, keras LSTM n={args.lstm_n}, "
          f"best of {args.rounds} turns of {args.steps} steps; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}, {os.cpu_count()} CPUs")
    for steps in args.time:
        x = rng.normal(size=(args.batch, steps, args.d)).astype("float32")
        y = rng.normal(size=(args.batch, 1)).astype("float32")
        models = {"keras LSTM": build(keras.layers.LSTM(args.lstm_n), steps, args.d)}
        for chunk in args.chunks:
            models[f"mlstm chunk={chunk}"] = build(
                CustomRecurrent("mlstm", args.n, chunk=chunk), steps, args.d)
        for model in models.values():  # trace and compile before any timing
            model.train_on_batch(x, y)
        best = {name: (float("inf"), float("inf")) for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                wall0, cpu0 = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    model.train_on_batch(x, y)
                wall = (time.perf_counter() - wall0) / args.steps
                cpu = (time.process_time() - cpu0) / args.steps
                if wall < best[name][0]:
                    best[name] = (wall, cpu)
        whole = best["mlstm chunk=0"] if "mlstm chunk=0" in best else None
        lstm = best["keras LSTM"]
        print(f"\nT={steps}: model, ms/step (wall, CPU), ratio to keras LSTM, "
              f"speed-up over chunk=0 (wall, CPU)")
        for name, (wall, cpu) in best.items():
            up = (f"{whole[0] / wall:5.2f}x {whole[1] / cpu:5.2f}x" if whole else "")
            print(f"  {name:18s} {wall * 1000:8.1f} {cpu * 1000:8.1f}   "
                  f"{wall / lstm[0]:5.2f} {cpu / lstm[1]:5.2f}   {up}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
