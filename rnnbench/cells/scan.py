"""Parallel scans over time of the diagonal linear recurrence `h_t = a_t ⊙ h_{t−1} + b_t`.

The pairs `(a, b)` compose associatively: applying `(a₁, b₁)` then `(a₂, b₂)` is
`(a₁a₂, a₂b₁ + b₂)`, so every prefix can be computed in about `log₂ T` parallel rounds
(Blelloch 1990). The families whose recurrence is linear in `h` (`mingru`, `minlstm`,
the LRU) train with it; their step form stays for generation and the trace.

Why not `keras.ops.associative_scan` on TensorFlow (Keras 3.15, checked here):

- its output has an unknown static shape (the interleave of each round is a `tf.cond`
  whose branches do not keep the shape), so in a Functional model the next layer's input
  check fails with "as_list() is not defined on an unknown TensorShape" inside `fit`;
- under `jit_compile=True`, XLA compiles both branches of that `tf.cond`, and the
  branch not taken concatenates mismatched shapes: the compile fails;
- with an unknown sequence length it raises ("Using a symbolic tf.Tensor as a Python
  bool") on its check that all inputs have the same length.

`associative_scan` below is the same odd/even recursion written with Python control
flow on the static length (every round's slices and interleaves are static), in
`keras.ops` only: it keeps shapes, compiles under XLA, and runs on every backend. It
needs the length along the scanned axis to be known when the graph is built.

A length known only at run time (a TensorFlow graph traced with a free sequence length,
as for the tasks that pad each batch to its own longest sequence: `chorales`, the
speech tasks) takes `dynamic_scan`: chunks of a fixed length `L` scanned side by side
(`L` rounds), the chunks' totals carried by `tf.scan` (`⌈T/L⌉` sequential rounds over
`(B, n)`), and one combining round. The scans of this module pick it themselves,
so a family's parallel form runs whatever the length (before, such a batch fell back to
the step loop).
"""

from __future__ import annotations

from keras import ops


def static_length(x, axis: int = 1) -> int | None:
    """The static length of `x` along `axis`, or None when it is only known at run time."""
    n = x.shape[axis]
    return None if n is None else int(n)


def _take(x, start, stop, step=1):
    """`x[:, start:stop:step]` (the scanned axis is 1)."""
    return x[:, start:stop:step]


def _interleave(even, odd, length):
    """`[e0, o0, e1, o1, …]` along axis 1, `length` elements (`even` has ⌈length/2⌉)."""
    rest = tuple(even.shape[2:])
    pairs = length // 2
    head = ops.stack([_take(even, 0, pairs), odd], axis=2)
    out = ops.reshape(head, (-1, 2 * pairs, *rest))
    if length % 2:
        out = ops.concatenate([out, _take(even, pairs, pairs + 1)], axis=1)
    return out


def associative_scan(combine, elems, axis: int = 1):
    """Inclusive scan of `elems` (a tuple of tensors) with the associative `combine`.

    Args:
        combine: `combine(left, right) -> tuple`, element-wise over the scanned axis,
            associative: `combine(x, combine(y, z)) == combine(combine(x, y), z)`.
        elems: tuple of tensors of the same static length along `axis`.
        axis: the scanned axis (1 for `(B, T, …)` tensors).

    Returns:
        A tuple like `elems` whose element `t` is `elems[0] ∘ … ∘ elems[t]`.

    Raises:
        ValueError: the length along `axis` is not static.
    """
    elems = tuple(elems)
    length = static_length(elems[0], axis)
    if length is None:
        raise ValueError("associative_scan needs a static length along the scanned axis")
    if axis != 1:
        elems = tuple(ops.moveaxis(e, axis, 1) for e in elems)
    out = _scan(combine, elems, length)
    if axis != 1:
        out = tuple(ops.moveaxis(e, 1, axis) for e in out)
    return out


def _scan(combine, elems, length):
    if length < 2:
        return elems
    pairs = length // 2
    # Combine neighbours (0,1), (2,3)…: the prefixes at the odd positions, once scanned.
    reduced = combine(
        tuple(_take(e, 0, 2 * pairs, 2) for e in elems),
        tuple(_take(e, 1, 2 * pairs, 2) for e in elems),
    )
    odd = _scan(combine, tuple(reduced), pairs)
    # Prefixes at the even positions 2, 4…: the odd prefix before, then the element.
    n_rest = (length - 1) // 2
    if n_rest:
        rest = combine(
            tuple(_take(o, 0, n_rest) for o in odd),
            tuple(_take(e, 2, length, 2) for e in elems),
        )
        even = tuple(
            ops.concatenate([_take(e, 0, 1), r], axis=1) for e, r in zip(elems, rest)
        )
    else:
        even = tuple(_take(e, 0, 1) for e in elems)
    return tuple(_interleave(e, o, length) for e, o in zip(even, odd))


def chunked_scan(combine, elems, chunk: int | None = None):
    """Inclusive scan of `(B, T, n)` tensors in chunks: the two-level parallel scan.

    The sequence is cut into `C` chunks of `L` steps (`L ≈ √T`). Every chunk is scanned
    at once, all chunks side by side (`L` rounds over `(B, C, n)` slices); the chunks'
    totals are scanned (`C` rounds over `(B, n)`); each chunk's prefixes are then
    combined with the total of the chunks before it (one round over everything). That is
    `L + C + 1 ≈ 2√T` rounds of element-wise work where a step loop has `T`, and, unlike
    the odd/even recursion, no strided slices or interleaves (slow to differentiate on
    CPU under XLA). Same arguments and result as `associative_scan` (axis 1, rank 3).
    """
    elems = tuple(elems)
    length = static_length(elems[0])
    if length is None:
        raise ValueError("chunked_scan needs a static length along axis 1")
    size = chunk or max(1, int(round(length ** 0.5)))
    count = -(-length // size)
    pad = count * size - length
    width = elems[0].shape[2]
    blocks = []
    for e in elems:
        if pad:  # any values: steps after T never reach a step before it
            e = ops.pad(e, ((0, 0), (0, pad), (0, 0)))
        # (B, C·L, n) -> (L, B, C, n): the l-th step of every chunk is one contiguous slice.
        blocks.append(ops.transpose(ops.reshape(e, (-1, count, size, width)), (2, 0, 1, 3)))
    prefix = [tuple(b[0] for b in blocks)]
    for step in range(1, size):
        prefix.append(tuple(combine(prefix[-1], tuple(b[step] for b in blocks))))
    if count == 1:
        inner = [ops.stack([p[i] for p in prefix]) for i in range(len(elems))]
    else:
        totals = [ops.transpose(t, (1, 0, 2)) for t in prefix[-1]]  # (C, B, n)
        carry = [tuple(t[0] for t in totals)]
        for c in range(1, count - 1):
            carry.append(tuple(combine(carry[-1], tuple(t[c] for t in totals))))
        # total of the chunks before chunk c (c ≥ 1), as (1, B, C − 1, n)
        before = tuple(
            ops.expand_dims(ops.stack([q[i] for q in carry], axis=1), 0)
            for i in range(len(elems))
        )
        stacked = [ops.stack([p[i] for p in prefix]) for i in range(len(elems))]
        later = combine(before, tuple(s[:, :, 1:] for s in stacked))
        inner = [ops.concatenate([s[:, :, :1], r], axis=2) for s, r in zip(stacked, later)]
    out = tuple(
        ops.reshape(ops.transpose(t, (1, 2, 0, 3)), (-1, count * size, width))[:, :length]
        for t in inner
    )
    return out


#: The chunk length `L` of `dynamic_scan`: `L + ⌈T/L⌉ + 1` rounds (about 27 at T = 160).
DYNAMIC_CHUNK = 16


def dynamic_scan(combine, elems, identity, chunk: int = DYNAMIC_CHUNK):
    """Inclusive scan of `(B, T, n)` tensors whose length `T` is known only at run time.

    The sequence is padded with the identity to `C = ⌈T/L⌉` chunks of `L = chunk` steps;
    every chunk is scanned at once (`L` rounds over `(B, C, n)`), the chunks' totals are
    carried from chunk to chunk by `tf.scan` (`C` rounds over `(B, n)`: a length unknown
    when the graph is built only occurs in a TensorFlow graph), and each chunk's prefixes
    are combined with the total of the chunks before it. Same result as
    `associative_scan` to round-off.

    Args:
        combine: as in `associative_scan`.
        elems: tuple of `(B, T, n)` tensors; `n` static.
        identity: one number per tensor, the element `e` with `combine(e, x) == x`.
        chunk: the chunk length `L`.
    """
    elems = tuple(elems)
    first = elems[0]
    batch, length = ops.shape(first)[0], ops.shape(first)[1]
    width = first.shape[2]
    count = (length + chunk - 1) // chunk
    blocks = []
    for e, v in zip(elems, identity):
        fill = ops.tile(ops.full_like(e[:, :1], v), (1, chunk, 1))
        e = ops.concatenate([e, fill], axis=1)[:, :count * chunk]
        blocks.append(ops.reshape(e, (batch, count, chunk, width)))
    prefix = [tuple(b[:, :, 0] for b in blocks)]  # (B, C, n) each
    for step in range(1, chunk):
        prefix.append(tuple(combine(prefix[-1], tuple(b[:, :, step] for b in blocks))))
    # the chunks' totals carried by TensorFlow's own scan: a length unknown when the graph
    # is built only happens in a TensorFlow graph, and `tf.scan` bounds its loop
    # (`maximum_iterations`), which XLA needs to compile the loop's gradient (Keras 3.15's
    # `ops.scan` does not, and fails on several sequences of an unknown length)
    import tensorflow as tf

    totals = tuple(ops.transpose(t, (1, 0, 2)) for t in prefix[-1])  # (C, B, n)
    start = tuple(ops.full_like(t[0], v) for t, v in zip(totals, identity))
    upto = tf.scan(lambda acc, total: tuple(combine(acc, total)), totals, initializer=start)
    before = tuple(  # (B, C, 1, n): the total of the chunks before each chunk
        ops.expand_dims(ops.transpose(ops.concatenate([s[None], u[:-1]], axis=0), (1, 0, 2)), 2)
        for s, u in zip(start, upto))
    inner = tuple(ops.stack([p[i] for p in prefix], axis=2) for i in range(len(elems)))
    out = combine(before, inner)  # (B, C, L, n)
    return tuple(ops.reshape(t, (batch, count * chunk, width))[:, :length] for t in out)


def _any_length_scan(combine, elems, identity, method="associative"):
    """The scan of `method`, or `dynamic_scan` when the length is not static."""
    if static_length(elems[0]) is None:
        return dynamic_scan(combine, elems, identity)
    return METHODS[method](combine, elems)


def _combine_real(left, right):
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


def _combine_complex(left, right):
    ar1, ai1, br1, bi1 = left
    ar2, ai2, br2, bi2 = right
    return (
        ar1 * ar2 - ai1 * ai2,
        ar1 * ai2 + ai1 * ar2,
        ar2 * br1 - ai2 * bi1 + br2,
        ar2 * bi1 + ai2 * br1 + bi2,
    )


def _prepare(tensors, mask, go_backwards, identity):
    """Flips for `go_backwards` and puts the identity `(a, b) = (1, 0)` at masked steps."""
    if go_backwards:
        tensors = [ops.flip(t, axis=1) for t in tensors]
        mask = None if mask is None else ops.flip(mask, axis=1)
    if mask is not None:
        m = ops.expand_dims(ops.cast(mask, "bool"), -1)
        tensors = [ops.where(m, t, ops.cast(v, t.dtype)) for t, v in zip(tensors, identity)]
    return tensors


#: The scan of each method (`linear_scan(..., method=)`).
METHODS = {"associative": associative_scan, "chunked": chunked_scan}


def linear_scan(a, b, h0=None, mask=None, go_backwards=False, method="associative"):
    """`h_t = a_t ⊙ h_{t−1} + b_t` for every `t`, as one parallel scan.

    Args:
        a, b: `(B, T, n)` tensors (`T` static or not: see `dynamic_scan`).
        h0: the state before the first step, `(B, n)`; None is zeros.
        mask: optional `(B, T)` boolean mask; at a masked step `h` keeps its previous
            value (`a = 1`, `b = 0`), as Keras's recurrent layers do.
        go_backwards: run from the last step to the first; the outputs are then in
            that (reversed) order, as Keras's `go_backwards` gives them.
        method: `"associative"` (odd/even recursion, `log₂ T` rounds) or `"chunked"`
            (`≈ 2√T` rounds); same numbers to round-off.

    Returns:
        `h`, `(B, T, n)`: the state after each step, in processing order.
    """
    a, b = _prepare([a, b], mask, go_backwards, (1.0, 0.0))
    if h0 is not None:
        first = a[:, :1] * ops.expand_dims(ops.cast(h0, b.dtype), 1) + b[:, :1]
        b = ops.concatenate([first, b[:, 1:]], axis=1)
    return _any_length_scan(_combine_real, (a, b), (1.0, 0.0), method)[1]


def complex_linear_scan(a, b, h0=None, mask=None, go_backwards=False):
    """The complex diagonal recurrence `h_t = a_t ⊙ h_{t−1} + b_t`, in real arithmetic.

    Args:
        a: `(a_re, a_im)`, two `(B, T, n)` tensors.
        b: `(b_re, b_im)`, two `(B, T, n)` tensors.
        h0: `(h_re, h_im)`, two `(B, n)` tensors, or None for zeros.
        mask, go_backwards: as in `linear_scan` (a masked step is `a = 1 + 0i`, `b = 0`).

    Returns:
        `(h_re, h_im)`, two `(B, T, n)` tensors, in processing order.
    """
    ar, ai, br, bi = _prepare([*a, *b], mask, go_backwards, (1.0, 0.0, 0.0, 0.0))
    if h0 is not None:
        hr, hi = (ops.expand_dims(ops.cast(v, br.dtype), 1) for v in h0)
        ar0, ai0 = ar[:, :1], ai[:, :1]
        br = ops.concatenate([ar0 * hr - ai0 * hi + br[:, :1], br[:, 1:]], axis=1)
        bi = ops.concatenate([ar0 * hi + ai0 * hr + bi[:, :1], bi[:, 1:]], axis=1)
    out = _any_length_scan(_combine_complex, (ar, ai, br, bi), (1.0, 0.0, 0.0, 0.0))
    return out[2], out[3]


def _combine_log(left, right):
    la1, lb1 = left
    la2, lb2 = right
    return la1 + la2, ops.logaddexp(la2 + lb1, lb2)


#: Log of the state 0 and of `b = 0` at a masked step, in log-space scans (finite, so
#: that no `-inf − -inf` appears in a gradient).
LOG_ZERO = -1e30


def log_linear_scan(log_a, log_b, h0=None, mask=None, go_backwards=False):
    """`h_t = a_t ⊙ h_{t−1} + b_t` for positive `a`, `b` and `h0 ≥ 0`, in log space.

    The pairs `(log a, log b)` compose as `(la₁ + la₂, logaddexp(la₂ + lb₁, lb₂))`, the
    log-space form of Feng et al. 2024 (after Heinsen 2023): no product of many `a`
    underflows. Arguments as in `linear_scan`, with `log_a`, `log_b` the logs of `a`, `b`.

    Returns:
        `log h`, `(B, T, n)`, in processing order.
    """
    log_a, log_b = _prepare([log_a, log_b], mask, go_backwards, (0.0, LOG_ZERO))
    if h0 is not None:
        h0 = ops.cast(h0, log_b.dtype)
        log_h0 = ops.where(h0 > 0, ops.log(ops.maximum(h0, 1e-30)), LOG_ZERO)
        first = ops.logaddexp(log_a[:, :1] + ops.expand_dims(log_h0, 1), log_b[:, :1])
        log_b = ops.concatenate([first, log_b[:, 1:]], axis=1)
    return _any_length_scan(_combine_log, (log_a, log_b), (0.0, LOG_ZERO))[1]
