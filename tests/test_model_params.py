"""`model.params`: each cell's width solved so that the model (or its recurrent layers)
has the asked number of weights, within 2%; the record and the refusals."""

from __future__ import annotations

import re

import pytest

from helpers import compose_run, run_cli, store_runs, tiny_task_run
from rnnbench.cells.registry import CELLS
from rnnbench.errors import ConfigError

TASKS = {  # a seq2one time series and a language task (embedding frontend, seq2seq)
    "co2": ["task.limit=32"],
    "lm_char": ["task.corpus=lee", "task.limit=12", "task.bptt=20"],
}


def sized(task: str, *extra: str):
    return compose_run([f"task={task}", *TASKS[task], "debug=smoke", "model.units=null",
                        *extra])


@pytest.fixture(scope="module")
def prepared():
    """Each task of TASKS with its (tiny) data, prepared once."""
    from rnnbench.tasks import get_task

    out = {}
    for name in TASKS:
        task = get_task(sized(name, "model.params=1000").task)
        out[name] = (task, task.prepare(32, 0))
    return out


def built(cfg, prepared, name):
    from rnnbench.model import build_model, describe_model

    task, data = prepared[name]
    model = build_model(cfg, task, data)
    what = describe_model(model)
    what["width"] = model.get_layer("rnn_0").output.shape[-1]  # the units really built
    return what


def count_at(cfg, prepared, name, units, of):
    """The weights ``of`` names of the same model built with ``model.units=units``."""
    from rnnbench.model import build_model, describe_model

    task, data = prepared[name]
    plain = compose_run([f"task={name}", *TASKS[name], "debug=smoke", f"cell={cfg.cell.name}",
                         f"model.units={units}", f"model.layers={cfg.model.layers}"])
    what = describe_model(build_model(plain, task, data))
    return what["params_count" if of == "all" else "recurrent_params"]


def check_nearest(cfg, prepared, name, target, what, neighbours=True):
    """The solved width's real count is within 2% of target, and (``neighbours``) the
    counts of the models one unit narrower and wider are not nearer."""
    of = cfg.model.params_of
    real = what["params_count" if of == "all" else "recurrent_params"]
    n = what["width"]
    assert what["sizing"] == {"target": target, "of": of, "units": n, "count": real,
                              "error": round((real - target) / target, 6)}
    assert abs(real - target) <= 0.02 * target, (cfg.cell.name, real)
    for other in (n - 1, n + 1) if neighbours else ():
        assert abs(count_at(cfg, prepared, name, other, of) - target) >= abs(real - target)
    return n


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_cell_gets_within_two_percent_of_all_weights(task, prepared):
    target = 60000
    widths = {}
    for cell in CELLS:
        cfg = sized(task, f"cell={cell}", f"model.params={target}")
        widths[cell] = check_nearest(cfg, prepared, task, target, built(cfg, prepared, task),
                                     neighbours=cell in ("gru", "fgr"))
    # fewer weights per unit, more units: the simple RNN is widest, fgr narrowest
    assert widths["rnn"] > widths["gru"] > widths["lstm"] > widths["fgr"]


@pytest.mark.slow
def test_recurrent_weights_of_a_stack_are_solved_for_every_cell(prepared):
    target = 40000
    for cell in CELLS:
        cfg = sized("co2", f"cell={cell}", f"model.params={target}",
                    "model.params_of=recurrent", "model.layers=2")
        what = built(cfg, prepared, "co2")
        check_nearest(cfg, prepared, "co2", target, what, neighbours=cell in ("gru", "fgr"))
        assert what["params_count"] > what["recurrent_params"]  # the head is not counted


def test_the_nearest_width_is_chosen_and_a_gap_is_refused():
    from rnnbench.sizing import solve

    quadratic = lambda n: 4 * (n * n + 2 * n)  # noqa: E731
    # 30 units give 3840 weights, 31 give 4092: the nearer one, below or above
    assert (solve(quadratic, 3900, "all", "t").units, solve(quadratic, 4050, "all", "t").units
            ) == (30, 31)
    assert solve(quadratic, 4050, "all", "t").count == 4092
    with pytest.raises(ConfigError, match=r"no integer width comes within 2% of 1,500 "
                                          r"weights: 1 units give 1,000 and 2 units give 2,000"):
        solve(lambda n: 1000 * n, 1500, "all", "model.params=1500")
    with pytest.raises(ConfigError, match="too large: even 8 units"):
        solve(lambda n: n, 100, "all", "model.params=100", max_units=8)


def test_widths_a_cell_refuses_are_skipped():
    from rnnbench.sizing import fitted_count, solve

    built = []

    def count_at(n):  # like slstm with cell.heads=4: the heads must divide the width
        built.append(n)
        if n % 4:
            raise ConfigError(f"cell.heads=4 must divide the number of units ({n})")
        return 4 * (3 * n + n * n // 4 + n)

    count = fitted_count(count_at, "t")
    assert built == list(range(1, 21))  # five widths built: 4, 8, 12, 16, 20
    got = solve(count, 4072, "all", "t")  # 56 units: 4032, 57 would give 4160
    assert (got.units, got.count) == (56, 4032) == (56, count_at(56))
    with pytest.raises(ConfigError, match="56 units give 4,032 and 60 units give 4,560"):
        solve(count, 4300, "all", "t")
    with pytest.raises(ConfigError, match=r"could not be built .*\(cell.heads=4 must divide"):
        fitted_count(lambda n: count_at(n * 4 + 1), "t")


def test_a_count_that_differs_at_one_width_is_fitted_from_the_others():
    """The LRU's skip term is a vector where the width equals the input's (d = 2 on the
    adding problem) and a d x n matrix elsewhere: the count is quadratic but for n = d."""
    from rnnbench.cells.families.lru_spec import param_count
    from rnnbench.sizing import fitted_count, solve

    count = fitted_count(lambda n: param_count(2, n) + n + 1, "t")  # + a Dense(1) head
    assert count(2) != param_count(2, 2) + 3  # the one width the polynomial leaves out
    got = solve(count, 17217, "all", "t")
    assert got.count == param_count(2, got.units) + got.units + 1
    assert abs(got.count - 17217) / 17217 < 0.02
    with pytest.raises(ConfigError, match="not a polynomial of degree two"):
        fitted_count(lambda n: n ** 3, "t")


def test_the_lru_is_sized_on_the_adding_problem():
    from rnnbench.model import build_model
    from rnnbench.tasks import get_task

    cfg = compose_run(["task=adding", "task.n_train=64", "task.n_val=32", "task.n_test=32",
                       "debug=smoke", "model.units=null", "cell=lru", "model.params=17217"])
    task = get_task(cfg.task)
    model = build_model(cfg, task, task.prepare(32, 0))
    assert abs(model.count_params() - 17217) / 17217 < 0.02
    assert model.rnnbench_sizing.count == model.count_params()


def test_a_target_under_one_unit_is_refused_with_the_least_that_fits(prepared):
    from rnnbench.model import build_model

    task, data = prepared["lm_char"]
    with pytest.raises(ConfigError) as err:
        build_model(sized("lm_char", "cell=lstm", "model.params=500"), task, data)
    msg = str(err.value)
    assert "model.params=500" in msg and "cell=lstm on task=lm_char" in msg
    assert "too small" in msg and "model.params >= " in msg
    least = int(re.search(r"model\.params >= (\d[\d,]*\d)", msg).group(1).replace(",", ""))
    # the least target the message names is accepted, and one weight less is not
    build_model(sized("lm_char", "cell=lstm", f"model.params={least}"), task, data)
    with pytest.raises(ConfigError, match="too small"):
        build_model(sized("lm_char", "cell=lstm", f"model.params={least - 1}"), task, data)


def test_units_stay_as_they_were_without_params():
    assert compose_run([]).model.units == 64
    assert compose_run(["debug=smoke"]).model.units == 16
    assert compose_run(["model.units=100"]).model.params is None


def test_units_together_with_params_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="model.units=null"):
        compose_run(["debug=smoke", "model.params=20000"])  # smoke sets units: 16
    done = run_cli(["model.units=32", "model.params=20000"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "model.params=20000 and model.units=32 are both set" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.slow
def test_the_run_records_the_target_the_mode_and_the_solved_width(tmp_path, prepared):
    db = tmp_path / "mlflow.db"
    cfg, result = tiny_task_run("co2", {"csv": "", "wavs": ""}, db, "cell=gru", "model.units=null",
                                "model.params=3000", "model.params_of=recurrent",
                                "diagnostics.enabled=false", "tracking.log_model=false")
    (run,) = store_runs(tmp_path, f"sqlite:///{db}")
    p, m = run.data.params, run.data.metrics
    assert (p["model.params"], p["model.params_of"]) == ("3000", "recurrent")
    n = int(p["model.units"])
    assert p["units"] == str(n)
    d = prepared["co2"][1].n_features

    def gru(n):  # Keras's GRU: the spec's count and a second bias of n for two gates
        return CELLS["gru"].param_count(d, n) + 2 * n

    assert m["recurrent_params"] == gru(n)
    assert abs(gru(n) - 3000) <= min(abs(gru(n - 1) - 3000), abs(gru(n + 1) - 3000))
    assert abs(m["recurrent_params"] - 3000) <= 60
    k = prepared["co2"][1].n_outputs
    assert m["params_count"] == gru(n) + (n + 1) * k  # and the head: a dense layer


def test_the_sized_model_starts_from_the_weights_of_a_model_given_that_width(prepared):
    import keras
    import numpy as np

    from rnnbench.model import build_model

    task, data = prepared["co2"]
    keras.utils.set_random_seed(3)
    sized_model = build_model(sized("co2", "cell=lstm", "model.params=4900"), task, data)
    n = sized_model.get_layer("rnn_0").output.shape[-1]
    keras.utils.set_random_seed(3)
    plain = build_model(compose_run(["task=co2", *TASKS["co2"], "debug=smoke", "cell=lstm",
                                     f"model.units={n}"]), task, data)
    got, want = sized_model.get_weights(), plain.get_weights()
    assert [w.shape for w in got] == [w.shape for w in want]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_a_cell_whose_heads_must_divide_the_width_gets_a_width_it_accepts(prepared):
    from rnnbench.model import build_model, describe_model

    task, data = prepared["co2"]
    cfg = sized("co2", "cell=slstm", "cell.heads=4", "model.params=21000")
    what = describe_model(build_model(cfg, task, data))
    assert what["sizing"]["units"] % 4 == 0
    assert abs(what["params_count"] - 21000) <= 0.02 * 21000
    with pytest.raises(ConfigError, match="132 units give 19,544 and 136 units give 20,680"):
        build_model(sized("co2", "cell=slstm", "cell.heads=4", "model.params=20000"), task, data)


def test_an_input_projection_is_one_linear_layer_before_the_cell_and_counts(tmp_path):
    """model.input_projection: the same Dense encoder for every cell. minGRU's weights grow
    as input x width, so on the adding problem's 2 features a weight budget means
    thousands of units; behind a 64-unit projection, a few hundred."""
    from rnnbench.model import build_model
    from rnnbench.provenance import config_hash
    from rnnbench.tasks import get_task

    base = ["task=adding", "task.n_train=64", "task.n_val=32", "task.n_test=32",
            "debug=smoke", "model.units=null", "cell=mingru", "model.params=33000"]
    cfg = compose_run([*base, "model.input_projection=64"])
    task = get_task(cfg.task)
    data = task.prepare(32, 0)
    model = build_model(cfg, task, data)
    proj = model.get_layer("input_projection")
    assert proj.units == 64 and proj.activation.__name__ == "linear"
    assert model.layers[model.layers.index(proj) + 1].name == "rnn_0"
    assert abs(model.count_params() - 33000) / 33000 < 0.02  # the projection counts
    bare = build_model(compose_run(base), task, data)
    assert model.rnnbench_sizing.units < 400 < 2000 < bare.rnnbench_sizing.units
    # unset, the key leaves the config hash of every earlier run as it was
    assert config_hash(compose_run(base)) == config_hash(
        compose_run([*base, "model.input_projection=null"]))
    assert config_hash(cfg) != config_hash(compose_run(base))
    with pytest.raises(ConfigError, match="model.input_projection"):
        compose_run([*base, "model.input_projection=0"])
    # a real run with it, diagnostics on: the gradient probe starts after the projection
    proc = run_cli(["task=adding", "task.n_train=64", "task.n_val=32", "task.n_test=32",
                    "debug=smoke", "cell=mingru", "model.input_projection=8",
                    "train.verbose=0"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = store_runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.input_projection"] == "8"
    assert any(k.startswith("grad_flow/") for k in run.data.metrics), sorted(run.data.metrics)
