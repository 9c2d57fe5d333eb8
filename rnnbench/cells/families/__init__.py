"""Cell families: the one protocol every family of rnnbench's own cells follows.

A cell family is one cell class (and, if it has one, one hand-written gradient) that
makes one or more cells of the registry (`lstm` makes `lstm`, `peephole` and the
Greff et al. variants). Each family is two modules of this package, both named after it:

- `<family>_spec.py`, the light half (no Keras: the CLI and the config checks read it
  before the backend is chosen). It defines `FAMILY = Family(...)`: the family's
  cells (their registry entries, `CellSpec`), its options (`Option`), whether it has a
  hand-written gradient (`kernel=True`) and a parallel-over-time form (`parallel=True`).
- `<family>.py`, the heavy half (Keras), loaded by name the first time a cell of the
  family is built (and when `import keras` registers rnnbench's classes). It holds the
  family's equations in its docstring and defines `CELL`: the cell class, a subclass of
  `rnnbench.cells.base.SpecCell`, whose class attribute `gradient_kernel` is the hand-written
  gradient (a subclass of `rnnbench.cells.bptt_kernels.Kernel`) or None.

Nothing else names the family: `rnnbench.cells.registry` finds every `*_spec.py` of this
package, `rnnbench.cells.variants` loads `<family>.py` (or `Family.module`). Checks:
the light half when the registry loads (`load_families`: every field, every cell, every
option), the heavy half when it is loaded (`rnnbench.cells.variants.family_cell`).
Any missing or inconsistent piece raises `FamilyError` naming the family and the piece.

Light half: `<family>_spec.py`
------------------------------

    FAMILY = Family(
        name="lru",                                    # == the file name before _spec
        summary="diagonal linear recurrence, h' = λ⊙h + γ⊙(B x)",
        options=(
            Option("r_min", float, 0.0, "smallest |λ| at initialisation",
                   check=lambda v: 0 <= v < 1, allowed="a number in [0, 1)"),
            Option("r_max", float, 0.99, "largest |λ| at initialisation",
                   check=lambda v: 0 < v < 1, allowed="a number in (0, 1)"),
        ),
        check=lambda o: "cell.r_min must be below cell.r_max"
                        if o["r_min"] >= o["r_max"] else None,
        kernel=False,          # no hand-written gradient: gradient=auto is autodiff
        parallel=True,         # CELL implements scan(): all steps at once
        cells=(
            CellSpec(name="lru", summary="...", gates=(), options=frozenset({"r_min", "r_max"}),
                     param_count=lambda d, n: ..., source="Orvieto et al. 2023"),
        ),
    )

- `Option(name, kind, default, doc, check=None, allowed="", choices=())`: a key of the
  `cell` config node (`cell.r_min=0.5`). `kind` is `float`, `int`, `bool` or `str`
  (an int is accepted for a float; a bool never for a number); `choices` lists the
  values of a `str` option; `check(value) -> bool` is the range rule and `allowed` says
  it in words (the error reads `cell.r_min=1.5 is not allowed: cell.r_min must be a
  number in [0, 1) (option of family lru)`). `default` is what the cell gets when the
  config leaves the key null; None is allowed (the cell then decides, e.g. forget_bias).
  The config schema (`rnnbench.config.CellConfig`) gets one typed, null-by-default key
  per option name, so Hydra takes `cell.r_min=0.5` without `+`. Two families may share
  an option name (`forget_bias`: lstm and janet) only with the same kind.
- `Family.check(values) -> str | None`: a rule between options (values: every option
  of the cell, defaults filled in); the message is raised as a `ConfigError`.
- `CellSpec` (one per cell): `name` (unique over all families; `conf/cell/<name>.yaml`
  names it), `summary` (the equations on one line), `gates` (names of the gate
  activations the cell's trace reports, see below), `options` (the names, among the
  family's, that this cell accepts), `param_count(d, n)` (written from the equations,
  independently of the code), `source`, `variant` (constructor arguments of `CELL` that
  make this cell), `builtin` (the Keras layer, or None). `family` is filled in.
- A new cell of an existing family is one more `CellSpec` here and its YAML.

Config-time rules (`rnnbench.cells.settings`): an option set for a cell that does not
accept it is a `ConfigError` naming the cell's options; `cell.gradient=bptt` for a
family with `kernel=False` is a `ConfigError` naming the families that have one;
`cell.gradient=auto` is the hand-written gradient where the family has one, autodiff
where it does not.

Heavy half: `<family>.py`
-------------------------

    from rnnbench.cells.base import SpecCell, register

    @register                      # Keras name rnnbench>LRUCell: keep it once released
    class LRUCell(SpecCell):
        family = "lru"
        blocks = ("re", "im")      # blocks of the fused input kernel (d × k·n) and bias
        recurrent = False          # no fused recurrent kernel U (n × k·n) is created
        gradient_kernel = None     # or a Kernel subclass (hand-written gradient); NOT
                                   # `kernel`, which is the input kernel's weight

        def __init__(self, units, r_min=0.0, r_max=0.99, **kwargs):   # its options
            ...
        def build_extra(self): ...        # weights beyond kernel / recurrent_kernel / bias
        @property
        def trace_names(self): return (*gates, "state", "state_tanh")
        def forward(self, z_x, states, w, dm):
            ...                           # THE step, written once
            return h_new, new_states, values
        def scan(self, projected, initial_state, mask, *, return_sequences,
                 zero_output_for_mask=False): ...  # optional

    CELL = LRUCell

- `forward(z_x, states, w, dm) -> (h_new, new_states, values)` is the one forward step:
  `z_x` the projected input of the step `(B, k·n)` (bias included), `states` the list of
  states (`states[0]` is `h`, the output), `w` the step's weights by variable name
  (`read_step_weights()`; read only `w`, never a variable, so that it also runs inside
  the hand-written loop and under `jax.lax.scan`), `dm` the recurrent dropout mask
  `(B, n)` or None (apply it to `h` where `h` enters a product: `h if dm is None else
  h * dm`). `values` maps names to `(B, n)` tensors: every name of `trace_names`, plus
  what the kernel keeps for its backward pass. The base's `step` calls `forward`; the
  kernel's `step` too: the step is never written twice.
- Gates for the diagnostics: `trace_names` is the cell spec's `gates`, then `"state"`
  (`h'`, the per-step state the trace and the gradient-flow probe read) and
  `"state_tanh"` (the value whose |·| > 0.95 counts as saturated: tanh(c'), the tanh
  candidate, or tanh(h') for a family without one). A gate is a value in [0, 1] (its
  mean and the fraction outside [0.05, 0.95] are logged); a family whose gate is not
  (an exponential gate) reports its normalised form or leaves it out of `gates`.
- State: `state_size` (set in `__init__`) lists the widths of the states, `h` first.
  The layer gives a zero initial state; `stateful`, masks and `go_backwards` are the
  layer's (Keras's loop), so a cell needs nothing for them.
- `gradient_kernel = SomeKernel` (subclass of `rnnbench.cells.bptt_kernels.Kernel`) when
  `Family.kernel` is True: `res_names` (the `values` kept for the backward pass),
  `back(d_new, states, res, w, dm) -> (dA, d_prev_states)` and
  `weight_grads(states, res, dA, w, dm) -> {weight name: gradient}` (see
  `docs/gradient.md`); its forward is the cell's `forward`.
- `scan(projected, initial_state, mask, *, return_sequences, zero_output_for_mask)` when
  `Family.parallel` is True: every step at once (e.g. an associative scan of
  `h' = a⊙h + b`), with autodiff as gradient; returns `(last_output, outputs (B, T, n),
  final_states)` in the time order of `projected` (the layer flips for `go_backwards`),
  or None to decline (a mask it cannot honour, a backend it does not support): the layer
  then runs the step loop. A masked step keeps the state; its output repeats the one
  before it, or is zero with `zero_output_for_mask` (what Keras's loop does, and what
  `Bidirectional` asks for).
  The trace always runs `forward` step by step.
- Options reach `CELL(units, **variant, **options, **SpecCell arguments)`: every option
  the cell accepts, with its default where the config left it null. Put them in
  `get_config`.

Tests of a family: its equations against a NumPy reference (`tests/test_cells_equations.py`
style), its kernel against autodiff (`tests/test_cells_bptt.py` style) and its options'
errors, in the family's own test file.
"""

from __future__ import annotations

import importlib
import keyword
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from numbers import Real
from typing import Any

from rnnbench.errors import ConfigError, RnnbenchError

#: Kinds an option may have (the config schema types it as Optional[kind]).
OPTION_KINDS = (float, int, bool, str)

#: Trace names every cell reports besides its gates.
STATE_TRACES = ("state", "state_tanh")

#: The families written first, listed first (the others follow by name).
FIRST_FAMILIES = ("rnn", "lstm", "gru", "janet")


class FamilyError(RnnbenchError):
    """A family module does not follow the protocol (names the family and the piece)."""


def gate_weights(d: int, n: int, k: int) -> int:
    """Weights of `k` gates (or candidate blocks) with input kernel, recurrent kernel, bias."""
    return k * (d * n + n * n + n)


@dataclass(frozen=True)
class Option:
    """One option of a family: a typed, checked key of the `cell` config node.

    Args:
        name: the key (`cell.<name>`).
        kind: `float`, `int`, `bool` or `str`.
        default: what the cell gets when the config leaves it null (None allowed).
        doc: one line saying what it does.
        check: `check(value) -> bool`, the range rule, or None.
        allowed: the rule in words, for the error message.
        choices: the values of a `str` option (empty: any string `check` allows).
    """

    name: str
    kind: type
    default: Any
    doc: str
    check: Callable[[Any], bool] | None = field(default=None, compare=False)
    allowed: str = ""
    choices: tuple[str, ...] = ()

    def parse(self, value: Any, family: str) -> Any:
        """`value` checked and converted to `kind`, or `ConfigError` naming the key."""
        key = f"cell.{self.name}"
        rule = self.allowed or (f"one of {', '.join(self.choices)}" if self.choices
                                else f"a {self.kind.__name__}")
        ok = True
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind is float:
            ok = isinstance(value, Real) and not isinstance(value, bool)
            value = float(value) if ok else value
            ok = ok and value == value and abs(value) != float("inf")
        else:
            ok = isinstance(value, str) and (not self.choices or value in self.choices)
        if ok and self.check is not None:
            ok = bool(self.check(value))
        if not ok:
            raise ConfigError(f"{key}={value!r} is not allowed: {key} must be {rule} "
                              f"(option of family {family}: {self.doc})")
        return value


@dataclass(frozen=True)
class BuiltinLayer:
    """The Keras layer that runs a cell with `impl=builtin`.

    Args:
        layer: class name in `keras.layers` (`"SimpleRNN"`, `"LSTM"`, `"GRU"`).
        args: constructor arguments that make it this cell (`reset_after` tells `gru`
            from `gru_v1`); a built layer whose cell has these values is this cell.
        gate_blocks: the order of the blocks of the layer's fused bias, for cells whose
            forget-gate options (`forget_bias`, `chrono_init`) rewrite that bias.
    """

    layer: str
    args: Mapping[str, Any] = field(default_factory=dict, hash=False)
    gate_blocks: tuple[str, ...] = ()


@dataclass(frozen=True)
class CellSpec:
    """What the spec says about one recurrent cell, and how each implementation builds it.

    Args:
        name: registry name, used as `cell.name` in configs.
        summary: the cell's step equations on one line.
        gates: names of the gate activations the cell's trace reports (`"input"`,
            `"forget"`, `"output"`, `"update"`, `"reset"`...). A gate tied to another one
            (`cifg`: f = 1 - i) is listed.
        options: the family's options this cell accepts (`forget_bias`, `chrono_init`...).
        param_count: `param_count(d, n) -> int`, the number of weights the spec's
            equations need for input size `d` and `n` units.
        source: the paper (or convention) the equations come from.
        builtin: the Keras layer for `impl=builtin`, or None where Keras has none.
        variant: arguments of the family's cell class that make it this cell (what a
            Greff et al. variant removes from `peephole`, `reset_after` of a GRU).
        family: the family's name (filled in from the `Family` that lists the cell).
    """

    name: str
    summary: str
    gates: tuple[str, ...]
    options: frozenset[str]
    param_count: Callable[[int, int], int]
    source: str
    builtin: BuiltinLayer | None = None
    variant: Mapping[str, Any] = field(default_factory=dict, hash=False)
    family: str = ""

    @property
    def has_builtin(self) -> bool:
        """Whether Keras has a built-in layer for it (`impl=builtin`)."""
        return self.builtin is not None


@dataclass(frozen=True)
class Family:
    """The light half of a cell family (see the module docstring).

    Args:
        name: the family's name (its modules are `<name>_spec.py` and `<name>.py`).
        summary: one line.
        cells: its cells, one `CellSpec` each.
        options: its options.
        kernel: whether `CELL.gradient_kernel` is a hand-written gradient (`gradient=bptt`).
        parallel: whether `CELL` has a parallel-over-time form (`scan`).
        check: a rule between options, `check(values) -> message or None`.
        module: the heavy module; empty means `rnnbench.cells.families.<name>`.
    """

    name: str
    summary: str
    cells: tuple[CellSpec, ...]
    options: tuple[Option, ...] = ()
    kernel: bool = False
    parallel: bool = False
    check: Callable[[Mapping[str, Any]], str | None] | None = field(default=None, compare=False)
    module: str = ""

    @property
    def module_name(self) -> str:
        return self.module or f"{__name__}.{self.name}"

    @property
    def option_map(self) -> dict[str, Option]:
        return {o.name: o for o in self.options}


def _fail(family: str, piece: str) -> FamilyError:
    return FamilyError(f"cell family {family!r}: {piece} (see rnnbench/cells/families/__init__.py)")


def check_family(family: Any, module: str) -> Family:
    """The light checks of one `FAMILY`; returns it with each cell's `family` filled in."""
    where = module.rpartition(".")[2].removesuffix("_spec")
    if not isinstance(family, Family):
        raise _fail(where, f"{module} must define FAMILY = Family(...), found {family!r}")
    name = family.name
    if name != where:
        raise _fail(name, f"FAMILY.name {name!r} must be the file name before _spec ({where})")
    if not isinstance(family.kernel, bool) or not isinstance(family.parallel, bool):
        raise _fail(name, "FAMILY.kernel and FAMILY.parallel must be True or False")
    names = [o.name for o in family.options]
    for o in family.options:
        if not isinstance(o, Option) or not o.name.isidentifier() or keyword.iskeyword(o.name):
            raise _fail(name, f"option {o!r} is not an Option with an identifier as name")
        if o.kind not in OPTION_KINDS:
            raise _fail(name, f"option {o.name!r} has kind {o.kind!r}; kinds: float, int, bool, str")
        if not o.doc:
            raise _fail(name, f"option {o.name!r} has no doc line")
        if o.default is not None:
            try:
                o.parse(o.default, name)
            except ConfigError as exc:
                raise _fail(name, f"the default of option {o.name!r} fails its own check: {exc}")
    if len(set(names)) != len(names):
        raise _fail(name, f"an option is declared twice: {names}")
    if not family.cells:
        raise _fail(name, "FAMILY.cells is empty (a family makes at least one cell)")
    cells = []
    for spec in family.cells:
        if not isinstance(spec, CellSpec):
            raise _fail(name, f"FAMILY.cells holds {spec!r}, not a CellSpec")
        if spec.family not in ("", name):
            raise _fail(name, f"cell {spec.name!r} says family {spec.family!r}")
        unknown = set(spec.options) - set(names)
        if unknown:
            raise _fail(name, f"cell {spec.name!r} accepts options the family does not declare: "
                              f"{sorted(unknown)} (declared: {names or 'none'})")
        if not spec.summary or "\n" in spec.summary or not spec.source:
            raise _fail(name, f"cell {spec.name!r} needs a one-line summary and a source")
        if set(spec.gates) & set(STATE_TRACES):
            raise _fail(name, f"cell {spec.name!r}: {STATE_TRACES} are not gates")
        if not callable(spec.param_count):
            raise _fail(name, f"cell {spec.name!r} has no param_count(d, n)")
        cells.append(replace(spec, family=name))
    return replace(family, cells=tuple(cells))


def spec_modules() -> list[str]:
    """The `*_spec` modules of this package, the first families first, then by name."""
    found = [m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_spec")]
    first = [f"{f}_spec" for f in FIRST_FAMILIES if f"{f}_spec" in found]
    return first + sorted(set(found) - set(first))


def load_families() -> dict[str, Family]:
    """Every family of this package, checked, by name.

    Raises:
        FamilyError: a family breaks the protocol, two families claim a cell name, or
            declare one option name with two kinds.
    """
    families: dict[str, Family] = {}
    owner: dict[str, str] = {}
    kinds: dict[str, tuple[type, str]] = {}
    for short in spec_modules():
        module = f"{__name__}.{short}"
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise _fail(short[: -len("_spec")], f"{module} does not import: {exc}") from exc
        family = check_family(getattr(mod, "FAMILY", None), module)
        for spec in family.cells:
            if spec.name in owner:
                raise _fail(family.name, f"cell {spec.name!r} is already a cell of family "
                                         f"{owner[spec.name]!r}")
            owner[spec.name] = family.name
        for o in family.options:
            kind, first = kinds.setdefault(o.name, (o.kind, family.name))
            if kind is not o.kind:
                raise _fail(family.name, f"option {o.name!r} is a {o.kind.__name__} here but "
                                         f"a {kind.__name__} in family {first!r}")
        families[family.name] = family
    return families
