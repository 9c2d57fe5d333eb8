"""The cell-family protocol (`rnnbench.cells.families`): its checks, its options at config
time, and a family without a hand-written gradient and with a parallel form, end to end.

A toy family (`toyfam`, cell `toy`: a leaky integrator whose leak depends on the input
only) is written into a temporary folder that joins the package's path, the way a new
family module would sit in `rnnbench/cells/families/`.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from rnnbench.cells import families, registry
from rnnbench.cells.families import CellSpec, Family, FamilyError, Option, check_family
from rnnbench.cells.settings import validate_cell_config, with_option_fields
from rnnbench.errors import ConfigError

FIRST = ("rnn", "lstm", "gru", "janet")

TOY_SPEC = '''
from rnnbench.cells.families import CellSpec, Family, Option

FAMILY = Family(
    name="toyfam",
    summary="leaky integrator",
    kernel=False,
    parallel=True,
    options=(Option("leak_scale", float, 1.0, "scale of the leak gate",
                    check=lambda v: 0 < v <= 1, allowed="a number in (0, 1]"),),
    cells=(CellSpec(name="toy", summary="a = s·σ(Wa x + ba); h' = a⊙h + (1−a)⊙tanh(Wc x + bc)",
                    gates=("leak",), options=frozenset({"leak_scale"}),
                    param_count=lambda d, n: 2 * (d * n + n), source="a test"),),
)
'''

TOY = '''
from keras import ops

from rnnbench.cells.base import SpecCell


class ToyCell(SpecCell):
    family = "toyfam"
    blocks = ("leak", "cell")
    recurrent = False
    scans = 0

    def __init__(self, units, leak_scale=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.leak_scale = leak_scale

    @property
    def trace_names(self):
        return ("leak", "state", "state_tanh")

    def forward(self, z_x, states, w, dm):
        z_a, z_c = ops.split(z_x, 2, axis=-1)
        a = self.leak_scale * ops.sigmoid(z_a)
        g = ops.tanh(z_c)
        h = a * states[0] + (1.0 - a) * g
        return h, [h], {"leak": a, "state": h, "state_tanh": g}

    def scan(self, projected, initial_state, mask, *, return_sequences,
             zero_output_for_mask=False):
        if mask is not None:
            return None
        type(self).scans += 1
        z_a, z_c = ops.split(projected, 2, axis=-1)
        a = self.leak_scale * ops.sigmoid(z_a)
        b = (1.0 - a) * ops.tanh(z_c)
        h, outs = initial_state[0], []
        for t in range(projected.shape[1]):
            h = a[:, t] * h + b[:, t]
            outs.append(h)
        return h, ops.stack(outs, axis=1), [h]


CELL = ToyCell
'''


def _cell(**changes) -> CellSpec:
    fields = dict(name="c", summary="h' = h", gates=(), options=frozenset(),
                  param_count=lambda d, n: 0, source="s")
    return CellSpec(**{**fields, **changes})


# ------------------------------------------------------------ light half (no Keras)
@pytest.mark.parametrize("family, piece", [
    (None, "must define FAMILY"),
    (Family(name="other", summary="s", cells=(_cell(),)), "file name before _spec"),
    (Family(name="fam", summary="s", cells=()), "FAMILY.cells is empty"),
    (Family(name="fam", summary="s", cells=(_cell(options=frozenset({"heads"})),)),
     "does not declare: ['heads']"),
    (Family(name="fam", summary="s", cells=(_cell(),),
            options=(Option("heads", list, None, "doc"),)), "kinds: float, int, bool, str"),
    (Family(name="fam", summary="s", cells=(_cell(),),
            options=(Option("r", float, 2.0, "doc", check=lambda v: v < 1),)),
     "default of option 'r' fails its own check"),
    (Family(name="fam", summary="s", cells=(_cell(gates=("state",)),)), "are not gates"),
    (Family(name="fam", summary="s", cells=(_cell(summary="two\nlines"),)), "one-line summary"),
])
def test_the_light_check_names_the_family_and_the_missing_piece(family, piece):
    with pytest.raises(FamilyError, match="cell family '(fam|other)'") as err:
        check_family(family, "rnnbench.cells.families.fam_spec")
    assert piece in str(err.value)


def test_a_broken_spec_module_fails_when_the_families_load(tmp_path, monkeypatch):
    (tmp_path / "broken_spec.py").write_text("FAMILY = 3\n")
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(tmp_path)])
    try:
        assert families.spec_modules()[:4] == [f"{f}_spec" for f in FIRST]
        with pytest.raises(FamilyError, match="'broken'.*must define FAMILY = Family"):
            families.load_families()
    finally:
        sys.modules.pop("rnnbench.cells.families.broken_spec", None)


def test_the_first_four_families_follow_the_protocol():
    assert registry.FAMILIES[:4] == FIRST
    assert set(FIRST) <= set(registry.kernel_families())
    for name in FIRST:
        assert {s.family for s in registry.FAMILY_SPECS[name].cells} == {name}
    assert registry.OPTIONS["chrono_init"].kind is int
    assert registry.OPTIONS["forget_bias"].kind is float


# -------------------------------------------------------------- the toy family
@pytest.fixture
def toy(tmp_path, monkeypatch):
    """`toyfam` registered as if its two modules were in the package."""
    (tmp_path / "toyfam_spec.py").write_text(textwrap.dedent(TOY_SPEC))
    (tmp_path / "toyfam.py").write_text(textwrap.dedent(TOY))
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(tmp_path)])
    import importlib

    spec_module = importlib.import_module("rnnbench.cells.families.toyfam_spec")
    family = check_family(spec_module.FAMILY, spec_module.__name__)
    monkeypatch.setitem(registry.FAMILY_SPECS, "toyfam", family)
    monkeypatch.setitem(registry.CELLS, "toy", family.cells[0])
    monkeypatch.setitem(registry.OPTIONS, "leak_scale", family.options[0])
    yield family
    for name in ("toyfam_spec", "toyfam"):
        sys.modules.pop(f"rnnbench.cells.families.{name}", None)


def test_options_are_checked_at_config_time_with_the_keys_the_cell_has(toy):
    assert validate_cell_config({"name": "toy"}).options == {"leak_scale": 1.0}
    assert validate_cell_config({"name": "toy", "leak_scale": 1}).options == {"leak_scale": 1.0}
    with pytest.raises(ConfigError) as err:
        validate_cell_config({"name": "toy", "leak_scale": 2.0})
    assert str(err.value).startswith(
        "cell.leak_scale=2.0 is not allowed: cell.leak_scale must be a number in (0, 1] "
        "(option of family toyfam")
    with pytest.raises(ConfigError, match="cell.leak_scale=True is not allowed"):
        validate_cell_config({"name": "toy", "leak_scale": True})
    with pytest.raises(ConfigError, match=r"'gru' has no option 'leak_scale' \(its options: "
                                          r"none\); cells that accept leak_scale: toy"):
        validate_cell_config({"name": "gru", "leak_scale": 0.5})
    with pytest.raises(ConfigError, match=r"'lstm' has no option 'leak_scale' \(its options: "
                                          r"chrono_init, forget_bias\)"):
        validate_cell_config({"name": "lstm", "leak_scale": 0.5})
    with pytest.raises(ConfigError, match=r"'toy' has no option 'forget_bias' \(its options: "
                                          r"leak_scale\)"):
        validate_cell_config({"name": "toy", "forget_bias": 1.0})


def test_bptt_for_a_family_without_a_kernel_is_a_config_error(toy):
    from rnnbench.config import CellConfig

    assert validate_cell_config({"name": "toy"}).gradient == "auto"
    message = r"\(family toyfam\) does not have; families with one: rnn, lstm, gru, janet"
    with pytest.raises(ConfigError, match=message):
        validate_cell_config({"name": "toy", "gradient": "bptt"})
    with pytest.raises(ConfigError, match=message):
        CellConfig(name="toy", gradient="bptt")  # the schema, before the backend loads
    with pytest.raises(ConfigError, match="'gru' has no option 'forget_bias'"):
        CellConfig(name="gru", forget_bias=1.0)


def test_each_option_is_a_typed_key_of_the_cell_node(toy):
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ValidationError

    @dataclass
    class Node:
        name: str = "toy"

    node = OmegaConf.structured(with_option_fields(Node))
    OmegaConf.set_struct(node, True)
    node.merge_with_dotlist(["leak_scale=0.5", "chrono_init=10"])  # no "+" needed
    assert (node.leak_scale, node.chrono_init, node.forget_bias) == (0.5, 10, None)
    with pytest.raises(ValidationError):
        node.merge_with_dotlist(["chrono_init=ten"])
    with pytest.raises(ConfigAttributeError):
        node.merge_with_dotlist(["peephole=true"])  # no family has it


def test_a_family_without_a_kernel_runs_autodiff_and_its_parallel_form(toy):
    from rnnbench.cells import CustomRecurrent, describe_layer

    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
    layer = CustomRecurrent("toy", 4, return_sequences=True, leak_scale=0.5)
    cls = type(layer.cell)
    before = cls.scans
    y = np.asarray(layer(x))
    assert cls.scans == before + 1  # the scan ran
    assert describe_layer(layer)["gradient"] == "autodiff"
    assert layer.count_params() == toy.cells[0].param_count(3, 4)
    # the step loop (a mask makes the scan decline) gives the same numbers
    y_steps = np.asarray(layer(x, mask=np.ones((2, 6), bool)))
    np.testing.assert_allclose(y, y_steps, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.trace(x)["state"], y, rtol=1e-6, atol=1e-6)
    assert set(layer.trace(x)) == {"leak", "state", "state_tanh"}
    back = CustomRecurrent("toy", 4, return_sequences=True, go_backwards=True, leak_scale=0.5)
    back.build(x.shape)
    back.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(back(x, mask=np.ones((2, 6), bool))),
                               rtol=1e-6, atol=1e-6)
    config = layer.get_config()
    assert config["leak_scale"] == 0.5 and config["cell"] == "toy"
    assert CustomRecurrent.from_config(config).cell.leak_scale == 0.5
    with pytest.raises(ValueError, match="families with one: rnn, lstm, gru, janet"):
        CustomRecurrent("toy", 4, gradient="bptt")
    with pytest.raises(ValueError, match=r"'rnn' has no option 'leak_scale'"):
        CustomRecurrent("rnn", 4, leak_scale=0.5)


def test_the_heavy_check_names_the_family_and_the_missing_piece(toy, monkeypatch):
    from rnnbench.cells import variants

    cls = variants.family_cell("toyfam")
    assert cls.__name__ == "ToyCell"
    check = variants._check
    with pytest.raises(FamilyError, match="'toyfam'.*must define CELL"):
        check("toyfam", SimpleNamespace(__name__="m"))
    with pytest.raises(FamilyError, match="'toyfam'.*does not implement forward"):
        base_forward = {"forward": cls.__mro__[1].forward}
        check("toyfam", SimpleNamespace(__name__="m", CELL=type("C", (cls,), base_forward)))
    with pytest.raises(FamilyError, match="'toyfam'.*parallel=True but C.scan is missing"):
        check("toyfam", SimpleNamespace(__name__="m", CELL=type("C", (cls,), {"scan": None})))
    with pytest.raises(FamilyError, match="'toyfam'.*gradient_kernel is set but the family "
                                          "declares kernel=False"):
        check("toyfam", SimpleNamespace(__name__="m",
                                        CELL=type("C", (cls,), {"gradient_kernel": object})))
    monkeypatch.setitem(registry.FAMILY_SPECS, "toyfam", Family(
        name="toyfam", summary="s", cells=toy.cells, options=toy.options, kernel=True,
        parallel=True))
    with pytest.raises(FamilyError, match="'toyfam'.*kernel=True but ToyCell.gradient_kernel is None"):
        check("toyfam", SimpleNamespace(__name__="m", CELL=cls))
    # trace names that are not the registry's gates: refused when the cell is built
    monkeypatch.setitem(registry.CELLS, "toy", CellSpec(**{
        **{f: getattr(toy.cells[0], f) for f in ("name", "summary", "options", "param_count",
                                                 "source", "family")},
        "gates": ("leak", "extra")}))
    with pytest.raises(FamilyError, match=r"'toyfam'.*cell 'toy' traces \('leak', 'state', "
                                          r"'state_tanh'\)"):
        variants.make_cell("toy", 2)


# ------------------------------------------------------ the four moved families
def test_the_forward_step_is_written_once_and_saved_names_are_kept():
    import keras

    from rnnbench.cells import variants
    from rnnbench.cells.bptt_kernels import Kernel

    names = {"rnn": "ElmanCell", "lstm": "LSTMVariantCell", "gru": "GRUVariantCell",
             "janet": "JANETCell"}
    for family, name in names.items():
        cls = variants.family_cell(family)
        assert cls.__name__ == name and getattr(variants, name) is cls
        assert keras.saving.get_registered_object(f"rnnbench>{name}") is cls
        assert issubclass(cls.gradient_kernel, Kernel) and "step" not in vars(cls.gradient_kernel)
        assert "step" not in vars(cls)  # SpecCell.step calls forward
    cell = variants.make_cell("fgr", 3)
    cell.build((None, 2))
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 12)).astype("float32")
    states = [rng.normal(size=(2, 3)).astype("float32"), rng.normal(size=(2, 3)).astype("float32"),
              rng.uniform(size=(2, 9)).astype("float32")]
    kernel = cell.gradient_kernel(cell)
    w = cell.read_step_weights()
    new, h, res = kernel.step(z, states, w, None)
    h2, new2, values = cell.step(z, states)
    np.testing.assert_array_equal(np.asarray(h), np.asarray(h2))
    assert len(res) == len(kernel.res_widths) and len(new) == len(new2) == 3


def test_diagnostics_read_a_family_without_a_recurrent_kernel(toy):
    from rnnbench.cells import CustomRecurrent
    from rnnbench.diagnostics.recurrent import Direction, RecurrentProbe, gate_statistics

    layer = CustomRecurrent("toy", 3, return_sequences=True)
    x = np.random.default_rng(2).normal(size=(2, 5, 4)).astype("float32")
    layer(x)
    probe = RecurrentProbe.__new__(RecurrentProbe)
    probe.directions = [Direction("rnn_0", layer, layer, (0,))]
    assert probe.spectral_norms() == {}  # no U: nothing to read, and no AttributeError
    stats = gate_statistics(layer.trace(x))
    assert set(stats) == {"leak_mean", "leak_saturated", "state_tanh_saturated"}


@pytest.mark.parametrize("cell", ["mingru", "lru", "mlstm"])
def test_a_scan_zeroes_masked_outputs_when_the_layer_asks_as_keras_loop_does(cell):
    """`Bidirectional` sets `zero_output_for_mask` on a layer that returns sequences: the
    parallel form must then give zeros at masked steps, as Keras's step loop does."""
    import numpy as np

    from rnnbench.cells.custom import CustomRecurrent

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 12, 4)).astype("float32")
    mask = np.ones((3, 12), bool)
    mask[0, 9:] = False
    mask[1, 5:] = False
    layers = [CustomRecurrent(cell, 6, return_sequences=True, unroll=unroll, seed=1)
              for unroll in (False, True)]  # the scan, then Keras's step loop
    for layer in layers:
        layer.build(x.shape)
        layer.zero_output_for_mask = True
    layers[1].set_weights(layers[0].get_weights())
    scan, step = (np.asarray(layer(x, mask=mask)) for layer in layers)
    assert np.all(step[0, 9:] == 0) and np.abs(step[0, :9]).max() > 0
    np.testing.assert_allclose(scan, step, rtol=1e-5, atol=1e-6)


def test_an_unknown_cell_key_names_the_options_of_the_cell_asked_for(tmp_path):
    """`cell.peephole=true` for mingru: one message naming mingru's own options and the
    keys every cell has (not every family's options), exit 2, nothing run."""
    from helpers import run_cli

    done = run_cli(["cell=mingru", "cell.peephole=true", "debug=smoke"], tmp_path, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "not an option of cell 'mingru' (its options: log_space, parallel;" in out
    assert "r_min" not in out and "Traceback" not in out
    assert not (tmp_path / "mlflow.db").exists()


def test_the_layer_says_which_form_ran():
    """`describe_layer(...)["form"]`: `scan` when a family's parallel form ran, `step`
    when the loop ran (a family without one, `cell.parallel=false`, `unroll`)."""
    from rnnbench.cells import describe_layer
    from rnnbench.cells.custom import CustomRecurrent

    x = np.random.default_rng(0).normal(size=(2, 7, 3)).astype("float32")
    forms = {}
    for label, layer in {"mingru": CustomRecurrent("mingru", 4),
                         "mingru stepped": CustomRecurrent("mingru", 4, parallel=False),
                         "lstm": CustomRecurrent("lstm", 4, gradient="autodiff"),
                         "lstm bptt": CustomRecurrent("lstm", 4, gradient="bptt")}.items():
        assert describe_layer(layer)["form"] is None
        layer(x)
        forms[label] = describe_layer(layer)["form"]
    assert forms == {"mingru": "scan", "mingru stepped": "step", "lstm": "step",
                     "lstm bptt": "step"}
