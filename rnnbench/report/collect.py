"""Which runs a report covers, read from MLflow through :mod:`rnnbench.tracking`.

Runs are turned into plain :class:`RunRecord` objects right away, so everything after
this module works on ordinary Python data (and can be tested without a store).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rnnbench.errors import ConfigError
from rnnbench.tracking import Artifacts, Params, RunKind, Tags

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class RunRecord:
    """One MLflow run as the report sees it.

    Args:
        run_id: the MLflow run id.
        name: the run name (``co2-lstm-s0``).
        experiment: the name of its experiment.
        status: ``FINISHED``, ``FAILED``, ``KILLED``, ``RUNNING`` or ``SCHEDULED``.
        start_ms: start time in milliseconds since the epoch (from the store).
        end_ms: end time, or None while running.
        tags: every tag, as strings.
        params: every param, as strings (the flattened config).
        metrics: the latest value of every metric.
    """

    run_id: str
    name: str
    experiment: str
    status: str
    start_ms: int
    end_ms: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.tags.get(Tags.RUN_KIND, RunKind.RUN)

    @property
    def parent_id(self) -> str | None:
        return self.tags.get(Tags.PARENT_RUN_ID)

    @property
    def task(self) -> str | None:
        return self.tags.get(Tags.TASK)

    @property
    def cell(self) -> str | None:
        return self.tags.get(Tags.CELL) or self.params.get(Params.CELL)

    @property
    def seed(self) -> str:
        return self.tags.get(Tags.SEED, self.params.get(Params.SEED, ""))

    def metric(self, key: str) -> float:
        """The latest value of metric ``key``, NaN when absent."""
        value = self.metrics.get(key)
        return float(value) if value is not None else math.nan


@dataclass
class Selection:
    """The runs a report covers and how they were chosen.

    Args:
        runs: every matched run, sweeps' child trials included, sorted by start time.
        described: a sentence saying how they were selected.
        sweep_parents: the parent runs of keras-tuner sweeps among them, by run id.
    """

    runs: list[RunRecord]
    described: str
    sweep_parents: dict[str, RunRecord] = field(default_factory=dict)


def _record(run: Any, exp_names: dict[str, str]) -> RunRecord:
    info, data = run.info, run.data
    return RunRecord(
        run_id=info.run_id,
        name=info.run_name or data.tags.get(Tags.RUN_NAME, info.run_id[:8]),
        experiment=exp_names.get(info.experiment_id, info.experiment_id),
        status=info.status,
        start_ms=int(info.start_time or 0),
        end_ms=int(info.end_time) if info.end_time else None,
        tags=dict(data.tags),
        params=dict(data.params),
        metrics={k: float(v) for k, v in data.metrics.items()},
    )


def _quoted(option: str, value: str) -> str:
    if "'" in value or '"' in value:
        raise ConfigError(f"{option} {value!r} contains a quote; a sweep id or run id has none.")
    return f"'{value}'"


def _and(*parts: str) -> str:
    return " and ".join(p for p in parts if p)


def select(uri: str, experiments: Iterable[str] | None, filter_string: str = "",
           sweep: str | None = None) -> Selection:
    """Read the runs of ``experiments`` (all when None) that match ``filter_string`` and,
    when ``sweep`` is given, belong to that Hydra sweep (its ``sweep_id``) or keras-tuner
    sweep (its parent run id). The children of matched sweep parents come along.

    Raises ConfigError when an experiment does not exist or nothing matches.
    """
    from rnnbench import tracking

    tracking.open_store(uri)
    uri = tracking.redact_uri(uri)  # shown in messages and in the report from here on
    with tracking.store_faults(uri, "reading"):
        return _select(uri, experiments, filter_string, sweep)


def _select(uri: str, experiments: Iterable[str] | None, filter_string: str,
            sweep: str | None) -> Selection:
    from rnnbench import tracking

    ids = tracking.experiment_names()
    names = {v: k for k, v in ids.items()}
    exps = sorted(set(experiments)) if experiments else None
    if exps:
        missing = [e for e in exps if e not in ids]
        if missing:
            have = ", ".join(sorted(ids)) or "none"
            raise ConfigError(
                f"--experiment {', '.join(missing)}: no such experiment in {uri}. "
                f"Experiments there: {have}.")

    found: dict[str, Any] = {}
    parents: set[str] = set()
    if sweep:
        sweep = sweep.rstrip("/") or sweep
        q = _quoted("--sweep", sweep)
        for run in _hydra_sweep_runs(exps, filter_string, sweep):
            found[run.info.run_id] = run
        if RUN_ID.match(sweep):
            parent = tracking.get_run(sweep)
            if parent is not None:
                found[sweep] = parent
        for run in tracking.find_runs(exps, _and(filter_string,
                                                 f"tags.`{Tags.PARENT_RUN_ID}` = {q}")):
            found[run.info.run_id] = run
    else:
        for run in tracking.find_runs(exps, filter_string):
            found[run.info.run_id] = run
    for run in list(found.values()):
        if run.data.tags.get(Tags.RUN_KIND) == RunKind.SWEEP:
            parents.add(run.info.run_id)
    for pid in sorted(parents):
        q = _quoted("--sweep", pid)
        for run in tracking.find_runs(None, _and(filter_string,
                                                 f"tags.`{Tags.PARENT_RUN_ID}` = {q}")):
            found.setdefault(run.info.run_id, run)

    described = describe_selection(uri, exps, filter_string, sweep)
    if not found:
        have = ", ".join(sorted(ids)) or "none"
        raise ConfigError(
            f"no runs match {described}. Nothing was written. Experiments in the store: "
            f"{have}. Check --experiment, --sweep (a sweep_id tag such as "
            f"multirun/2026-01-31/12-00-00, or a sweep's parent run id) and --filter "
            f"(MLflow syntax: tags.cell = 'lstm' and metrics.test_mse < 1).")
    records = sorted((_record(r, names) for r in found.values()),
                     key=lambda r: (r.start_ms, r.run_id))
    sweep_parents = {r.run_id: r for r in records if r.kind == RunKind.SWEEP}
    # a filter may keep trials but not their sweep's parent, which names the objective
    for pid in sorted({r.parent_id for r in records if r.kind == RunKind.TRIAL and r.parent_id}
                      - set(sweep_parents)):
        parent = tracking.get_run(pid)
        if parent is not None:
            sweep_parents[pid] = _record(parent, names)
    return Selection(records, described, sweep_parents)


def _hydra_sweep_runs(exps: list[str] | None, filter_string: str, sweep: str) -> list:
    """The runs of a Hydra multirun: ``sweep`` is its folder, absolute (the ``sweep_id``
    tag) or as Hydra prints it (``multirun/2026-01-31/12-00-00``, relative to where it
    ran). A run reused by a later multirun (``skip_finished``) counts in both: its
    ``sweep_ids`` tag lists every multirun it belongs to."""
    from rnnbench import tracking

    def runs_of(sweep_id: str) -> dict[str, Any]:
        q = _quoted("--sweep", sweep_id)
        out = {}
        for query in (f"tags.{Tags.SWEEP_ID} = {q}",
                      f"tags.{Tags.SWEEP_IDS} LIKE '%;{sweep_id};%'"):
            for run in tracking.find_runs(exps, _and(filter_string, query)):
                out[run.info.run_id] = run
        return out

    _quoted("--sweep", sweep)
    found = runs_of(sweep)
    if found or RUN_ID.match(sweep) or Path(sweep).is_absolute():
        return list(found.values())
    found = runs_of(str(Path(sweep).resolve()))  # relative to this folder
    if found:
        return list(found.values())
    # relative to the folder the multirun ran in, wherever that was: the ids that end so
    found = {}
    for query in (f"tags.{Tags.SWEEP_ID} LIKE '%/{sweep}'",
                  f"tags.{Tags.SWEEP_IDS} LIKE '%/{sweep};%'"):
        for run in tracking.find_runs(exps, _and(filter_string, query)):
            found[run.info.run_id] = run
    ids = {s for r in found.values()
           for s in [r.data.tags.get(Tags.SWEEP_ID, "")]
           + r.data.tags.get(Tags.SWEEP_IDS, "").split(";")
           if s.endswith("/" + sweep)}
    if len(ids) > 1:
        raise ConfigError(f"--sweep {sweep} matches {len(ids)} multiruns: "
                          f"{', '.join(sorted(ids))}. Pass the whole path of one.")
    return [r for r in found.values() if r.data.tags.get(Tags.SWEEP_ID) in ids
            or any(f";{s};" in r.data.tags.get(Tags.SWEEP_IDS, "") for s in ids)]


def describe_selection(uri: str, experiments: list[str] | None, filter_string: str,
                       sweep: str | None) -> str:
    """One sentence naming the store and the selection options."""
    parts = [f"experiment{'s' if experiments and len(experiments) > 1 else ''} "
             + ", ".join(f"`{e}`" for e in experiments) if experiments else "all experiments"]
    if sweep:
        parts.append(f"sweep `{sweep}`")
    if filter_string:
        parts.append(f"filter `{filter_string}`")
    return f"{'; '.join(parts)} in `{uri}`"


class History:
    """Reads (and caches) per-epoch metric histories and diagnostics artifacts of runs."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], list[tuple[int, float]]] = {}
        self._flows: dict[str, Any] = {}

    def metric(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` pairs of ``key`` by step; empty when never logged."""
        from rnnbench import tracking

        if (run_id, key) not in self._cache:
            self._cache[(run_id, key)] = [(int(s), float(v))
                                          for s, v in tracking.metric_history(run_id, key)]
        return self._cache[(run_id, key)]

    def gradient_flow(self, run_id: str) -> Any | None:
        """The gradient-flow document (``diagnostics/grad_flow.json``) of a run, or None
        when it has none (or it cannot be read)."""
        from rnnbench import tracking

        if run_id in self._flows:
            return self._flows[run_id]
        obj = None
        try:
            listed = set(tracking.list_artifacts(run_id, Artifacts.DIAGNOSTICS_DIR))
            if Artifacts.GRAD_FLOW_JSON in listed:
                with tempfile.TemporaryDirectory() as tmp:
                    path = tracking.download_artifacts(run_id, Artifacts.GRAD_FLOW_JSON, tmp)
                    obj = json.loads(Path(path).read_text())
        except Exception:  # a missing or unreadable artifact only drops the figure
            obj = None
        self._flows[run_id] = obj
        return obj
