"""The `indrnn` family, light half: the independently recurrent network (Li et al. 2018),
`rnnbench.cells.families.indrnn`."""

from rnnbench.cells.families import CellSpec, Family, Option


def _bound_needs_steps(values):
    if values["u_bound_steps"] is None and (
        values["u_gamma"] is not None or values["u_epsilon"] is not None
    ):
        return ("cell.u_gamma and cell.u_epsilon bound |u| over cell.u_bound_steps steps: "
                "set cell.u_bound_steps (the sequence length T) too, or leave them null")
    return None


FAMILY = Family(
    name="indrnn",
    summary="IndRNN, h' = relu(W x + u⊙h + b), one recurrent weight per unit",
    kernel=False,
    options=(
        Option("u_bound_steps", int, None,
               "T of the bound on |u| (Li et al. 2018, Eq. 4): |u| <= u_gamma^(1/T) "
               "(and >= u_epsilon^(1/T) if set); null: no bound",
               check=lambda v: v >= 1, allowed="null or an integer >= 1"),
        Option("u_gamma", float, None,
               "largest gradient factor over T steps allowed by the bound (null: 2.0)",
               check=lambda v: v > 1, allowed="null or a number > 1"),
        Option("u_epsilon", float, None,
               "smallest gradient factor over T steps (null: no lower bound on |u|)",
               check=lambda v: 0 < v < 1, allowed="null or a number in (0, 1)"),
    ),
    check=_bound_needs_steps,
    cells=(
        CellSpec(
            name="indrnn",
            summary="h' = relu(W x + u⊙h + b)",
            gates=(),
            options=frozenset({"u_bound_steps", "u_gamma", "u_epsilon"}),
            # Input kernel, bias, and the recurrent vector u.
            param_count=lambda d, n: d * n + 2 * n,
            source="Li et al. 2018, Independently Recurrent Neural Network (IndRNN), Eq. (2)",
        ),
    ),
)
