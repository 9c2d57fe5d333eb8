"""Figures of a report, as PNG bytes.

Drawn with matplotlib's Agg backend under matplotlib's default style (a user's
matplotlibrc does not leak in), and saved without the software/date metadata, so the
same data gives the same bytes.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from rnnbench.report.content import TaskSection
from rnnbench.tracking import Tags

DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _style() -> Any:
    import matplotlib

    rc = dict(matplotlib.rcParamsDefault)
    rc.update({"backend": "Agg", "font.family": ["DejaVu Sans"], "font.size": 9,
               "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": DPI,
               "savefig.dpi": DPI, "path.simplify": False})
    return matplotlib.rc_context(rc)


def loss_units(rows: list) -> tuple[float, str]:
    """``(factor, unit)`` that put the rows' per-epoch loss in the data's units, from the
    runs' ``metric_units`` tag (a task that trains on normalised values sets it); ``(1, "")``
    when the runs have none or do not agree."""
    tags = {r.tags.get(Tags.METRIC_UNITS) for row in rows for r in row.used}
    if len(tags) != 1 or None in tags:
        return 1.0, ""
    try:
        factor, unit = json.loads(tags.pop())["loss"]
        return float(factor), str(unit)
    except (ValueError, KeyError, TypeError):
        return 1.0, ""


def learning_curves(section: TaskSection) -> bytes | None:
    """Validation loss per epoch, mean over the rows' runs, one line per row; a band
    from the lowest to the highest run."""
    rows = [r for r in section.rows if r.curves]
    if not rows:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    factor, unit = loss_units(rows)
    with _style():
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for row in rows:
            epochs = list(row.curves)
            means = [factor * math.fsum(v) / len(v) for v in row.curves.values()]
            line, = ax.plot(epochs, means, marker="o", markersize=3,
                            label=f"{row.label} (n={len(row.used)})")
            if any(len(v) > 1 for v in row.curves.values()):
                ax.fill_between(epochs, [factor * min(v) for v in row.curves.values()],
                                [factor * max(v) for v in row.curves.values()],
                                color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"val_loss ({unit})" if unit else "val_loss")
        if all(v > 0 for row in rows for vs in row.curves.values() for v in vs):
            lows = min(min(vs) for row in rows for vs in row.curves.values())
            highs = max(max(vs) for row in rows for vs in row.curves.values())
            if highs / lows > 20:
                ax.set_yscale("log")
        ax.set_title(f"{section.title}: validation loss (mean over runs)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return _png(fig)


def underflow_lag(lags: list[float], g: list[float]) -> float | None:
    """The first lag at which a profile that was positive is exactly 0: ``g(k)`` fell
    below the smallest float32 (about 1e-45) and has no place on a log axis; None when
    it never does. The run figures have their own (`rnnbench.diagnostics.artifacts`):
    the report never imports that package, which loads Keras."""
    seen = False
    for lag, v in zip(lags, g):
        if v > 0 and math.isfinite(v):
            seen = True
        elif seen and v == 0:
            return lag
    return None


def gradient_flow(section: TaskSection) -> bytes | None:
    """Gradient-flow profiles side by side, one panel per row: g(t) against the lag, one
    line per evaluated epoch (mean over runs), log scale. A line that reaches 0 (float32
    underflow) ends in a marker on the panel's floor at that lag, and the panel says so.
    None when no run has the profile artifact (the report then shows the logged
    ``grad_flow/*`` summaries only)."""
    rows = [r for r in section.rows if r.profiles]
    plt = _pyplot()
    if rows:
        with _style():
            ncols = min(4, len(rows))
            nrows = math.ceil(len(rows) / ncols)
            fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols + 0.6, 3.0 * nrows + 0.4),
                                     squeeze=False, sharey=True)
            flat = [ax for line in axes for ax in line]
            for ax in flat[len(rows):]:
                ax.set_visible(False)
            cmap = plt.get_cmap("viridis")
            floors: list[tuple[Any, float, Any]] = []  # (panel, lag, colour) of underflows
            for ax, row in zip(flat, rows):
                epochs = list(row.profiles)
                for i, epoch in enumerate(epochs):
                    lags, g = row.profiles[epoch]
                    pairs = [(lag, v) for lag, v in zip(lags, g) if v > 0 and math.isfinite(v)]
                    if not pairs:
                        continue
                    colour = cmap(i / max(1, len(epochs) - 1))
                    ax.plot([p[0] for p in pairs], [p[1] for p in pairs], color=colour,
                            linewidth=1.2, label=f"epoch {epoch}")
                    if (lag := underflow_lag(lags, g)) is not None:
                        floors.append((ax, lag, colour))
                if row.final_profile is not None:
                    lags, g = row.final_profile
                    pairs = [(lag, v) for lag, v in zip(lags, g) if v > 0 and math.isfinite(v)]
                    if pairs:
                        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], color="black",
                                linestyle=":", linewidth=1.4, label="weights tested (epoch "
                                + ", ".join(str(e) for e in row.final_epochs) + ")")
                        if (lag := underflow_lag(lags, g)) is not None:
                            floors.append((ax, lag, "black"))
                ax.set_yscale("log")
                ax.set_xlabel("lag k (steps before the final step)")
                if len(epochs) <= 6:
                    ax.set_title(row.label, fontsize=9)
                    ax.legend(fontsize=6)
                else:  # too many for a legend: dark (first) to light (last)
                    ax.set_title(f"{row.label} (epochs {epochs[0]}–{epochs[-1]}, dark → light)",
                                 fontsize=8)
            if floors:  # on the shared floor, once every line is drawn
                low, high = flat[0].get_ylim()
                note = "g = 0 from here (below float32)"
                for ax in {id(a): a for a, _, _ in floors}.values():
                    ax.set_ylim(low, high)
                    if ax.get_legend() is not None:  # one more entry in the panel's legend
                        ax.plot([], [], marker="v", color="grey", linestyle="none", label=note)
                        ax.legend(fontsize=6)
                    else:
                        ax.text(0.98, 0.98, r"$\blacktriangledown$ " + note, fontsize=6,
                                transform=ax.transAxes, ha="right", va="top")
                for ax, lag, colour in floors:
                    ax.plot([lag], [low], marker="v", color=colour, markersize=6,
                            linestyle="none", clip_on=False, zorder=5)
            for line in axes:
                line[0].set_ylabel(r"$g(k) = \|\partial L_T / \partial x_{T-k}\|$")
            fig.suptitle(f"{section.title}: gradient flow through time")
            fig.tight_layout()
            return _png(fig)
    return None


def importance(section: TaskSection) -> bytes | None:
    """Horizontal bars of the fANOVA importance of each hyperparameter."""
    imp = section.importance
    if imp is None or not imp.values:
        return None
    plt = _pyplot()
    with _style():
        names = [k for k, _ in imp.values][::-1]
        values = [v for _, v in imp.values][::-1]
        fig, ax = plt.subplots(figsize=(6.0, 0.45 * len(names) + 1.2))
        ax.barh(names, values, color="#4C72B0")
        ax.set_xlabel("fraction of the objective's variance (fANOVA)")
        # two lines: a long section title would otherwise run off the figure
        ax.set_title(f"{section.title}\nhyperparameter importance ({imp.n_trials} trials)")
        fig.tight_layout()
        return _png(fig)
