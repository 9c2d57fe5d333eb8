"""The config hash covers what can change a run's numbers, and nothing else."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from rnnbench.cli import CONF_DIR
from rnnbench.cli.schema import register_configs
from rnnbench.config import to_object
from rnnbench.provenance import config_hash


def hashed(*overrides: str) -> str:
    register_configs()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return config_hash(to_object(compose("config", overrides=list(overrides))))


def test_settings_that_cannot_change_a_result_leave_the_hash_alone():
    base = hashed()
    assert hashed("train.verbose=0") == base
    assert hashed("tracking.uri=sqlite:///elsewhere.db", "tracking.experiment=x",
                  "tracking.log_model=false") == base
    assert hashed("objective.metric=mae") == base  # what a sweeper reads, not the run


def test_settings_that_change_a_result_change_the_hash():
    base = hashed()
    changed = {hashed(o) for o in ("model.units=65", "seed=1", "optimizer.lr=0.002",
                                   "cell=gru", "task=sunspots", "train.epochs=31")}
    assert base not in changed and len(changed) == 6


def test_keys_added_later_leave_the_hash_of_a_config_that_does_not_use_them_alone():
    # model.params/params_of and the options of the newer cell families did not exist when
    # earlier runs were recorded: while unset they must not change the hash (a multirun
    # skips finished configs by it). The hashes below are those of d9eff82, before them.
    assert hashed() == "8d53e171eb317d1f"
    assert hashed("cell=gru") == "3a8a63e3e8a0ba6c"
    assert hashed("model.units=64") == hashed()
    sized = hashed("model.units=null", "model.params=20000")
    assert sized != hashed() and sized != hashed("model.units=null", "model.params=20001")
    assert hashed("cell=lru", "cell.r_min=0.5") != hashed("cell=lru")


def _repo(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "rnnbench").mkdir()
    (tmp_path / "rnnbench" / "a.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    return tmp_path


def test_untracked_files_under_the_code_or_config_make_the_tree_dirty(tmp_path):
    from rnnbench.provenance import is_dirty

    root = _repo(tmp_path)
    assert not is_dirty(root)
    (root / "notes.txt").write_text("elsewhere: does not change a result\n")
    assert not is_dirty(root)
    (root / "conf").mkdir()
    (root / "conf" / "new.yaml").write_text("a: 1\n")
    assert is_dirty(root)
    (root / "conf" / "new.yaml").unlink()
    (root / "rnnbench" / "new.py").write_text("y = 2\n")
    assert is_dirty(root)
    (root / "rnnbench" / "new.py").unlink()
    (root / "rnnbench" / "a.py").write_text("x = 2\n")
    assert is_dirty(root)


def test_require_clean_refuses_a_report_made_by_a_dirty_rnnbench(tmp_path, monkeypatch,
                                                                 capsys):
    from rnnbench.report.cli import main

    monkeypatch.setattr("rnnbench.provenance.git_commit", lambda: "d" * 40 + "-dirty")
    out = tmp_path / "report"
    argv = ["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(out)]
    assert main(argv + ["--require-clean"]) == 2
    err = capsys.readouterr().err
    assert f"{'d' * 40}-dirty" in err and "uncommitted" in err and "Nothing was written" in err
    assert not out.exists() and not (tmp_path / "none.db").exists()
