"""rnnbench's cuDNN decision (rnnbench.cudnn) against the one Keras itself makes.

Keras never says which path a layer took, so these tests make it tell: they let the
backend believe a GPU is there (its own availability check), put a recorder in place
of the backend's cuDNN kernel that declines every call (Keras then falls back to its
generic loop, so the layer still runs on a CPU), run a real layer, and compare whether
Keras reached the kernel with rnnbench's answer for the same layer. The grid spans the
arguments Keras looks at and a few it must ignore. TensorFlow runs in this process,
JAX in a subprocess (the backend is chosen once per process): ``python
tests/test_cudnn.py jax`` prints that backend's disagreements as JSON.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

# The grid: the arguments Keras looks at, the first value of each the one that lets
# cuDNN run (GRU adds reset_after). Configurations more than RADIUS values away from
# that point add nothing (both sides say no), so the grid is every configuration
# within RADIUS of it: each condition broken alone, and every pair broken together.
GRID = {
    "activation": ("tanh", "native_tanh", "relu"),
    "recurrent_activation": ("sigmoid", "native_sigmoid", "hard_sigmoid"),
    "recurrent_dropout": (0.0, 0.25),
    "unroll": (False, True),
    "use_bias": (True, False),
    "use_cudnn": ("auto", True, False),
    "masked": (False, True),
}
RADIUS = 2
# Arguments Keras must ignore: they change what the layer computes, not its path.
IGNORED = {"dropout": 0.25, "go_backwards": True, "return_sequences": True}


def _native(backend: str, name: str) -> Any:
    """The backend's own tanh or sigmoid (a layer may be given one instead of a name)."""
    if backend == "tensorflow":
        import tensorflow as tf

        return getattr(tf, name)
    import jax

    return jax.numpy.tanh if name == "tanh" else jax.nn.sigmoid


@contextmanager
def keras_kernel_calls(backend: str) -> Iterator[list[str]]:
    """Yields the list that the backend's cuDNN kernel appends to whenever Keras calls
    it, while Keras believes a GPU is there."""
    calls: list[str] = []

    def declined(*args: Any, **kwargs: Any) -> Any:
        calls.append("cudnn")
        raise NotImplementedError  # Keras's own signal to fall back to the generic loop

    # the module, not the function of the same name its package exports
    rnn = importlib.import_module(f"keras.src.backend.{backend}.rnn")
    if backend == "tensorflow":
        patches = [(rnn, "_is_gpu_available", lambda: True), (rnn, "_cudnn_lstm", declined),
                   (rnn, "_cudnn_gru", declined)]
    elif backend == "jax":
        import jax.experimental.rnn

        patches = [(rnn, "_is_gpu_available", lambda: True),
                   (jax.experimental.rnn, "lstm", declined)]
    else:
        raise ValueError(f"no recorder for backend {backend}")
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    try:
        yield calls
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def configurations() -> Iterator[dict[str, Any]]:
    """The grid (see ``GRID``); ``native_tanh`` and ``native_sigmoid`` stand for the
    backend's own functions, which Keras accepts in place of its own (TensorFlow's
    both, JAX's tanh only)."""
    for kind in ("LSTM", "GRU"):
        axes = {**GRID, "reset_after": (True, False) if kind == "GRU" else (None,)}
        for values in itertools.product(*axes.values()):
            config = dict(zip(axes, values))
            away = sum(config[k] != axes[k][0] for k in axes)
            if away <= RADIUS:
                yield {"kind": kind, **config}


def disagreements(backend: str) -> list[dict[str, Any]]:
    """Every configuration of the grid where rnnbench and Keras disagree on ``backend``
    (the running Keras backend)."""
    import keras
    import numpy as np

    from rnnbench import cudnn

    assert keras.backend.backend() == backend
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    right_padded = np.array([[True] * 4, [True, True, False, False]])
    out = []
    for config in configurations():
        kwargs = {k: v for k, v in config.items() if k not in ("kind", "masked", "reset_after")}
        for key in ("activation", "recurrent_activation"):
            if kwargs[key].startswith("native_"):
                kwargs[key] = _native(backend, kwargs[key].removeprefix("native_"))
        if config["reset_after"] is not None:
            kwargs["reset_after"] = config["reset_after"]
        layer = getattr(keras.layers, config["kind"])(3, **kwargs, **IGNORED)
        with keras_kernel_calls(backend) as calls:
            try:
                layer(x, mask=right_padded if config["masked"] else None)
            except ValueError as exc:  # use_cudnn=True and Keras fell back: it says so
                if "use_cudnn=True" not in str(exc):
                    raise
        keras_says = bool(calls)
        ours, reason = cudnn.layer_cudnn(layer, backend, "gpu", config["masked"])
        eligible = cudnn.arguments_ok(layer, backend)
        # eligibility is the arguments alone: it must match Keras wherever the backend
        # has the kernel and no mask is in the way
        arguments_decide = (config["kind"] in cudnn.CUDNN_LAYERS[backend]
                            and not (config["masked"] and backend in cudnn.NO_MASK_BACKENDS))
        if ours != keras_says or (arguments_decide and eligible != keras_says):
            out.append({**{k: str(v) for k, v in config.items()}, "keras": keras_says,
                        "rnnbench": ours, "eligible": eligible, "reason": reason})
    return out


def _describe(found: list[dict[str, Any]]) -> str:
    return f"{len(found)} disagreement(s), e.g.: " + "; ".join(json.dumps(d) for d in found[:3])


def test_the_grid_covers_every_condition_both_ways():
    """Each condition Keras checks is met and broken somewhere in the grid, with every
    other condition met (so that a rule rnnbench got wrong changes an outcome)."""
    base = {"activation": "tanh", "recurrent_activation": "sigmoid", "recurrent_dropout": 0.0,
            "unroll": False, "use_bias": True, "use_cudnn": "auto", "masked": False}
    configs = list(configurations())
    for key, values in GRID.items():
        for value in values:
            wanted = {**base, key: value}
            assert any(all(c[k] == v for k, v in wanted.items()) for c in configs), wanted
    assert {c["reset_after"] for c in configs if c["kind"] == "GRU"} == {True, False}


def test_rnnbench_decides_like_keras_on_tensorflow():
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("this process runs another Keras backend")
    found = disagreements("tensorflow")
    assert not found, _describe(found)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
@pytest.mark.slow  # a JAX process: about half a minute
def test_rnnbench_decides_like_keras_on_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, "jax"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not found, _describe(found)


def test_a_rule_that_disagrees_with_keras_is_caught(monkeypatch):
    """The check has teeth: rnnbench with one of Keras's rules dropped (GRU's
    ``reset_after``) disagrees with Keras."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("this process runs another Keras backend")
    from rnnbench import cudnn

    real = cudnn._argument_faults
    monkeypatch.setattr(cudnn, "_argument_faults", lambda layer, backend: [
        f for f in real(layer, backend) if f != "reset_after=False"])
    monkeypatch.setitem(GRID, "activation", ("tanh",))
    monkeypatch.setitem(GRID, "recurrent_activation", ("sigmoid",))
    found = disagreements("tensorflow")
    assert found and all(d["kind"] == "GRU" and d["reset_after"] == "False" for d in found)


if __name__ == "__main__":
    print(json.dumps(disagreements(sys.argv[1])))
