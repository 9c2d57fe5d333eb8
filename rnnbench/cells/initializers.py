"""Bias initialisation of fused gate biases: forget-gate bias and chrono initialisation."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnnbench")
class GateBias(keras.initializers.Initializer):
    """Initialises a fused bias made of equal blocks of `units`, one per gate.

    Every block starts from `base`; then the forget-gate block is set to
    `forget_bias` (Jozefowicz et al. 2015), or, with `chrono_init=T_max`, to `log(u)`
    with `u ~ Uniform(1, T_max - 1)` (Tallec & Ollivier 2018), and the input-gate block
    to `-log(u)`. With `coupled=True` (input and forget gates coupled, f = 1 - i, so the
    forget gate is `σ(-a_i)` and has no block) the input-gate block takes the negated
    forget value, which gives the forget gate the same initial value as in an LSTM.

    Args:
        blocks: names of the blocks in layout order, e.g.
            `("input", "forget", "cell", "output")`.
        base: initialiser (name or config) of every block before the changes.
            Defaults to `"zeros"`.
        forget_bias: value of the forget-gate bias, or None to leave the forget
            block as `base` made it. Ignored when `chrono_init` is set.
        chrono_init: `T_max` of the chrono initialisation, or None.
        coupled: whether the forget gate is `1 - input gate`.
        seed: seed of the chrono draw (int or None).

    Example:

    >>> init = GateBias(("input", "forget", "cell", "output"), forget_bias=1.0)
    >>> bias = init((4 * 8,))
    """

    def __init__(
        self,
        blocks,
        base="zeros",
        forget_bias=None,
        chrono_init=None,
        coupled=False,
        seed=None,
    ):
        self.blocks = tuple(blocks)
        self.base = keras.initializers.get(base)
        self.forget_bias = forget_bias
        self.chrono_init = chrono_init
        self.coupled = coupled
        self.seed = seed

    def __call__(self, shape, dtype=None):
        (size,) = shape
        units = size // len(self.blocks)
        parts = ops.split(self.base((size,), dtype=dtype), len(self.blocks))
        parts = dict(zip(self.blocks, parts))
        if self.chrono_init is not None:
            high = max(float(self.chrono_init) - 1.0, 1.0)
            u = keras.random.uniform((units,), 1.0, high, dtype=dtype, seed=self.seed)
            forget = ops.log(u)
        elif self.forget_bias is not None:
            forget = ops.full((units,), self.forget_bias, dtype=dtype)
        else:
            forget = None
        if forget is not None:
            if "forget" in parts:
                parts["forget"] = forget
            if "input" in parts and (self.chrono_init is not None or self.coupled):
                parts["input"] = -forget
        return ops.concatenate([parts[b] for b in self.blocks])

    def get_config(self):
        return {
            "blocks": list(self.blocks),
            "base": keras.initializers.serialize(self.base),
            "forget_bias": self.forget_bias,
            "chrono_init": self.chrono_init,
            "coupled": self.coupled,
            "seed": self.seed,
        }


class ForgetBiasMixin:
    """The fused bias of a cell with a forget gate: `forget_bias`, `chrono_init`.

    For `SpecCell` subclasses that set `forget_bias`, `chrono_init` (and `coupled`, for
    `f = 1 − i`): the fused bias starts as `GateBias` makes it, with a forget bias of
    1.0 when neither option is set.
    """

    coupled = False

    def fused_bias_initializer(self):
        forget_bias = self.forget_bias
        if forget_bias is None and self.chrono_init is None:
            forget_bias = 1.0
        return GateBias(
            self.blocks,
            base=self.bias_initializer,
            forget_bias=forget_bias,
            chrono_init=self.chrono_init,
            coupled=self.coupled,
            seed=self.seed,
        )
