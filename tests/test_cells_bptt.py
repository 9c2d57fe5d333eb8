"""The hand-written backward pass through time (`cell.gradient=bptt`) of every cell.

Two references, in float64 on small shapes, relative error <= 1e-6 for every weight, the
inputs and the initial states:

- autodiff of the same forward pass (`gradient="autodiff"`, the fallback), with
  masks (leading, inner and trailing masked steps), `return_sequences` both ways,
  `go_backwards`, recurrent dropout and non-zero initial states;
- central finite differences of the float64 NumPy reference of each cell written from
  the spec (`helpers.py`), for every weight and the inputs (the references
  start from zero states, so the initial states are checked against autodiff only).

JAX runs the same check against its own autodiff in a subprocess (float32 there: Keras's
`ops.tanh` on JAX returns float32 for float64 input, so neither gradient runs in float64).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from helpers import (  # noqa: E402
    BLOCKS,
    D,
    N,
    PEEPHOLE_NAME,
    ROOT,
    cli_env,
    load_params,
    random_params,
    reference,
    run_cli,
    store_runs,
    tiny_task_run,
)

from rnnbench.cells import CELLS, CustomRecurrent, describe_layer, make_recurrent_layer  # noqa: E402
from rnnbench.cells.registry import kernel_families  # noqa: E402
from rnnbench.cells.settings import validate_cell_config  # noqa: E402
from rnnbench.errors import ConfigError  # noqa: E402

B, T = 3, 6
TOL = 1e-6
# the cells whose family has a hand-written gradient (the others refuse gradient=bptt)
ALL_CELLS = [name for name, spec in CELLS.items() if spec.family in kernel_families()]


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def state_widths(cell):
    widths = [N] * (2 if CELLS[cell].family == "lstm" else 1)
    return widths + ([3 * N] if cell == "fgr" else [])


def make_layer(cell, gradient, weights=None, **kwargs):
    layer = CustomRecurrent(
        cell, N, return_state=True, gradient=gradient, seed=7, dtype="float64", **kwargs
    )
    layer.build((None, T, D))
    if weights is not None:
        layer.set_weights(weights)
    return layer


def loss_and_grads(layer, x, init, mask=None, training=False):
    """A loss that weighs every output and final state at random; its gradients with
    respect to the inputs, the initial states and every trainable weight."""
    x = tf.constant(x)
    init = [tf.constant(s) for s in init]
    with tf.GradientTape() as tape:
        tape.watch([x, *init])
        out, *states = layer(x, initial_state=init, mask=mask, training=training)
        rng = np.random.default_rng(11)
        loss = tf.reduce_sum(out * rng.normal(size=out.shape))
        for s in states:
            loss += tf.reduce_sum(s * rng.normal(size=s.shape))
    wrt = [x, *init, *layer.trainable_weights]
    grads = tape.gradient(loss, wrt)
    assert all(g is not None for g in grads)
    return [out, *states], grads


MASK = np.ones((B, T), bool)
MASK[0, :2] = False  # leading masked steps: the output before the first valid step
MASK[1, 3] = False  # a gap
MASK[2, -2:] = False  # trailing: the last output repeats an earlier one

CASES = {
    "sequences": dict(return_sequences=True),
    "masked-last-backwards": dict(return_sequences=False, go_backwards=True, mask=True),
    "masked-sequences-dropout": dict(
        return_sequences=True, mask=True, recurrent_dropout=0.3, training=True
    ),
}


# Masking is handled by the loop, the same code for every cell: two cells suffice.
ZERO_OUTPUT_CASES = {
    "zero-output-sequences": dict(return_sequences=True, mask=True, zero_output_for_mask=True),
    "zero-output-last": dict(return_sequences=False, mask=True, zero_output_for_mask=True),
}


@pytest.mark.parametrize(
    "cell, cases",
    [(cell, CASES) for cell in ALL_CELLS]
    + [(cell, ZERO_OUTPUT_CASES) for cell in ("gru_v1", "peephole")],
    ids=ALL_CELLS + ["gru_v1-zero-output", "peephole-zero-output"],
)
def test_bptt_equals_autodiff(cell, cases):
    rng = np.random.default_rng(zlib.crc32(cell.encode()))
    x = rng.normal(size=(B, T, D))
    init = [rng.normal(size=(B, w)) * 0.5 for w in state_widths(cell)]
    weights = None
    for name, case in cases.items():
        case = dict(case)
        mask = MASK if case.pop("mask", False) else None
        training = case.pop("training", False)
        results = {}
        for gradient in ("autodiff", "bptt"):
            layer = make_layer(cell, gradient, weights, **case)
            if weights is None:
                weights = [rng.uniform(-0.6, 0.6, w.shape) for w in layer.get_weights()]
                layer.set_weights(weights)
            results[gradient] = loss_and_grads(layer, x, init, mask, training)
            assert layer.gradient_ran == gradient
        (out_a, grads_a), (out_b, grads_b) = results["autodiff"], results["bptt"]
        names = ["x"] + [f"state{i}" for i in range(len(init))]
        names += [w.name for w in layer.trainable_weights]
        for what, a, b in zip(["out"] * len(out_a) + names, out_a + grads_a, out_b + grads_b):
            assert rel_err(b, a) <= TOL, (cell, name, what, rel_err(b, a))
        # the check is not vacuous: masked steps and dropout change the gradients
        assert all(np.max(np.abs(np.asarray(g))) > 0 for g in grads_b), (cell, name)


def fused_to_spec(cell, layer, grads):
    """Gradients of the layer's fused weights, split into the spec's per-gate arrays."""
    by_name = dict(zip([w.name for w in layer.trainable_weights], grads))
    blocks = BLOCKS.get(cell, "ifco")
    split = {
        key: dict(zip(blocks, np.split(np.asarray(by_name[name]), len(blocks), axis=-1)))
        for key, name in (("W", "kernel"), ("U", "recurrent_kernel"), ("b", "bias"))
    }
    if cell == "gru":
        split["bh2"] = np.asarray(by_name["recurrent_bias"])
    peepholes = [name for name in by_name if name.startswith("peephole_")]
    if peepholes:
        split["p"] = {
            g: np.asarray(by_name[f"peephole_{full}"])
            for g, full in PEEPHOLE_NAME.items()
            if f"peephole_{full}" in by_name
        }
    if cell == "fgr":
        R = np.asarray(by_name["gate_recurrent_kernel"])
        split["R"] = {
            tgt + src: R[a * N : (a + 1) * N, b * N : (b + 1) * N]
            for a, src in enumerate("ifo")
            for b, tgt in enumerate("ifo")
        }
    return split


def leaves(tree, prefix=""):
    """`(path, array)` of every array of a nested dict, in a fixed order."""
    if isinstance(tree, dict):
        for key in sorted(tree):
            yield from leaves(tree[key], f"{prefix}/{key}")
    else:
        yield prefix, tree


# each cell once, return_sequences alternating (the autodiff test covers both for all)
@pytest.mark.parametrize(
    "cell, return_sequences", [(cell, k % 2 == 0) for k, cell in enumerate(ALL_CELLS)]
)
def test_bptt_equals_finite_differences_of_the_numpy_reference(cell, return_sequences):
    rng = np.random.default_rng(zlib.crc32(cell.encode()) + 1)
    x = rng.normal(size=(B, T, D))
    P = random_params(cell, rng)
    w_out = rng.normal(size=(B, T, N) if return_sequences else (B, N))
    w_states = [rng.normal(size=(B, w)) for w in state_widths(cell)]

    def ref_loss(x, P):
        out, states = reference(cell, x, P)
        out = out if return_sequences else out[:, -1]
        return np.sum(out * w_out) + sum(np.sum(s * w) for s, w in zip(states, w_states))

    layer = make_layer(cell, "bptt", return_sequences=return_sequences)
    load_params(layer, cell, P)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out, *states = layer(xt)
        loss = tf.reduce_sum(out * w_out)
        for s, w in zip(states, w_states):
            loss += tf.reduce_sum(s * w)
    grads = tape.gradient(loss, [xt, *layer.trainable_weights])
    assert layer.gradient_ran == "bptt"
    assert abs(float(loss) - ref_loss(x, P)) <= TOL * abs(ref_loss(x, P))
    got = {"x": np.asarray(grads[0]), **fused_to_spec(cell, layer, grads[1:])}

    eps = 1e-6
    want = {"x": np.zeros_like(x)}
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        want["x"][i] = (ref_loss(xp, P) - ref_loss(xm, P)) / (2 * eps)
    for path, array in leaves(P):
        fd = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            keep = array[i]
            array[i] = keep + eps
            up = ref_loss(x, P)
            array[i] = keep - eps
            down = ref_loss(x, P)
            array[i] = keep
            fd[i] = (up - down) / (2 * eps)
        node = want
        *parents, last = path.strip("/").split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = fd
    got_leaves, want_leaves = dict(leaves(got)), dict(leaves(want))
    assert got_leaves.keys() == want_leaves.keys()
    for path, fd in want_leaves.items():
        assert rel_err(got_leaves[path], fd) <= TOL, (cell, path, rel_err(got_leaves[path], fd))


def test_unroll_falls_back_to_autodiff_with_a_warning_and_the_same_numbers():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(B, T, D))
    init = [rng.normal(size=(B, N)), rng.normal(size=(B, N))]
    ref_layer = make_layer("peephole", "autodiff", return_sequences=True)
    weights = [rng.uniform(-0.6, 0.6, w.shape) for w in ref_layer.get_weights()]
    ref_layer.set_weights(weights)
    want = loss_and_grads(ref_layer, x, init, MASK)
    layer = make_layer("peephole", "bptt", weights, return_sequences=True, unroll=True)
    with pytest.warns(UserWarning, match="unroll=True.*autodiff"):
        got = loss_and_grads(layer, x, init, MASK)
    assert layer.gradient_ran == "autodiff"
    assert describe_layer(layer)["gradient"] == "autodiff"
    for a, b in zip(want[0] + want[1], got[0] + got[1]):
        assert rel_err(b, a) <= 1e-12


def test_gradient_option_is_validated_and_kept():
    with pytest.raises(ConfigError) as err:
        validate_cell_config({"name": "lstm", "gradient": "bptt"})  # impl auto: builtin
    msg = str(err.value)
    assert "cell.gradient=bptt" in msg and "auto or autodiff" in msg and "impl=custom" in msg
    with pytest.raises(ConfigError, match="auto, autodiff, bptt"):
        validate_cell_config({"name": "peephole", "gradient": "manual"})
    assert validate_cell_config({"name": "peephole"}).gradient == "auto"
    assert validate_cell_config({"name": "lstm", "gradient": "autodiff"}).impl == "builtin"

    auto = make_recurrent_layer({"name": "gru", "impl": "custom"}, 4, return_sequences=False)
    assert describe_layer(auto)["gradient"] == "bptt"
    builtin = make_recurrent_layer({"name": "gru"}, 4, return_sequences=False)
    assert describe_layer(builtin)["gradient"] == "autodiff"
    layer = make_recurrent_layer(
        {"name": "janet", "gradient": "autodiff"}, 4, return_sequences=False
    )
    again = CustomRecurrent.from_config(layer.get_config())
    assert again.gradient == "autodiff" and describe_layer(again)["gradient"] == "autodiff"
    bi = keras.layers.Bidirectional(make_recurrent_layer({"name": "nig"}, 4,
                                                         return_sequences=False))
    assert bi.backward_layer.gradient == "auto"


def test_cli_refuses_bptt_on_a_builtin_layer(tmp_path):
    proc = run_cli(["task=co2", "cell=lstm", "cell.gradient=bptt", "debug=smoke"], tmp_path,
                   timeout=120)
    err = proc.stderr + proc.stdout
    assert proc.returncode == 2, err[-2000:]
    assert "cell.gradient=bptt" in err and "autodiff" in err and "Traceback" not in err
    assert store_runs(tmp_path) == []


JAX_CHECK = r"""
import json, sys
import numpy as np, jax, jax.numpy as jnp, keras
from rnnbench.cells import CELLS, CustomRecurrent
B, T, D, N = 3, 6, 4, 5
mask = np.ones((B, T), bool); mask[0, :2] = False; mask[1, 3] = False; mask[2, -2:] = False
worst = {}
for cell in sys.argv[1:]:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(B, T, D)), "float32")
    widths = [N] * (2 if CELLS[cell].family == "lstm" else 1) + ([3 * N] if cell == "fgr" else [])
    init = tuple(jnp.asarray(rng.normal(size=(B, w)) * 0.5, "float32") for w in widths)
    results = {}
    for gradient in ("autodiff", "bptt"):
        layer = CustomRecurrent(cell, N, return_sequences=True, return_state=True,
                                gradient=gradient)
        layer.build((None, T, D))
        layer.set_weights([np.random.default_rng(1).uniform(-0.6, 0.6, w.shape)
                           for w in layer.get_weights()])
        trainable = [v.value for v in layer.trainable_variables]
        other = [v.value for v in layer.non_trainable_variables]

        def loss(x, init, trainable):
            (out, *states), _ = layer.stateless_call(trainable, other, x,
                                                     initial_state=list(init), mask=mask)
            r = np.random.default_rng(2)
            total = jnp.sum(out * r.normal(size=out.shape))
            return total + sum(jnp.sum(s * r.normal(size=s.shape)) for s in states)

        value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(x, init, trainable)
        assert layer.gradient_ran == gradient, (cell, layer.gradient_ran)
        results[gradient] = [value, *jax.tree_util.tree_leaves(grads)]
    errs = [float(np.max(np.abs(np.asarray(b) - np.asarray(a))) / np.max(np.abs(np.asarray(a))))
            for a, b in zip(results["autodiff"], results["bptt"])]
    worst[cell] = max(errs)
print(json.dumps(worst))
"""


# One cell per gradient kernel (the LSTM family's through fgr, which has every part: the
# peepholes, the gate recurrence, all gates): the kernels' math is the same code on
# every backend and is checked in float64 above; this checks the JAX wrapper
# (jax.custom_vjp) and Keras's JAX masking convention.
JAX_CELLS = ["rnn", "gru", "gru_v1", "fgr", "cifg", "janet"]


@pytest.mark.slow
def test_bptt_equals_autodiff_on_jax():
    proc = subprocess.run(
        [sys.executable, "-c", JAX_CHECK, *JAX_CELLS],
        cwd=ROOT,
        env=cli_env(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    worst = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(worst) == set(JAX_CELLS)
    for cell, err in worst.items():
        assert err <= 1e-5, (cell, err)  # float32 round-off


def test_no_warning_when_bptt_runs():
    layer = make_layer("gru_v1", "auto", return_sequences=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(np.zeros((B, T, D)))
    assert layer.gradient_ran == "bptt"


@pytest.mark.slow
def test_training_is_unchanged_and_the_run_records_which_gradient_ran(tmp_path):
    """A real (tiny) co2 run with the peephole cell, once per gradient: the same losses
    and test metrics to float32 round-off, and the `gradient` tag says which one ran."""
    db = tmp_path / "mlflow.db"
    for gradient in ("autodiff", "bptt"):
        tiny_task_run("co2", {"csv": "", "wavs": ""}, db, "cell=peephole", f"cell.gradient={gradient}",
                      "train.epochs=2")
    runs = {r.data.tags["gradient"]: r for r in store_runs(tmp_path, f"sqlite:///{db}")}
    assert set(runs) == {"autodiff", "bptt"}
    a, b = runs["autodiff"].data.metrics, runs["bptt"].data.metrics
    compared = [k for k in a if k.startswith(("loss", "val_loss", "test_"))]
    assert "loss" in compared and any(k.startswith("test_") for k in compared)
    for key in compared:
        assert abs(b[key] - a[key]) <= 1e-4 * max(abs(a[key]), 1e-3), (key, a[key], b[key])


def test_stateful_and_bidirectional_layers_get_the_same_gradients():
    """Two batches through a stateful layer (the second starts from the first's final
    states) and a Bidirectional one (its backward copy runs go_backwards)."""
    rng = np.random.default_rng(9)
    x1, x2 = rng.normal(size=(B, T, D)), rng.normal(size=(B, T, D))
    results = {}
    for gradient in ("autodiff", "bptt"):
        keras.utils.set_random_seed(0)
        cfg = {"name": "cifg", "impl": "custom", "gradient": gradient}
        stateful = make_recurrent_layer(cfg, N, return_sequences=True, stateful=True)
        bi = keras.layers.Bidirectional(make_recurrent_layer(cfg, N, return_sequences=False))
        inputs = keras.Input(batch_shape=(B, T, D))  # float32: the layers' default policy
        model = keras.Model(inputs, bi(stateful(inputs)))
        model.set_weights([rng.uniform(-0.6, 0.6, w.shape) for w in model.get_weights()]
                          if gradient == "autodiff" else results["autodiff"][0])
        weights = model.get_weights()
        grads = []
        for x in (x1, x2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(tf.constant(x, tf.float32)) ** 2)
            grads += tape.gradient(loss, model.trainable_weights)
        results[gradient] = (weights, grads)
        assert {stateful.gradient_ran, bi.forward_layer.gradient_ran,
                bi.backward_layer.gradient_ran} == {gradient}
    for a, b in zip(results["autodiff"][1], results["bptt"][1]):
        assert rel_err(b, a) <= TOL
