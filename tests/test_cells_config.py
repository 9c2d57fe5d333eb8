"""Cell registry, config checks and the `rnnbench cells` listing (no Keras needed)."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from rnnbench.cells import CELLS, CellSpec, cell_names, validate_cell_config
from rnnbench.cells.listing import main as listing_main
from rnnbench.cells.settings import CHRONO_INIT_MIN
from rnnbench.config import CellConfig
from rnnbench.errors import ConfigError

SPEC_CELLS = [
    "rnn",
    "lstm",
    "gru",
    "gru_v1",
    "peephole",
    "nig",
    "nfg",
    "nog",
    "niaf",
    "noaf",
    "np",
    "cifg",
    "fgr",
    "janet",
]


def cfg(**fields):
    return OmegaConf.create({"name": "lstm", "impl": "auto", **fields})


def test_registry_has_every_cell_of_the_spec():
    assert cell_names()[: len(SPEC_CELLS)] == SPEC_CELLS  # later families' cells follow
    assert all(isinstance(s, CellSpec) for s in CELLS.values())
    assert {n for n, s in CELLS.items() if s.has_builtin} == {"rnn", "lstm", "gru", "gru_v1"}
    assert {CELLS[n].family for n in SPEC_CELLS} == {"rnn", "lstm", "gru", "janet"}
    for spec in CELLS.values():
        assert spec.summary and "\n" not in spec.summary and spec.source


def test_param_counts_follow_the_spec_formulas():
    d, n = 3, 5
    gate = d * n + n * n + n
    expected = {
        "rnn": gate,
        "lstm": 4 * gate,
        "np": 4 * gate,
        "gru": 3 * (d * n + n * n) + 4 * n,
        "gru_v1": 3 * gate,
        "peephole": 4 * gate + 3 * n,
        "niaf": 4 * gate + 3 * n,
        "noaf": 4 * gate + 3 * n,
        "nig": 3 * gate + 2 * n,
        "nfg": 3 * gate + 2 * n,
        "nog": 3 * gate + 2 * n,
        "cifg": 3 * gate + 2 * n,
        "fgr": 4 * gate + 3 * n + 9 * n * n,
        "janet": 2 * gate,
    }
    assert {name: CELLS[name].param_count(d, n) for name in SPEC_CELLS} == expected


def test_gates_and_options():
    assert CELLS["nig"].gates == ("forget", "output")
    assert CELLS["nfg"].gates == ("input", "output")
    assert CELLS["nog"].gates == ("input", "forget")
    assert CELLS["gru"].gates == ("update", "reset")
    assert CELLS["janet"].gates == ("forget",)
    assert CELLS["rnn"].options == frozenset()
    assert "forget_bias" not in CELLS["gru"].options
    assert CELLS["nfg"].options == frozenset({"chrono_init"})
    assert CELLS["peephole"].options == frozenset({"forget_bias", "chrono_init"})


@pytest.mark.parametrize(
    "fields, impl",
    [
        ({"name": "lstm"}, "builtin"),
        ({"name": "gru_v1"}, "builtin"),
        ({"name": "peephole"}, "custom"),
        ({"name": "lstm", "impl": "custom"}, "custom"),
        ({"name": "janet", "chrono_init": 100}, "custom"),
        ({"name": "lstm", "impl": "builtin", "forget_bias": 2.0}, "builtin"),
    ],
)
def test_valid_configs_resolve_impl(fields, impl):
    assert validate_cell_config(cfg(**fields)).impl == impl


def test_plain_objects_and_mappings_are_accepted():
    s = validate_cell_config(SimpleNamespace(name="cifg", impl="custom", dropout=0.25))
    assert (s.name, s.impl, s.dropout, s.recurrent_initializer) == (
        "cifg",
        "custom",
        0.25,
        "orthogonal",
    )
    assert validate_cell_config({"name": "rnn"}).impl == "builtin"


def test_unknown_cell_lists_every_cell():
    with pytest.raises(ConfigError) as err:
        validate_cell_config(cfg(name="lstmm"))
    msg = str(err.value)
    assert "lstmm" in msg
    assert all(name in msg for name in SPEC_CELLS)


def test_option_the_cell_does_not_have():
    with pytest.raises(ConfigError, match="'rnn' has no option 'chrono_init'") as err:
        validate_cell_config(cfg(name="rnn", chrono_init=100))
    assert "peephole" in str(err.value)  # lists the cells that accept it
    with pytest.raises(ConfigError, match="'gru' has no option 'forget_bias'"):
        validate_cell_config(cfg(name="gru", forget_bias=1.0))
    with pytest.raises(ConfigError, match="'nfg' has no option 'forget_bias'"):
        validate_cell_config(cfg(name="nfg", forget_bias=1.0))


def test_builtin_impl_for_a_cell_keras_does_not_have():
    with pytest.raises(ConfigError) as err:
        validate_cell_config(cfg(name="peephole", impl="builtin"))
    msg = str(err.value)
    assert "peephole" in msg and "rnn, lstm, gru, gru_v1" in msg


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"recurrent_dropout": 1.5}, "recurrent_dropout"),
        ({"kernel_initializer": "glorot"}, "glorot_uniform"),
        ({"recurrent_initializer": "orthogonall"}, "orthogonal"),
        ({"impl": "cudnn"}, "auto, builtin, custom"),
        ({"chrono_init": 1}, "chrono_init"),
        ({"chrono_init": 10.5}, "chrono_init"),
        ({"forget_bias": 1.0, "chrono_init": 100}, "only one"),
    ],
)
def test_bad_values_raise_config_error(fields, match):
    with pytest.raises(ConfigError, match=match):
        validate_cell_config(cfg(**fields))


@pytest.mark.parametrize(
    "value, allowed",
    [(CHRONO_INIT_MIN - 2, False), (CHRONO_INIT_MIN - 1, False), (CHRONO_INIT_MIN, True),
     (CHRONO_INIT_MIN + 1, True), (1000, True), (True, False), (10.5, False)],
)
def test_chrono_init_bound_is_the_same_in_the_schema_and_the_settings(value, allowed):
    # u ~ Uniform(1, T_max - 1) is a single point at T_max = 2: the first useful T_max is 3.
    assert CHRONO_INIT_MIN == 3
    checks = {
        "settings": lambda: validate_cell_config(cfg(name="peephole", chrono_init=value)),
        "schema": lambda: CellConfig(name="peephole", chrono_init=value),
    }
    for where, check in checks.items():
        if allowed:
            assert check().chrono_init == value, where
        else:
            with pytest.raises(ConfigError, match=r"chrono_init.*T_max >= 3"):
                check()


def test_listing_prints_every_cell(capsys):
    assert listing_main(["--d", "3", "--n", "5"]) == 0
    out = capsys.readouterr().out
    for name in SPEC_CELLS:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert str(CELLS[name].param_count(3, 5)) in line.replace(",", "")
    assert "yes" in out and "no" in out


def test_registry_and_listing_do_not_import_keras():
    code = (
        "import sys; from rnnbench.cells.listing import main; "
        "from rnnbench.cells import validate_cell_config, CELLS; "
        "validate_cell_config({'name': 'fgr'}); main([]); "
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
