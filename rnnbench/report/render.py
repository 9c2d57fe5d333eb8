"""A report as a document (headings, paragraphs, tables, figures, code), and that document
written as Markdown, as one self-contained HTML file, and as the CSV behind every table.

Everything is sorted and every number is formatted with fixed rules, so the same MLflow
data gives byte-identical files.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rnnbench.report import figures
from rnnbench.report.analysis import Analysis, TaskSection, natural_key, shorten


# ---- the document -------------------------------------------------------------------

@dataclass
class Heading:
    """A heading of ``level`` 1–3."""

    level: int
    text: str


@dataclass
class Para:
    """A paragraph; `code` and **bold** are kept in HTML too."""

    text: str


@dataclass
class Bullets:
    """A bulleted list."""

    items: list[str]


@dataclass
class Code:
    """A block of commands, shown verbatim."""

    text: str


@dataclass
class Table:
    """A table as shown (``columns``/``rows`` of text) and as saved (``csv_columns``/
    ``csv_rows`` with full-precision values) under ``tables/<name>.csv``."""

    name: str
    columns: list[str]
    rows: list[list[str]]
    csv_columns: list[str]
    csv_rows: list[list[Any]]


@dataclass
class Figure:
    """A PNG figure: ``figures/<name>.png`` next to the Markdown, embedded in the HTML."""

    name: str
    png: bytes
    caption: str


@dataclass
class Document:
    """A report: its title and its blocks, in order."""

    title: str
    blocks: list[Any] = field(default_factory=list)

    def add(self, *blocks: Any) -> None:
        self.blocks.extend(blocks)

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]


# ---- number formatting --------------------------------------------------------------

def fmt(x: float | None, digits: int = 4) -> str:
    """``digits`` significant digits; an em dash for a missing value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = f"{x:.{digits}g}"
    return "0" if text == "-0" else text


def fmt_ci(mean: float, half: float) -> str:
    """``mean ± half``, both rounded to the decimal place of the half-width's second
    significant digit."""
    if math.isnan(mean):
        return "—"
    if math.isnan(half):
        return fmt(mean)
    if half == 0:
        return f"{fmt(mean)} ± 0"
    decimals = max(0, min(10, 1 - math.floor(math.log10(abs(half)))))
    return f"{mean:.{decimals}f} ± {half:.{decimals}f}"


def fmt_interval(iv: Any) -> str:
    """A row's mean ± half-width, or the mean alone with the reason when fewer than 3
    values make any interval meaningless."""
    if iv.n and iv.n < 3 and not math.isnan(iv.mean):
        return f"{fmt(iv.mean)} (n={iv.n}: no CI)"
    return fmt_ci(iv.mean, iv.half_width)


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def fmt_pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{x * 100:+.1f}%"


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def slug(text: str) -> str:
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out or "report"


def raw(x: Any) -> Any:
    """A CSV value: floats in full precision (repr), NaN as empty."""
    if isinstance(x, float):
        return "" if math.isnan(x) else repr(x)
    return "" if x is None else x


# ---- building the document ----------------------------------------------------------

def build(analysis: Analysis, title: str, command: str) -> Document:
    """The report document of ``analysis``; ``command`` is the report's own command line."""
    doc = Document(title)
    sel = analysis.selection
    opts = analysis.options
    names: set[str] = set()

    def unique(name: str, kind: str = "table") -> str:
        """A file name not used yet by a table (``tables/``) or a figure (``figures/``)."""
        base, i = name, 2
        while (kind, name) in names:
            name, i = f"{base}-{i}", i + 1
        names.add((kind, name))
        return name

    runs = [r for r in sel.runs if r.kind != "sweep"]
    counts = ", ".join(f"{n} {s}" for s, n in analysis.status_counts.items())
    doc.add(Heading(1, title))
    started = [r.start_ms for r in runs if r.start_ms]
    span = (f" The runs started between {utc(min(started))} and {utc(max(started))}."
            if started else "")
    doc.add(Para(f"{len(runs)} runs ({counts}) from {sel.described}.{span}"))
    commits = "; ".join(f"`{c}` ({n} run{'s' if n != 1 else ''})" for c, n in analysis.commits)
    if analysis.provenance_warning:
        doc.add(Para(f"**Warning: mixed code versions.** {analysis.provenance_warning} "
                     f"Commits: {commits}."))
    elif commits:
        doc.add(Para(f"Code version: every run comes from commit {commits}, a clean tree."))
    doc.add(Para(
        f"Each table ranks the cells of one task by its test metric: the mean with a "
        f"{opts.confidence:.0%} confidence interval (Student's t, n − 1 degrees of freedom) "
        f"over seeds, or over the best {opts.trial_fraction:.0%} of a sweep's trials (with "
        f"fewer than 3 values no interval is given: none would be meaningful). Runs "
        f"that FAILED, were KILLED or have no test metric are listed under each task, not "
        f"averaged in. Time per epoch and throughput are medians over epochs without the "
        f"first (which includes compilation), averaged over runs."))

    summary_rows, summary_csv = [], []
    for section in analysis.sections:
        best = next((r for r in section.rows if r.rank == 1), None)
        base = next((r for r in section.rows if r.cell == opts.baseline and r.values), None)
        finished = sum(len(r.used) for r in section.rows)
        summary_rows.append([section.title, f"test_{section.metric} ({section.mode})",
                             best.label if best else "—",
                             fmt_interval(best.interval) if best else "—",
                             fmt_interval(base.interval) if base else "—",
                             str(finished), str(len(section.excluded))])
        summary_csv.append([section.title, section.metric, section.mode,
                            best.label if best else "", raw(best.interval.mean if best else None),
                            raw(base.interval.mean if base else None), finished,
                            len(section.excluded)])
    doc.add(Heading(2, "Summary"))
    if summary_rows:
        doc.add(Table(unique("summary"),
                      ["task", "metric", "best cell", "best", opts.baseline + " (baseline)",
                       "runs averaged", "runs not averaged"], summary_rows,
                      ["task", "metric", "mode", "best_cell", "best_mean", "baseline_mean",
                       "runs_averaged", "runs_not_averaged"], summary_csv))
    else:
        doc.add(Para("No run carries rnnbench's `task` and `cell` tags."))

    for section in analysis.sections:
        _section(doc, section, analysis, unique)

    _environment(doc, analysis, unique)
    _reproduce(doc, analysis, command, unique)
    _runs(doc, analysis, unique)
    return doc


def _section(doc: Document, s: TaskSection, analysis: Analysis, unique: Any) -> None:
    opts = analysis.options
    key = slug(s.title)
    doc.add(Heading(2, f"Task: {s.title}"))
    family = f" ({s.family})" if s.family else ""
    doc.add(Para(f"Task `{s.task}`{family}, ranked by {s.metric_note}. {s.selection_note}"))
    if s.trivial:
        doc.add(Para("Trivial baselines of the task (`baseline_*`): " + ", ".join(
            f"{k} {fmt(v)}" for k, v in s.trivial.items()) + "."))

    metric = f"test_{s.metric}"
    rows, csv_rows = [], []
    for r in s.rows:
        iv = r.interval
        rows.append([str(r.rank) if r.rank else "—", r.label,
                     fmt_interval(iv), str(iv.n), r.basis, r.params_count or "—",
                     fmt(r.sec_per_epoch, 3), fmt(r.throughput, 4), r.ran])
        csv_rows.append([r.rank or "", r.label, r.cell, r.impl, raw(iv.mean), raw(iv.half_width),
                         raw(iv.sd), iv.n, r.basis, r.params_count.replace(",", ""),
                         raw(r.sec_per_epoch), raw(r.throughput), r.ran,
                         " ".join(x.run_id for x in r.used)])
    doc.add(Heading(3, "Results"))
    doc.add(Table(unique(f"{key}-results"),
                  ["rank", "cell", f"{metric} (mean ± {opts.confidence:.0%} CI)", "n", "over",
                   "params", "s/epoch", "samples/s", "ran"], rows,
                  ["rank", "row", "cell", "impl", f"{metric}_mean", f"{metric}_ci_half_width",
                   f"{metric}_sd", "n", "over", "params_count", "seconds_per_epoch",
                   "samples_per_second", "ran", "run_ids"], csv_rows))

    others = sorted({k for r in s.rows for k in r.other_metrics})
    if others:
        doc.add(Para("Other test metrics of the same runs (mean):"))
        doc.add(Table(unique(f"{key}-other-metrics"), ["cell"] + [f"test_{k}" for k in others],
                      [[r.label] + [fmt(r.other_metrics.get(k)) for k in others]
                       for r in s.rows],
                      ["row"] + [f"test_{k}_mean" for k in others],
                      [[r.label] + [raw(r.other_metrics.get(k, math.nan)) for k in others]
                       for r in s.rows]))

    _significance(doc, s, opts, key, unique)

    curve_rows = [r for r in s.rows if r.curves]
    doc.add(Heading(3, "Learning curves"))
    png = figures.learning_curves(s)
    if png:
        doc.add(Figure(unique(f"{key}-learning-curves", "figure"), png,
                       f"{s.title}: validation loss per epoch, mean over runs (band: min–max)"))
        doc.add(Table(unique(f"{key}-learning-curves"), ["cell", "epoch", "val_loss (mean)", "n"],
                      [], ["row", "epoch", "val_loss_mean", "n"],
                      [[r.label, e, raw(math.fsum(v) / len(v)), len(v)]
                       for r in curve_rows for e, v in r.curves.items()]))
    else:
        doc.add(Para("No run logged `val_loss` per epoch."))

    doc.add(Heading(3, "Gradient flow"))
    flow_keys = sorted({k for r in s.rows for k in r.grad_flow})
    png = figures.gradient_flow(s)
    if png:
        doc.add(Figure(unique(f"{key}-gradient-flow", "figure"), png,
                       f"{s.title}: gradient norm g(k) at lag k per evaluated epoch, mean over "
                       f"runs; dotted: the weights the test metrics come from"))
        doc.add(Table(unique(f"{key}-gradient-flow-profiles"), ["cell", "epoch", "lag", "g"], [],
                      ["row", "epoch", "lag", "g_mean"],
                      [[r.label, e, raw(lag), raw(g)] for r in s.rows
                       for e, (lags, gs) in r.profiles.items() for lag, g in zip(lags, gs)]
                      + [[r.label, "tested", raw(lag), raw(g)] for r in s.rows
                         if r.final_profile for lag, g in zip(*r.final_profile)]))
    if flow_keys:
        doc.add(Para("Gradient-flow summaries (`grad_flow/*`, mean over runs) of the weights "
                     "the test metrics come from: those early stopping restored, from epoch "
                     "`weights_epoch` (runs from before that was recorded: the last "
                     "evaluated epoch). Each lag averages the sequences that have a real "
                     "step there; on padded tasks the largest lags rest on few sequences."))
        doc.add(Table(unique(f"{key}-gradient-flow"), ["cell"] + flow_keys,
                      [[r.label] + [fmt(r.grad_flow.get(k)) for k in flow_keys] for r in s.rows],
                      ["row"] + flow_keys,
                      [[r.label] + [raw(r.grad_flow.get(k, math.nan)) for k in flow_keys]
                       for r in s.rows]))
    if not png and not flow_keys:
        doc.add(Para("These runs have no gradient-flow diagnostics "
                      "(no `diagnostics/grad_flow.json` artifact, no `grad_flow/*` metrics)."))

    if s.importance is not None:
        imp = s.importance
        doc.add(Heading(3, "Hyperparameter importance"))
        if imp.values:
            doc.add(Para(f"fANOVA (optuna's `FanovaImportanceEvaluator`, seed 0) over "
                         f"{imp.n_trials} finished trials at {imp.n_points} distinct "
                         f"hyperparameter points, objective `{imp.objective}`: each "
                         f"hyperparameter's main effect as a share of the objective's "
                         f"variance (not normalised); the rest, "
                         f"{imp.interactions:.3f}, is left to interactions between them."))
            for warning in imp.warnings:
                doc.add(Para(f"**Warning:** {warning}"))
            table = [*imp.values, ("(interactions)", imp.interactions)]
            doc.add(Table(unique(f"{key}-importance"),
                          ["hyperparameter", "main-effect share of variance"],
                          [[k, f"{v:.3f}"] for k, v in table],
                          ["hyperparameter", "main_effect_share"],
                          [[k, raw(v)] for k, v in table]))
            png = figures.importance(s)
            if png:
                doc.add(Figure(unique(f"{key}-importance", "figure"), png,
                               f"{s.title}: fANOVA hyperparameter importance"))
        else:
            doc.add(Para(imp.note))

    doc.add(Heading(3, "Runs not averaged in"))
    if s.excluded:
        doc.add(Table(unique(f"{key}-not-averaged"), ["run", "cell", "seed", "status", "reason"],
                      [[f"{e.run.name} ({e.run.run_id[:8]})", e.row, e.run.seed, e.run.status,
                        shorten(e.reason)] for e in s.excluded],
                      ["run_id", "run_name", "row", "seed", "status", "reason"],
                      [[e.run.run_id, e.run.name, e.row, e.run.seed, e.run.status, e.reason]
                       for e in s.excluded]))
    else:
        doc.add(Para("None: every run of this task finished with a test metric."))


def _verdict_with_mde(verdict: str, mde: float) -> str:
    if verdict == "not significant" and not math.isnan(mde):
        return f"not significant (MDE {fmt(mde, 3)})"
    return verdict


def _significance(doc: Document, s: TaskSection, opts: Any, key: str, unique: Any) -> None:
    """The paired table where runs share design points, and the unpaired (Welch) one:
    for sweep trials both, each saying which question it answers."""
    trial = s.kind == "trial"
    if s.paired:
        doc.add(Heading(3, f"Paired comparison against {opts.baseline}"
                        + (" across the search space" if trial else "")))
        if trial:
            doc.add(Para("Question answered: how does each variant behave across the search "
                         "space, point for point against the baseline at the same "
                         "hyperparameters? Every shared trial counts, good and bad settings "
                         "alike."))
        doc.add(Para(s.paired_note))
        rows, csv_rows = [], []
        for c in s.paired:
            r = c.result
            worse = r.positive if s.mode == "min" else r.negative
            rows.append([c.row.label, c.base.label, str(r.n), fmt_ci(r.mean, r.half_width)
                         if r.n >= 3 else f"{fmt(r.mean)} (n={r.n}: no CI)",
                         fmt(r.dz, 3), f"{worse} of {r.n}", fmt_p(r.p_t), fmt_p(c.p_t_holm),
                         fmt_p(r.p_w), fmt_p(c.p_w_holm), fmt(c.mde, 3),
                         _verdict_with_mde(c.verdict, c.mde)])
            csv_rows.append([c.row.label, c.base.label, r.n, raw(r.mean), raw(r.half_width),
                             raw(r.sd), raw(r.dz), r.positive, r.negative, raw(r.t),
                             raw(r.p_t), raw(c.p_t_holm), raw(r.w), raw(r.p_w),
                             raw(c.p_w_holm), raw(c.mde), raw(c.mde_alpha),
                             "" if c.significant is None else str(c.significant).lower(),
                             c.verdict, " | ".join(c.points)])
        doc.add(Table(unique(f"{key}-paired"),
                      ["cell", "baseline", "pairs", "Δ mean (95% CI)", "d_z", "worse at",
                       "p (t)", "p (t, Holm)", "p (Wilcoxon)", "p (Wilcoxon, Holm)", "MDE",
                       "verdict"], rows,
                      ["row", "baseline", "pairs", "diff_mean", "diff_ci_half_width", "diff_sd",
                       "d_z", "n_diff_positive", "n_diff_negative", "t", "p_t", "p_t_holm",
                       "wilcoxon_w", "p_wilcoxon", "p_wilcoxon_holm", "mde", "mde_alpha",
                       "significant", "verdict", "points"], csv_rows))
    elif s.paired_note:
        doc.add(Para(s.paired_note))
    if s.paired and not trial:
        return  # the runs share their seeds: the paired table is the comparison
    if trial:
        doc.add(Heading(3, f"Best-tuned comparison against {opts.baseline} (Greff et al.'s "
                        f"protocol)"))
        doc.add(Para(f"Question answered: how good is each variant when tuned well? The best "
                     f"{opts.trial_fraction:.0%} of each variant's trials by the sweep's "
                     f"objective, compared unpaired (the best points differ between "
                     f"variants)."))
    else:
        doc.add(Heading(3, f"Significance against {opts.baseline}"))
    doc.add(Para(s.baseline_note))
    if s.comparisons:
        doc.add(Table(
            unique(f"{key}-significance"),
            ["cell", "baseline", "Δ mean", "Δ %", "t", "df", "p", "p (Holm)", "MDE", "verdict"],
            [[c.row.label, c.base.label, fmt(c.diff), fmt_pct(c.rel), fmt(c.welch.t, 3),
              fmt(c.welch.df, 3), fmt_p(c.welch.p), fmt_p(c.p_holm), fmt(c.mde, 3),
              _verdict_with_mde(c.verdict, c.mde)]
             for c in s.comparisons],
            ["row", "baseline", "diff", "rel_diff", "t", "df", "p", "p_holm", "mde",
             "significant", "verdict"],
            [[c.row.label, c.base.label, raw(c.diff), raw(c.rel), raw(c.welch.t),
              raw(c.welch.df), raw(c.welch.p), raw(c.p_holm), raw(c.mde),
              "" if c.significant is None else str(c.significant).lower(), c.verdict]
             for c in s.comparisons]))


def _environment(doc: Document, analysis: Analysis, unique: Any) -> None:
    doc.add(Heading(2, "Environment"))
    doc.add(Para("What the runs ran on, from their tags (value, and how many runs):"))
    doc.add(Table(unique("environment"), ["tag", "values"],
                  [[k, "; ".join(f"{v} ({n})" for v, n in vals)]
                   for k, vals in analysis.environment],
                  ["tag", "value", "runs"],
                  [[k, v, n] for k, vals in analysis.environment for v, n in vals]))


def _reproduce(doc: Document, analysis: Analysis, command: str, unique: Any) -> None:
    doc.add(Heading(2, "Reproduce"))
    doc.add(Para("Every number above comes from the runs these commands log (the `command` "
                 "tag of each run, grouped by task and sweep; run them in the folder that "
                 "holds the MLflow store). Then make this report again with:"))
    doc.add(Code(command))
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for s in analysis.sections:
        for r in s.runs:
            sweep = r.tags.get("sweep_id") or ""
            parent = r.parent_id
            if r.kind == "trial" and parent in analysis.selection.sweep_parents:
                cmd = analysis.selection.sweep_parents[parent].tags.get("command")
                sweep = sweep or f"parent run {parent}"
            else:
                cmd = r.tags.get("command")
            groups[(s.title, sweep)].add(cmd or f"(run {r.run_id} has no command tag)")
    csv_rows = []
    for (title, sweep) in sorted(groups):
        where = f" (sweep `{sweep}`)" if sweep else " (single runs)"
        doc.add(Para(f"**{title}**{where}:"))
        cmds = sorted(groups[(title, sweep)], key=lambda c: [natural_key(t) for t in c.split()])
        doc.add(Code("\n".join(cmds)))
        csv_rows += [[title, sweep, c] for c in cmds]
    doc.add(Table(unique("commands"), [], [], ["task", "sweep_id", "command"], csv_rows))


def _runs(doc: Document, analysis: Analysis, unique: Any) -> None:
    doc.add(Heading(2, "Runs"))
    rows, csv_rows = [], []
    for s in analysis.sections:
        metric = f"test_{s.metric}"
        for r in s.runs:
            value = r.metrics.get(metric)
            rows.append([s.title, r.name, r.cell or "", r.seed, r.status,
                         f"{metric} {fmt(value)}" if value is not None else "—",
                         f"`{r.run_id}`", r.tags.get("config_hash", "—"),
                         r.tags.get("git_commit", "—")[:12]
                         + ("-dirty" if r.tags.get("git_commit", "").endswith("-dirty") else "")])
            csv_rows.append([s.title, r.run_id, r.name, r.experiment, r.cell or "", r.seed,
                             r.kind, r.status, metric, raw(value), r.tags.get("config_hash", ""),
                             r.tags.get("git_commit", ""), r.tags.get("sweep_id", ""),
                             r.parent_id or "", r.tags.get("command", "")])
    doc.add(Table(unique("runs"), ["task", "run", "cell", "seed", "status", "test metric",
                                   "run id", "config hash", "commit"], rows,
                  ["task", "run_id", "run_name", "experiment", "cell", "seed", "run_kind",
                   "status", "metric", "value", "config_hash", "git_commit", "sweep_id",
                   "parent_run_id", "command"], csv_rows))
    if analysis.ignored:
        doc.add(Para("Ignored (not rnnbench runs: no `task`/`cell` tags): " + ", ".join(
            f"`{r.name}` ({r.run_id})" for r in analysis.ignored) + "."))


# ---- writing ------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(doc: Document) -> str:
    out: list[str] = []
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {i}" for i in b.items))
        elif isinstance(b, Code):
            out.append("```\n" + b.text + "\n```")
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}](figures/{b.name}.png)")
        elif isinstance(b, Table):
            if b.columns:
                lines = ["| " + " | ".join(_md_cell(c) for c in b.columns) + " |",
                         "|" + "|".join(" --- " for _ in b.columns) + "|"]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                if b.rows:
                    out.append("\n".join(lines))
            out.append(f"Data: [tables/{b.name}.csv](tables/{b.name}.csv)")
    return "\n\n".join(out) + "\n"


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline_html(text: str) -> str:
    parts, pos = [], 0
    for m in _INLINE.finditer(text):
        parts.append(html.escape(text[pos:m.start()]))
        if m.group(1) is not None:
            parts.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            parts.append(f"<strong>{html.escape(m.group(2))}</strong>")
        pos = m.end()
    parts.append(html.escape(text[pos:]))
    return "".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1b1f24;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:2em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f6f8fa}tr:nth-child(even) td{background:#fbfbfc}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto}
img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}
figcaption{font-size:.85em;color:#555}.csv{font-size:.8em;color:#555}
""".strip()


def html_page(doc: Document) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(doc.title)}</title>", f"<style>{CSS}</style>", "</head>",
           "<body>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Code):
            out.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(b.caption)}" '
                       f'src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        elif isinstance(b, Table):
            if b.columns and b.rows:
                head = "".join(f"<th>{html.escape(c)}</th>" for c in b.columns)
                body = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in row)
                               + "</tr>" for row in b.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            # the data travels inside the page: a report.html shared alone keeps it
            data = base64.b64encode(csv_text(b).encode("utf-8")).decode("ascii")
            out.append(f'<p class="csv">Data: <a download="{b.name}.csv" '
                       f'href="data:text/csv;charset=utf-8;base64,{data}">'
                       f"tables/{b.name}.csv</a></p>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def csv_text(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.csv_columns)
    writer.writerows([[raw(x) for x in row] for row in table.csv_rows])
    return buf.getvalue()


MANIFEST = ".rnnbench-report"


REPORT_FILE = re.compile(r"^(report\.md|report\.html|tables/[^/]+\.csv|figures/[^/]+\.png)$")


def _warn(message: str) -> None:
    print(f"rnnbench-report: warning: {message}", file=sys.stderr, flush=True)


def _inside(out_dir: Path, name: str, writing: bool = False) -> Path | None:
    """``out_dir / name`` when it is a report file really inside ``out_dir`` (no absolute
    path, no ``..``, no symbolic link on the way, not outside the real folder)."""
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not REPORT_FILE.match(rel.as_posix()):
        return None
    # when writing, a link in place of the file itself is replaced, not followed
    for i in range(1, len(rel.parts) + (0 if writing else 1)):
        if (out_dir / Path(*rel.parts[:i])).is_symlink():
            return None
    path = out_dir / rel
    where = path.parent if writing else path
    if not where.resolve().is_relative_to(out_dir.resolve()):
        return None
    return path


def write(doc: Document, out_dir: Path) -> list[Path]:
    """Write ``report.md``, ``report.html``, ``tables/*.csv`` and ``figures/*.png`` under
    ``out_dir``. Files that an earlier report wrote there and this one does not are removed
    (only those: the folder's list of report files says which). An entry of that list
    that is not a report file inside the real ``out_dir`` (an absolute path, ``..``, a
    path through a symbolic link) is left alone with a warning."""
    from rnnbench.errors import ConfigError

    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "report.md": markdown(doc).encode("utf-8"),
        "report.html": html_page(doc).encode("utf-8"),
    }
    for t in doc.tables:
        files[f"tables/{t.name}.csv"] = csv_text(t).encode("utf-8")
    for f in doc.figures:
        files[f"figures/{f.name}.png"] = f.png
    manifest = out_dir / MANIFEST
    if manifest.is_symlink():
        _warn(f"{manifest} is a symbolic link: it was replaced, its target left alone.")
        manifest.unlink()
    elif manifest.is_file():
        for old in manifest.read_text(errors="replace").splitlines():
            if not old.strip() or old in files:
                continue
            path = _inside(out_dir, old)
            if path is None:
                _warn(f"{manifest} lists {old!r}, which is not a report file inside "
                      f"{out_dir.resolve()}: left alone.")
            elif path.is_file():
                path.unlink()
    written = []
    for name in sorted(files):
        path = _inside(out_dir, name, writing=True)
        if path is None:
            raise ConfigError(
                f"--out {out_dir}: {out_dir / name} would be written outside the folder "
                f"(through a symbolic link). Remove the link or give another --out.")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_bytes(files[name])
        written.append(path)
    manifest.write_text("\n".join(sorted(files)) + "\n")
    return written
