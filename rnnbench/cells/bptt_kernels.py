"""The per-cell half of the hand-written backward pass (`rnnbench.cells.bptt`).

Each cell family with a hand-written gradient defines a `Kernel` subclass in its module
(`rnnbench.cells.families.<family>`) and names it as its cell's `gradient_kernel`. A kernel knows
the family's step split into its linear and element-wise parts: `step` (the forward
step, which is the cell's own `forward`, keeping the values named in `res_names` for the
backward pass), `back` (the per-step gradient: the pre-activations' `dA` and the
previous state's gradient, derived by hand) and `weight_grads` (the batched weight
gradients from the stacked per-step values). Weights are given as a dict of tensors
named as the cell's variables; `name.T` is the transpose the reverse loop multiplies by.

The loops that drive the kernels, and the TensorFlow and JAX wrappers, are in
`rnnbench.cells.bptt`. The helpers below are the kernels' common algebra.
"""

from __future__ import annotations

from keras import ops

from rnnbench.cells.base import drop
from rnnbench.cells.families import FamilyError


def sig_grad(s):
    """`σ'(a)` from `s = σ(a)`."""
    return s * (1.0 - s)


def tanh_grad(t):
    """`tanh'(a)` from `t = tanh(a)`."""
    return 1.0 - t * t


def flat(a):
    """`(T, B, w) -> (T·B, w)`."""
    return ops.reshape(a, (-1, ops.shape(a)[-1]))


def outer_sum(a, b):
    """`Σ_t a_tᵀ·b_t` as one product on `(T·B)`-row matrices."""
    return ops.matmul(ops.transpose(flat(a)), flat(b))


def recurrent_grad(states, da, dm):
    """`dU = Σ_t (h_t ⊙ dm)ᵀ·dA_t`, the gradient of the fused recurrent kernel."""
    return {"recurrent_kernel": outer_sum(drop(states[0], dm), da)}


class Kernel:
    """The hand-written gradient of one built cell.

    Subclasses set `res_names` (the names of the `forward` values kept for the backward
    pass) and implement `back` and `weight_grads`; `res_widths` defaults to `n` per
    residual, `da_width` to the width of the fused blocks, `state_widths` to the cell's
    `state_size`.

    Args:
        cell: the built `SpecCell`.
    """

    res_names: tuple[str, ...] = ()

    def __init__(self, cell):
        self.cell = cell
        self.n = cell.units
        sizes = cell.state_size
        self.state_widths = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
        self.res_widths = [self.n] * len(self.res_names)
        self.da_width = len(cell.blocks) * self.n

    def step(self, zx, states, w, dm):
        """Forward step: `(new_states, h', residuals)`, from the cell's `forward`."""
        h_new, new_states, values = self.cell.forward(zx, states, w, dm)
        return list(new_states), h_new, [values[k] for k in self.res_names]

    def back(self, d_new, states, res, w, dm):
        """`(dA, d_previous_states)` of one step, from the gradients of its new states."""
        raise NotImplementedError

    def weight_grads(self, states, res, da, w, dm):
        """The weight gradients (by variable name) from the stacked `(T, B, ·)` values."""
        raise NotImplementedError


def kernel_for(cell):
    """The gradient kernel of a built `SpecCell` (its class's `gradient_kernel`).

    Raises:
        FamilyError: the cell's family has no hand-written gradient.
    """
    kernel = getattr(type(cell), "gradient_kernel", None)
    if kernel is None:
        raise FamilyError(
            f"cell family {getattr(cell, 'family', type(cell).__name__)!r} has no "
            "hand-written gradient (cell.gradient=bptt); use cell.gradient=auto or autodiff"
        )
    return kernel(cell)
