"""The mLSTM of Beck et al. 2024 ("xLSTM: Extended Long Short-Term Memory"), in `keras.ops`.

Equation numbers are the paper's: matrix memory (19), normaliser (20), output (21),
q, k, v (22)-(24), scalar input and forget gates (25)-(26), output gate (27), with the
sLSTM's stabiliser (15)-(17); stabilised, (21) reads `h̃ = C q / max(|nᵀq|, exp(−m))`
(the paper's appendix), which equals the unstabilised `C q / max(|nᵀq|, 1)`. One head.

No gate looks at `h_{t−1}`: the recurrence is linear in the state, so training runs
the paper's parallel form (`mlstm_parallel`, no (T, n, n) tensor) and generation can
still step (`mlstm_step`). The parallel form is quadratic in T; `mlstm_chunkwise` runs
it over chunks of L steps, each from the state the chunk before left (the state after a
chunk is the recurrent one, so the chunks chain exactly), which costs T·L instead of T².
All three give the same numbers.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from rnnbench.cells.base import SpecCell, register
from rnnbench.cells.families.lru import masked_outputs
from rnnbench.cells.families.slstm import FORGET_BIAS_INIT, FORGET_GATES, NEG, log_forget
from rnnbench.errors import ConfigError


def key_scale(units):
    """The 1/√d of eq. (23), d the key size."""
    return 1.0 / math.sqrt(units)


def mlstm_split(z_x, units):
    """`(…, 4n + 2)` → q, k, v, õ `(…, n)` and ĩ, f̃ `(…, 1)` (blocks q, k, v, o, i, f)."""
    n = units
    return (z_x[..., :n], z_x[..., n:2 * n], z_x[..., 2 * n:3 * n], z_x[..., 3 * n:4 * n],
            z_x[..., 4 * n:4 * n + 1], z_x[..., 4 * n + 1:4 * n + 2])


def mlstm_step(z_x, state, units, forget="sigmoid"):
    """One mLSTM step, eqs. (19)-(27), stabilised.

    Args:
        z_x: the projected input, `(B, 4n + 2)`: q, k (already scaled by 1/√n, eq. 23),
            v, õ, ĩ, f̃ (biases included).
        state: `[h, C (B, n·n) row-major (C[i, j] at i·n + j), n_t (B, n), m (B, 1)]`
            (`h` is not read: no gate looks at h_{t−1}).

    Returns:
        `(h_t, new_state, gates)`.
    """
    n = units
    q, k, v, o_pre, i_pre, f_pre = mlstm_split(z_x, n)
    _, C, nrm, m = state
    C = ops.reshape(C, (-1, n, n))
    log_f = log_forget(f_pre, forget)
    m_new = ops.stop_gradient(ops.maximum(log_f + m, i_pre))              # (15)
    i_s, f_s = ops.exp(i_pre - m_new), ops.exp(log_f + m - m_new)       # (16), (17)
    C = f_s[:, :, None] * C + i_s[:, :, None] * (v[:, :, None] * k[:, None, :])  # (19)
    nrm = f_s * nrm + i_s * k                                           # (20)
    num = ops.squeeze(ops.matmul(C, q[:, :, None]), -1)
    den = ops.maximum(ops.abs(ops.sum(nrm * q, -1, keepdims=True)), ops.exp(-m_new))
    o = ops.sigmoid(o_pre)                                              # (27)
    h = o * num / den                                                   # (21)
    return h, [h, ops.reshape(C, (-1, n * n)), nrm, m_new], {
        "input": i_s, "forget": f_s, "output": o}


def mlstm_parallel(z_x, units, mask=None, state=None, forget="sigmoid"):
    """Every step of the mLSTM at once: the paper's parallel form, from a given state
    and with a mask.

    With `F_t = Σ_{r≤t} log f_r`: `D̃_ts = F_t − F_s + ĩ_s` (s ≤ t); the initial state's
    weight `a_t = F_t + m_0`; `m_t = max(a_t, max_s D̃_ts)` (the recurrent m_t);
    `h̃_t = (Σ_s e^{D̃_ts−m_t} (q_t·k_s) v_s + e^{a_t−m_t} C_0 q_t) / max(|Σ_s
    e^{D̃_ts−m_t} q_t·k_s + e^{a_t−m_t} n_0·q_t|, e^{−m_t})`. A masked step is
    `f = 1, i = 0` (the state is kept); its output is left as computed (the caller
    repeats the previous one).

    Args:
        z_x: `(B, T, 4n + 2)` as in `mlstm_step`, in processing order.
        mask: `(B, T)` booleans, or None.
        state: `[C (B, n·n), n (B, n), m (B, 1)]`, or None for zeros.

    Returns:
        `(h (B, T, n), final_state)`.
    """
    n = units
    q, k, v, o_pre, i_pre, f_pre = mlstm_split(z_x, n)
    log_i = i_pre[..., 0]
    log_f = log_forget(f_pre[..., 0], forget)
    if mask is not None:
        mask = ops.cast(mask, "bool")
        log_i = ops.where(mask, log_i, ops.cast(NEG, log_i.dtype))
        log_f = ops.where(mask, log_f, ops.zeros_like(log_f))
    steps = ops.shape(z_x)[1]
    F = ops.cumsum(log_f, axis=1)                                        # (B, T)
    D = F[:, :, None] - F[:, None, :] + log_i[:, None, :]               # (B, T, T)
    causal = ops.tril(ops.ones((steps, steps), "bool"))
    D = ops.where(causal[None], D, ops.cast(NEG, D.dtype))
    C0 = n0 = None
    a = F
    if state is not None:
        C0, n0, m0 = state
        C0 = ops.reshape(C0, (-1, n, n))
        a = F + m0
    m = ops.stop_gradient(ops.maximum(a, ops.max(D, axis=-1)))           # (B, T)
    W = ops.exp(D - m[:, :, None]) * ops.matmul(q, ops.transpose(k, (0, 2, 1)))
    w0 = ops.exp(a - m)                                                 # (B, T)
    num = ops.matmul(W, v)
    den = ops.sum(W, -1)
    if C0 is not None:
        num = num + w0[:, :, None] * ops.einsum("bij,btj->bti", C0, q)
        den = den + w0 * ops.einsum("bj,btj->bt", n0, q)
    den = ops.maximum(ops.abs(den), ops.exp(-m))
    h = ops.sigmoid(o_pre) * num / den[:, :, None]
    # the state after the last step: the weight of every s at t = T
    m_T = m[:, -1]
    w_T = ops.exp(D[:, -1, :] - m_T[:, None])                            # (B, T)
    C_T = ops.einsum("bs,bsi,bsj->bij", w_T, v, k)
    n_T = ops.einsum("bs,bsj->bj", w_T, k)
    if C0 is not None:
        C_T = C_T + w0[:, -1][:, None, None] * C0
        n_T = n_T + w0[:, -1][:, None] * n0
    return h, [ops.reshape(C_T, (-1, n * n)), n_T, m_T[:, None]]


def mlstm_chunkwise(z_x, units, chunk, mask=None, state=None, forget="sigmoid"):
    """`mlstm_parallel` over chunks of `chunk` steps, the state carried between them:
    the same outputs and final state, at a cost of T·L (L = `chunk`) instead of T².

    Each chunk runs the parallel form from the state the chunk before left (the last
    chunk may be shorter), a loop written out when the graph is built. A sequence no
    longer than one chunk, or one whose length is unknown when the graph is built (the
    parallel forms of this package need it known with a mask anyway), is one call of
    `mlstm_parallel`.

    Args:
        chunk: steps per chunk, ≥ 1.
        Other arguments and the result: as `mlstm_parallel`.
    """
    n = units
    steps = z_x.shape[1]
    if steps is None or steps <= chunk:
        return mlstm_parallel(z_x, n, mask=mask, state=state, forget=forget)
    if state is None:
        zeros = ops.zeros_like(z_x[:, 0, :1])
        state = [ops.tile(zeros, (1, n * n)), ops.tile(zeros, (1, n)), zeros]
    outputs = []
    for start in range(0, steps, chunk):
        part = None if mask is None else mask[:, start:start + chunk]
        h, state = mlstm_parallel(z_x[:, start:start + chunk], n, mask=part, state=state,
                                  forget=forget)
        outputs.append(h)
    return ops.concatenate(outputs, axis=1), state


@register
class MLSTMCell(SpecCell):
    """mLSTM, one head (see the module docstring for the equations).

    Fused input kernel `d × (4n + 2)` and bias `4n + 2`, blocks `q, k, v, o` (n each)
    then the scalar gates `i, f` (1 each); the k block is scaled by 1/√n (eq. 23) in
    `project`, before its bias. No recurrent kernel. State `[h, C, n, m]` with `C`
    flattened row-major (`n·n`) and `m` one value per example. Trace: `input` = i',
    `forget` = f' (stabilised, in [0, 1], repeated over the units), `output` = o,
    `state` = h, `state_tanh` = tanh(h). Forget-gate bias starts at 3.

    Args:
        units: number of units `n` (size of q, k, v and h).
        forget_activation: `"sigmoid"` (default) or `"exp"`, eq. (26).
        parallel: train with the parallel form (`scan`); False runs the step loop.
        chunk: the parallel form's chunk length L (`mlstm_chunkwise`): a longer
            sequence runs in chunks of L steps, T·L work instead of T²; 0: the whole
            sequence at once.
        Other arguments: those of `SpecCell` (`recurrent_dropout` must be 0: no
        recurrent product).
    """

    family = "mlstm"
    blocks = ("q", "k", "v", "output")
    recurrent = False
    gradient_kernel = None

    def __init__(self, units, forget_activation="sigmoid", parallel=True, chunk=64,
                 **kwargs):
        if forget_activation not in FORGET_GATES:
            raise ConfigError(f"cell.forget_activation={forget_activation!r} is not allowed: "
                              f"one of {', '.join(FORGET_GATES)}")
        if kwargs.get("recurrent_dropout", 0.0):
            raise ConfigError("cell.recurrent_dropout must be 0 for cell mlstm: no gate reads "
                              "h_{t-1}, so there is no recurrent product (use cell.dropout)")
        super().__init__(units, **kwargs)
        self.forget_activation = forget_activation
        self.parallel = bool(parallel)
        if int(chunk) < 0:
            raise ConfigError(f"cell.chunk={chunk} is not allowed: the chunk length of the "
                              f"parallel form is an integer >= 1, or 0 for one chunk")
        self.chunk = int(chunk)
        n = self.units
        self.state_size = [n, n * n, n, 1]

    def build(self, input_shape):
        d, n = int(input_shape[-1]), self.units
        self.kernel = self.add_weight(shape=(d, 4 * n + 2), name="kernel",
                                      initializer=self.kernel_initializer)
        base = keras.initializers.get(self.bias_initializer)

        def bias_init(shape, dtype=None):
            values = base(shape, dtype=dtype)
            return ops.concatenate([values[:-1], ops.full((1,), FORGET_BIAS_INIT, dtype)])

        self.bias = self.add_weight(shape=(4 * n + 2,), name="bias", initializer=bias_init)
        self.built = True

    def project(self, sequences, training=False, bias=True):
        """`[q, k/√n, v, õ, ĩ, f̃]` of every step, `(B, T, 4n + 2)`, biases included."""
        dtype = self.compute_dtype
        x = ops.cast(sequences, dtype)
        if training and self.dropout > 0:
            keep = keras.random.dropout(ops.ones_like(x[:, 0, :]), self.dropout,
                                        seed=self.seed_generator)
            x = x * ops.expand_dims(keep, 1)
        n = self.units
        scale = ops.concatenate([ops.ones((n,), dtype), ops.full((n,), key_scale(n), dtype),
                                 ops.ones((2 * n + 2,), dtype)])
        return ops.matmul(x, ops.cast(self.kernel, dtype) * scale) + ops.cast(self.bias, dtype)

    def read_step_weights(self, batch_like=None):
        return {}

    @property
    def trace_names(self):
        return ("input", "forget", "output", "state", "state_tanh")

    def forward(self, z_x, states, w, dm):
        n = self.units
        h, new_states, gates = mlstm_step(z_x, states, n, self.forget_activation)
        ones = ops.ones_like(h)
        values = {"input": gates["input"] * ones, "forget": gates["forget"] * ones,
                  "output": gates["output"], "state": h, "state_tanh": ops.tanh(h)}
        return h, new_states, values

    def scan(self, projected, initial_state, mask, *, return_sequences=True,
             zero_output_for_mask=False):
        """Every step at once (`mlstm_parallel`); a masked step repeats the output before
        it. `projected` is in processing order. None (the step loop) with `parallel` off."""
        if not self.parallel:
            return None
        h0, C0, n0, m0 = initial_state
        if self.chunk:
            h, (C, nrm, m) = mlstm_chunkwise(projected, self.units, self.chunk, mask=mask,
                                             state=[C0, n0, m0],
                                             forget=self.forget_activation)
        else:
            h, (C, nrm, m) = mlstm_parallel(projected, self.units, mask=mask,
                                            state=[C0, n0, m0], forget=self.forget_activation)
        if mask is not None:
            h = masked_outputs(h, mask, h0, zero_output_for_mask)
        return h[:, -1], h, [h[:, -1], C, nrm, m]

    def get_config(self):
        return {**super().get_config(), "forget_activation": self.forget_activation,
                "parallel": self.parallel, "chunk": self.chunk}


CELL = MLSTMCell
