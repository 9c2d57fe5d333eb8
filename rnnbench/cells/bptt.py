"""A hand-written backward pass through time for rnnbench's own layers (`cell.gradient`).

Autodiff through the time loop computes each weight gradient as a sum of small per-step
products (`G += aᵀ·y` inside the reverse loop). Here the step of every cell is split into

- its linear parts: the input projection `X·W` (done for all steps before the loop by
  `SpecCell.project`, outside this module), the fused bias `b` (added in the loop, where
  it costs no pass of its own over the `(T, B, k·n)` tensor) and the recurrent product
  `h·U`;
- its element-wise part, which turns the pre-activations and the previous state into
  the new state (`h'`, and `c'` and the previous gates of `fgr`).

The forward loop keeps the states entering each step and the gate activations. The
reverse loop computes, per step, the gradient with respect to the pre-activations
(`dA`, derived by hand for each cell family in `rnnbench.cells.bptt_kernels`) and the
gradient of the previous state (through the element-wise part and `dA·Uᵀ`). Every weight gradient is then ONE product
over all steps at once: `dU = H_prevᵀ·dA` on `(T·B)`-row matrices, the peephole and
`bh2` gradients one reduction. The fused bias's gradient is summed in the reverse loop,
while each step's `dA` is in cache; the input kernel gets its gradient by autodiff of the
projection from `dA` (again one `(T·B)`-row product).

Masking follows `keras.layers.RNN` on each backend: at a masked step the states carry
over, and the output is zeros with `zero_output_for_mask=True`, else the previous output
(TensorFlow: zeros before the first valid step; JAX: the previous `h`, so the initial
state before the first valid step).

`run` wraps the two loops in `tf.custom_gradient` on TensorFlow and `jax.custom_vjp` on
JAX. The numbers equal autodiff of the same forward pass to float round-off
(`tests/test_cells_bptt.py` checks every cell in float64 against both autodiff and a
NumPy reference).
"""

from __future__ import annotations

import keras
from keras import ops

from rnnbench.cells.bptt_kernels import kernel_for

#: Backends that run the hand-written gradient; others fall back to autodiff.
BACKENDS = ("tensorflow", "jax")


# ------------------------------------------------------------------- loops
def _scan(body, carry, xs, res_widths, batch, reverse=False):
    """`(carry, ys) = scan(body, carry, xs)` over the leading (time) axis of `xs`.

    `carry`, `xs` and the `ys` that `body` returns are flat lists; every `ys` entry is a
    `(B, width)` tensor of the carry's dtype, `res_widths` giving the widths.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def jbody(c, x):
            c, y = body(list(c), list(x))
            return c, y

        carry, ys = jax.lax.scan(jbody, carry, xs, reverse=reverse)
        return list(carry), list(ys)

    import tensorflow as tf

    steps = tf.shape(xs[0])[0]
    dtype = carry[0].dtype
    in_tas = [
        tf.TensorArray(x.dtype, size=steps, element_shape=x.shape[1:]).unstack(x) for x in xs
    ]
    out_tas = [
        tf.TensorArray(dtype, size=steps, element_shape=tf.TensorShape([batch, width]))
        for width in res_widths
    ]

    def cond(t, *_):
        return t >= 0 if reverse else t < steps

    def loop(t, carry, out_tas):
        new_carry, ys = body(list(carry), [ta.read(t) for ta in in_tas])
        out_tas = [ta.write(t, y) for ta, y in zip(out_tas, ys)]
        return (t - 1 if reverse else t + 1), new_carry, out_tas

    start = steps - 1 if reverse else tf.constant(0)
    _, carry, out_tas = tf.while_loop(
        cond, loop, (start, list(carry), out_tas), maximum_iterations=steps
    )
    return list(carry), [ta.stack() for ta in out_tas]


class _Plan:
    """Static settings of one call: the kernel and the loop options."""

    def __init__(self, kernel, masked, return_sequences, zero_output, batch):
        self.kernel = kernel
        self.masked = masked
        self.return_sequences = return_sequences
        self.zero_output = zero_output
        self.batch = batch
        self.n_states = len(kernel.state_widths)
        # Keras's JAX loop repeats the previous h at a masked step, its TensorFlow loop
        # the previous output (zeros before the first valid step).
        self.output_is_state = masked and not zero_output and keras.backend.backend() == "jax"


def _forward(plan, zx, states0, w, mask, dm):
    """Forward loop. Returns `(outputs, final_states, residuals)`.

    `zx`: `(T, B, k·n)`; `mask`: `(T, B, 1)` bool or None. `outputs` is `(T, B, n)`
    with `return_sequences`, else the last output `(B, n)`. `residuals` are stacked
    `(T, B, ·)` tensors: the states entering each step, then the kernel's residuals.
    """
    k, ns = plan.kernel, plan.n_states
    bias = w.get("bias")

    def body(carry, x):
        states, y = carry[:ns], carry[ns]
        new, h_new, res = k.step(x[0] if bias is None else x[0] + bias, states, w, dm)
        if plan.masked:
            m = x[1]
            new = [ops.where(m, a, b) for a, b in zip(new, states)]
            if plan.output_is_state:
                y = new[0]
            else:
                y = ops.where(m, h_new, ops.zeros_like(h_new) if plan.zero_output else y)
        else:
            y = h_new
        ys = [*states, *res] + ([y] if plan.return_sequences else [])
        return [*new, y], ys

    xs = [zx] + ([mask] if plan.masked else [])
    widths = list(k.state_widths) + list(k.res_widths)
    widths += [k.n] if plan.return_sequences else []
    y0 = ops.zeros_like(states0[0])
    carry, ys = _scan(body, [*states0, y0], xs, widths, plan.batch)
    final, last = carry[:ns], carry[ns]
    if plan.return_sequences:
        outputs, residuals = ys[-1], ys[:-1]
    else:
        outputs, residuals = last, ys
    return outputs, final, residuals


def _backward(plan, residuals, w, mask, dm, d_outputs, d_final):
    """Reverse loop and batched weight gradients.

    Returns `(d_zx (T, B, k·n), d_initial_states, d_weights)`.
    """
    k, ns = plan.kernel, plan.n_states
    n_res = len(k.res_widths)
    with_bias = "bias" in w

    # Unmasked, the output of a step is its h', so nothing but `dy` of the step itself
    # flows into it and no output gradient needs carrying from step to step.
    carry_dy = plan.masked

    def body(carry, x):
        d_states = carry[:ns]
        states, res = x[:ns], x[ns : ns + n_res]
        rest = x[ns + n_res :]
        m = rest.pop(0) if plan.masked else None
        dy = carry[ns] if carry_dy else None
        if plan.return_sequences:
            dy = rest[0] if dy is None else dy + rest[0]
        d_new = list(d_states) if dy is None else [d_states[0] + dy, *d_states[1:]]
        passed = []
        if m is None:
            da, d_prev = k.back(d_new, states, res, w, dm)
        else:
            da, d_prev = k.back([ops.where(m, d, ops.zeros_like(d)) for d in d_new], states,
                                res, w, dm)
            # what a masked step passes through unchanged to the step before
            dy_next = ops.zeros_like(dy)
            if plan.output_is_state:
                through = d_new  # the output is the carried h itself
            else:
                through = d_states
                if not plan.zero_output:
                    dy_next = ops.where(m, dy_next, dy)
            d_prev = [p + ops.where(m, ops.zeros_like(d), d) for p, d in zip(d_prev, through)]
            passed = [dy_next]
        # the bias gradient summed while `dA` of the step is in cache, not in one more
        # pass over the stacked `dA` after the loop
        d_bias = [carry[-1] + ops.sum(da, axis=0)] if with_bias else []
        return [*d_prev, *passed, *d_bias], [da]

    xs = list(residuals) + ([mask] if plan.masked else [])
    d_final = list(d_final)
    dy0 = []
    if plan.return_sequences:
        xs.append(d_outputs)
        if carry_dy:
            dy0 = [ops.zeros_like(d_final[0])]
    elif carry_dy:
        dy0 = [d_outputs]
    else:
        d_final[0] = d_final[0] + d_outputs  # the last output is the final h
    # the transposed matrices the reverse loop multiplies by, made once before it
    w = {**w, **{f"{name}.T": ops.transpose(v) for name, v in w.items() if len(v.shape) == 2}}
    db0 = [ops.zeros_like(w["bias"])] if with_bias else []
    carry, (da,) = _scan(body, [*d_final, *dy0, *db0], xs, [k.da_width], plan.batch,
                         reverse=True)
    d_init = carry[:ns]
    d_w = k.weight_grads(residuals[:ns], residuals[ns:], da, w, dm)
    if with_bias:
        d_w["bias"] = carry[-1]
    return da, d_init, d_w


def _zeros_if_none(d, like):
    return ops.zeros_like(like) if d is None else d


def run(cell, projected, initial_state, mask, *, go_backwards, return_sequences,
        zero_output_for_mask=False, recurrent_mask=None):
    """The recurrent loop of a `CustomRecurrent` with the hand-written gradient.

    Same contract as `keras.layers.RNN.inner_loop`'s `backend.rnn` call.

    Args:
        cell: the built `SpecCell`.
        projected: `(B, T, k·n)`, the output of `cell.project(..., bias=False)`: the
            loop adds the cell's fused bias itself.
        initial_state: list of the initial states.
        mask: `(B, T)` boolean mask, or None.
        go_backwards: whether to run the sequence backwards (outputs in the order of
            processing, as Keras does).
        return_sequences: whether every step's output is needed.
        zero_output_for_mask: Keras's option of the same name.
        recurrent_mask: the recurrent dropout mask `(B, n)` of this call, or None.

    Returns:
        `(last_output, outputs, final_states)` as `keras.src.backend.rnn` returns them.
    """
    states0 = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
    dtype = projected.dtype
    zx = ops.transpose(projected, (1, 0, 2))  # time-major; cancels project's transpose
    m = None
    if mask is not None:
        m = ops.expand_dims(ops.transpose(ops.cast(mask, "bool"), (1, 0)), -1)
    if go_backwards:
        zx = ops.flip(zx, axis=0)
        if m is not None:
            m = ops.flip(m, axis=0)
    weights = {**cell.read_step_weights(), "bias": ops.cast(cell.bias, dtype)}
    names = sorted(weights)
    plan = _Plan(
        kernel_for(cell),
        masked=m is not None,
        return_sequences=return_sequences,
        zero_output=zero_output_for_mask,
        batch=projected.shape[0],
    )
    dm = None if recurrent_mask is None else ops.cast(recurrent_mask, dtype)
    states0 = [ops.cast(s, dtype) for s in states0]
    if keras.backend.backend() == "jax":
        outputs, final = _run_jax(plan, zx, states0, weights, m, dm)
    else:
        outputs, final = _run_tf(plan, zx, states0, [weights[k] for k in names], names, m, dm)
    if return_sequences:
        outputs = ops.transpose(outputs, (1, 0, 2))
        last = outputs[:, -1]
    else:
        last = outputs
        outputs = ops.expand_dims(outputs, 1)
    return last, outputs, list(final)


def _run_tf(plan, zx, states0, weight_list, names, mask, dm):
    import tensorflow as tf

    ns = plan.n_states

    @tf.custom_gradient
    def loop(zx, *args):
        states0, w = list(args[:ns]), dict(zip(names, args[ns:]))
        outputs, final, residuals = _forward(plan, zx, states0, w, mask, dm)

        def grad(*dys):
            d_out = _zeros_if_none(dys[0], outputs)
            d_final = [_zeros_if_none(d, s) for d, s in zip(dys[1:], final)]
            d_zx, d_init, d_w = _backward(plan, residuals, w, mask, dm, d_out, d_final)
            return (d_zx, *d_init, *[d_w[k] for k in names])

        return (outputs, *final), grad

    result = loop(zx, *states0, *weight_list)
    return result[0], list(result[1:])


def _run_jax(plan, zx, states0, weights, mask, dm):
    import jax

    @jax.custom_vjp
    def loop(zx, states0, w, mask, dm):
        outputs, final, _ = _forward(plan, zx, list(states0), w, mask, dm)
        return outputs, tuple(final)

    def loop_fwd(zx, states0, w, mask, dm):
        outputs, final, residuals = _forward(plan, zx, list(states0), w, mask, dm)
        return (outputs, tuple(final)), (residuals, w, mask, dm)

    def loop_bwd(saved, cotangents):
        residuals, w, mask, dm = saved
        d_out, d_final = cotangents
        d_zx, d_init, d_w = _backward(plan, residuals, w, mask, dm, d_out, list(d_final))
        # no gradient for the mask and the dropout mask (None: zero cotangent)
        return (d_zx, tuple(d_init), d_w, None, None)

    loop.defvjp(loop_fwd, loop_bwd)
    outputs, final = loop(zx, tuple(states0), weights, mask, dm)
    return outputs, list(final)
