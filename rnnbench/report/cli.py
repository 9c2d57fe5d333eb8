"""``rnnbench-report``: a reproducible benchmark report from MLflow runs.

Start-up stays fast and TensorFlow is never imported: MLflow, SciPy, matplotlib (Agg)
and optuna are imported only once the arguments are parsed, and only where needed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from rnnbench.errors import ConfigError, RnnbenchError
from rnnbench.tracking import Metrics, RunKind

DESCRIPTION = """\
Compare cells from their MLflow runs: per task, the test metric of each cell as mean ±
95% CI over seeds (or over the best 10% of a sweep's trials); against a baseline cell,
paired tests (paired t, Wilcoxon) over the design points runs share (seeds, or the
hyperparameter points of sweeps with one oracle seed) and Welch's test, with Holm's
correction and the minimum detectable effect; learning curves, gradient flow,
hyperparameter importance for sweeps, the code versions, the environment and the
commands that reproduce every number.
Writes report.md, report.html (self-contained) and tables/*.csv under --out."""

EPILOG = """\
examples:
  rnnbench-report --experiment co2
  rnnbench-report --sweep multirun/2026-01-31/12-00-00 --baseline gru
  rnnbench-report --filter "tags.cell != 'rnn' and params.model.units = '64'"
  rnnbench-report --tracking-uri http://127.0.0.1:5000 --experiment adding --metric mse
  rnnbench-report --experiment greff --baseline peephole --design paired --require-clean
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rnnbench-report", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", default=None,
                   help="the MLflow store: sqlite:///path.db or http://host:port "
                        "(default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--experiment", action="append", default=None, metavar="NAME",
                   help="an MLflow experiment to read (repeatable; default: "
                        "$MLFLOW_EXPERIMENT_NAME, else all)")
    p.add_argument("--filter", default="", metavar="MLFLOW_FILTER",
                   help="an MLflow search filter, e.g. \"tags.cell = 'lstm'\"")
    p.add_argument("--sweep", default=None, metavar="ID",
                   help="only one sweep: a Hydra multirun's sweep_id tag, or the parent run "
                        "id of a keras-tuner sweep")
    p.add_argument("--baseline", default="lstm", metavar="CELL",
                   help="the cell every other cell is tested against (default: %(default)s)")
    p.add_argument("--metric", default=None,
                   help="rank by test_<METRIC> instead of each task's primary metric")
    p.add_argument("--mode", choices=("min", "max"), default=None,
                   help="whether lower or higher --metric is better (default: the task's "
                        "primary_mode, or guessed from the name)")
    p.add_argument("--trial-fraction", default=0.1, type=float, metavar="F",
                   help="the fraction of a sweep's best trials that enter its mean and "
                        "test, at least one (default: %(default)s, as Greff et al.)")
    p.add_argument("--design", choices=("auto", "paired", "unpaired"), default="auto",
                   help="auto: pair runs that share design points (seeds of a multirun, "
                        "hyperparameter points of sweeps with one oracle seed) and test the "
                        "per-point differences, else compare unpaired; paired: refuse what "
                        "cannot be paired; unpaired: Welch's test only (default: %(default)s)")
    p.add_argument("--equivalence-margin", action="append", default=None,
                   metavar="METRIC=DELTA",
                   help="the margin, in the metric's units, within which a comparison that "
                        "is not significant is called equivalent (TOST), e.g. "
                        "test_mse=0.05; or a factor, test_mse=x2 (within a factor of 2), "
                        "which compares that metric on the log scale (ln, differences read "
                        "as ratios); repeat per metric (default: none, such comparisons "
                        "are 'inconclusive')")
    p.add_argument("--budget-k", default=None, type=int, metavar="K",
                   help="compare sweeps at equal budgets of K trials (default: the smallest "
                        "search's size; at most that)")
    p.add_argument("--require-clean", action="store_true",
                   help="refuse runs that come from several commits, a tree with "
                        "uncommitted changes, or no recorded commit")
    p.add_argument("--out", default=None, type=Path, metavar="DIR",
                   help="output folder (default: reports/<name>)")
    p.add_argument("--title", default=None, help="the report's title")
    p.add_argument("--check-readme", action="append", default=None, type=Path,
                   metavar="README",
                   help="only check the <!-- check TABLE row=... col=... --> comments of a "
                        "Markdown file against the CSV tables they name (repeatable); exit "
                        "1 when a number disagrees, without reading the MLflow store")
    return p


def check_readmes(paths: list[Path]) -> int:
    """``--check-readme``: print each failed check; 0 when all hold, 1 when not."""
    from rnnbench.report.claims import check_readme

    failed = 0
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"--check-readme {path}: no such file.")
        try:
            count, problems = check_readme(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--check-readme {path}: cannot be read ({exc}).") from None
        for problem in problems:
            print(problem)
        failed += len(problems)
        print(f"{path}: {count - len(problems)} of {count} checks hold")
    return 1 if failed else 0


def default_name(args: argparse.Namespace) -> str:
    from rnnbench.report.document import slug

    if args.title:
        return slug(args.title)
    if args.sweep:
        return slug("sweep-" + args.sweep)
    if args.experiment:
        return slug("-".join(sorted(set(args.experiment))))
    return "all"


def report_command(args: argparse.Namespace) -> str:
    """The command line that makes this report again (the output folder left out, so it
    does not change the report)."""
    parts = ["rnnbench-report"]
    if args.tracking_uri != "sqlite:///mlflow.db":
        parts += ["--tracking-uri", args.tracking_uri]
    for e in sorted(set(args.experiment or [])):
        parts += ["--experiment", e]
    if args.sweep:
        parts += ["--sweep", args.sweep]
    if args.filter:
        parts += ["--filter", args.filter]
    if args.baseline != "lstm":
        parts += ["--baseline", args.baseline]
    if args.metric:
        parts += ["--metric", args.metric]
    if args.mode:
        parts += ["--mode", args.mode]
    if args.trial_fraction != 0.1:
        parts += ["--trial-fraction", f"{args.trial_fraction:g}"]
    if args.design != "auto":
        parts += ["--design", args.design]
    if args.budget_k is not None:
        parts += ["--budget-k", str(args.budget_k)]
    for m in args.equivalence_margin or []:
        parts += ["--equivalence-margin", m]
    if args.require_clean:
        parts += ["--require-clean"]
    if args.title:
        parts += ["--title", args.title]
    from rnnbench.redaction import redact

    return redact(shlex.join(parts))


def producer() -> tuple[str, str]:
    """The rnnbench version and commit (``-dirty`` when the tree is) making this report."""
    from rnnbench import __version__
    from rnnbench.provenance import git_commit

    return __version__, git_commit() or "(unknown: not a git checkout)"


def run(args: argparse.Namespace) -> tuple[Path, Any]:
    """Make the report described by ``args``; return its folder and its analysis."""
    from rnnbench.report import analysis, collect, content, render, writers

    if args.metric is not None and not args.metric.strip():
        raise ConfigError("--metric '' is empty: give a metric name such as mse or accuracy.")
    if not args.baseline.strip():
        raise ConfigError("--baseline '' is empty: give a cell name such as lstm.")
    if not 0 < args.trial_fraction <= 1:
        raise ConfigError(f"--trial-fraction {args.trial_fraction:g} is not allowed: give a "
                          "fraction in (0, 1], e.g. 0.1 for the best 10% of each sweep's trials.")
    from rnnbench.report.verdicts import parse_margins

    margins = parse_margins(args.equivalence_margin)
    if args.budget_k is not None and args.budget_k < 1:
        raise ConfigError(f"--budget-k {args.budget_k} is not allowed: give a number of "
                          f"trials, 1 or more (default: the smallest search's size).")
    out = args.out if args.out is not None else Path("reports") / default_name(args)
    writers.check_out(out)  # before the store is read: a bad --out fails at once
    made_by = producer()
    if args.require_clean and made_by[1].endswith("-dirty"):
        raise ConfigError(f"--require-clean: this rnnbench ({made_by[1]}) has uncommitted "
                          "changes or untracked files under rnnbench/ or conf/, so the report "
                          "could not be made again from its commit. Nothing was written. "
                          "Commit them, or make the report from a clean checkout.")
    selection = collect.select(args.tracking_uri, args.experiment, args.filter, args.sweep)
    if args.require_clean:
        analysis.check_clean([r for r in selection.runs if r.kind != RunKind.SWEEP])
    options = content.ReportOptions(baseline=args.baseline, metric=args.metric, mode=args.mode,
                                    trial_fraction=args.trial_fraction, design=args.design,
                                    equivalence_margins=margins, budget_k=args.budget_k)
    from rnnbench import tracking

    with tracking.store_faults(tracking.redact_uri(args.tracking_uri), "reading"):
        result = analysis.analyse(selection, options, collect.History())
    if not result.sections:
        raise ConfigError(
            f"the {len(selection.runs)} run(s) matching {selection.described} are not "
            f"rnnbench runs (they have no task and cell tags). Nothing was written.")
    if args.metric and not any(r.values for s in result.sections for r in s.rows):
        raise ConfigError(
            f"--metric {args.metric}: no finished run has test_{args.metric.removeprefix('test_')}."
            f" Nothing was written. The runs have: " + ", ".join(sorted(
                {k for r in selection.runs for k in r.metrics
                 if k.startswith(Metrics.TEST_PREFIX)}))
            + ".")
    title = args.title or "rnnbench report: " + (
        f"sweep {args.sweep}" if args.sweep
        else ", ".join(sorted(set(args.experiment))) if args.experiment else "all experiments")
    made = f"# made by rnnbench {made_by[0]}, commit {made_by[1]}"
    doc = render.build(result, title, report_command(args) + "\n" + made)
    writers.write(doc, out)
    return out, result


def console_verdict(verdict: str, mde: float) -> str:
    """A comparison's verdict on the console, with its MDE (the design figure) beside a
    verdict that is not significant."""
    from rnnbench.report.document import fmt

    if mde != mde:
        return verdict
    if verdict == "not significant":
        return f"{verdict} (MDE {fmt(mde, 2)})"
    if verdict.startswith("inconclusive ("):
        return f"inconclusive (MDE {fmt(mde, 2)}; {verdict[len('inconclusive ('):]}"
    return verdict


def print_summary(out: Path, result: Any) -> None:
    """The comparison tables on the terminal, then where the report is."""
    from rnnbench.report.document import fmt, fmt_interval
    from rnnbench.report.runs import shorten

    baseline = result.options.baseline
    for s in result.sections:
        better = "lower" if s.mode == "min" else "higher"
        print(f"\n{s.title}: test_{s.metric} ({better} is better)")
        if s.paired:
            test = "paired t, Holm"
            verdicts = {c.row.label: (c.verdict, c.mde, c.result.mean) for c in s.paired}
        else:
            test = "Welch, Holm"
            verdicts = {c.row.label: (c.verdict, c.mde, c.diff) for c in s.comparisons}
        table = [["rank", "cell", "mean ± 95% CI", "n", f"vs {baseline} ({test})"]]
        for r in s.rows:
            verdict, mde, _ = verdicts.get(r.label, ("—", float("nan"), 0.0))
            verdict = console_verdict(verdict, mde)
            table.append([str(r.rank or "—"), r.label, fmt_interval(r.interval),
                          str(r.interval.n), "baseline" if r.cell == baseline else verdict])
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if s.paired and s.kind == "trial":
            print("  (paired over shared hyperparameter points; the best-tuned, unpaired "
                  "comparison of Greff et al. is in the report)")
        if s.budget:
            print(f"  at equal budgets (expected best of k trials; vs {baseline}, Holm):")
            for c in s.budget:
                print(f"    {c.row.label}: k={c.k} {fmt(c.value)} vs {fmt(c.base_value)}, "
                      f"Δ {fmt(c.diff)} [{fmt(c.low)}, {fmt(c.high)}] ({c.replicates}): "
                      f"{c.verdict}")
        for e in s.excluded[:5]:
            print(f"  not averaged in: {e.run.name} ({e.run.run_id[:8]}) {e.run.status}: "
                  f"{shorten(e.reason, 100)}")
        if len(s.excluded) > 5:
            print(f"  … and {len(s.excluded) - 5} more runs not averaged in (see the report)")
    if result.provenance_warning:
        commits = ", ".join(f"{c} ({n})" for c, n in result.commits)
        print(f"\nwarning: {result.provenance_warning}\n  commits: {commits}", file=sys.stderr)
    print(f"\nreport: {out / 'report.md'}\n        {out / 'report.html'}")


def main(argv: list[str] | None = None) -> int:
    """Run ``rnnbench-report`` with ``argv``; return the exit status (2: a user error,
    130: Ctrl-C)."""
    import signal
    import threading

    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) == signal.SIG_IGN):
        signal.signal(signal.SIGINT, signal.default_int_handler)  # started with & by a script
    args = parser().parse_args(argv)
    # MLflow's variables, as for rnnbench itself: the command line first
    args.tracking_uri = (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
                         or "sqlite:///mlflow.db")
    if args.experiment is None and os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip():
        args.experiment = [os.environ["MLFLOW_EXPERIMENT_NAME"].strip()]
    from rnnbench.redaction import redact

    try:
        if args.check_readme:
            return check_readmes(args.check_readme)
        out, result = run(args)
    except RnnbenchError as exc:
        print(f"rnnbench-report: error: {redact(str(exc))}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        from rnnbench.report.writers import InterruptedAfterWriting

        if isinstance(exc, InterruptedAfterWriting):
            print("rnnbench-report: interrupted; the report itself was written whole.",
                  file=sys.stderr, flush=True)
            return 130
        print("rnnbench-report: interrupted: no report was written (the --out folder holds "
              "what it held before).", file=sys.stderr, flush=True)
        return 130
    try:
        print_summary(out, result)
    except KeyboardInterrupt:
        print(f"rnnbench-report: interrupted; the report itself is complete in {out}.",
              file=sys.stderr, flush=True)
        return 130
    return 0
