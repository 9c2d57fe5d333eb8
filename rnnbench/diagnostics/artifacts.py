"""The gradient-flow artifacts of a run: the profiles as JSON and CSV, and a heatmap.

``diagnostics/grad_flow.json``: ``{"definition", "horizon_fraction", "epochs": [{"epoch",
"g", "examples", "summary"}], "final": {…}}``, one entry per evaluated epoch (epoch 0:
the weights before training), ``g[k]`` the gradient norm at lag ``k``, ``examples[k]``
how many probe sequences have a real step at lag ``k`` (the mean runs over those).
``final``: the same for the weights the model ends training with (restored by early
stopping), with ``"epoch"`` the epoch after which it had them; its ``summary`` is what
the run's ``grad_flow/*`` metrics show.
``diagnostics/grad_flow.csv``: the same as rows ``epoch,lag,g,examples``.
``diagnostics/grad_flow_heatmap.png``: epoch × lag, log colour scale, next to the
profiles of the first and last evaluated epochs.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from rnnbench.diagnostics.flow import FlowProfile

DEFINITION = (
    "g[k] = mean over the probe sequences that have a real step at lag k (examples[k] of "
    "them) of the per-sequence L2 norm (over features) of dL_b/dx_{b,T_b-k}: T_b the "
    "last real (not padded) step of sequence b, L_b the loss at that step (seq2seq: "
    "that step's loss only), x the input of the first recurrent layer, k the lag before "
    "T_b."
)


def profile_table(rows: list[tuple[int, FlowProfile, dict[str, float]]],
                  horizon_fraction: float,
                  final: tuple[int, FlowProfile, dict[str, float]] | None = None
                  ) -> dict[str, Any]:
    """The JSON document of the evaluated epochs ``(epoch, profile, summary)`` and of
    the final evaluation, on the weights training ended with."""
    def clean(values: np.ndarray) -> list:
        return [float(v) if math.isfinite(v) else None for v in np.asarray(values, float)]

    def entry(e: int, p: FlowProfile, s: dict[str, float]) -> dict[str, Any]:
        return {"epoch": e, "g": clean(p.g), "examples": [int(c) for c in p.examples],
                "summary": s}

    table = {
        "definition": DEFINITION,
        "horizon_fraction": horizon_fraction,
        "epochs": [entry(*row) for row in rows],
    }
    if final is not None:
        table["final"] = entry(*final)
    return table


def profile_csv(rows: list[tuple[int, FlowProfile, dict[str, float]]]) -> str:
    buf = io.StringIO()
    buf.write("epoch,lag,g,examples\n")
    for epoch, profile, _ in rows:
        for lag, (g, n) in enumerate(zip(profile.g, profile.examples)):
            buf.write(f"{epoch},{lag},{g!r},{int(n)}\n")
    return buf.getvalue()


def _underflow_lag(g: np.ndarray) -> int | None:
    """The first lag at which a profile that was positive is exactly 0 (below float32),
    or None. The report has its own (``rnnbench.report.figures.underflow_lag``): it never
    imports this package, which loads Keras."""
    positive = np.flatnonzero(np.isfinite(g) & (g > 0))
    if not positive.size:
        return None
    zeros = np.flatnonzero(g[positive[0]:] == 0)
    return int(positive[0] + zeros[0]) if zeros.size else None


def heatmap_figure(rows: list[tuple[int, FlowProfile, dict[str, float]]], title: str = "",
                   final: tuple[int, FlowProfile, dict[str, float]] | None = None):
    """Matplotlib figure: g(epoch, lag) on a log colour scale, and the first and last
    profiles on a log axis (and the final one, on the weights training ended with)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    lags = max(len(p.g) for _, p, _ in rows)
    grid = np.full((len(rows), lags), np.nan)
    for i, (_, p, _) in enumerate(rows):
        grid[i, :len(p.g)] = p.g
    positive = grid[np.isfinite(grid) & (grid > 0)]
    grid = np.where(np.isfinite(grid) & (grid > 0), grid, np.nan)
    vmin, vmax = (positive.min(), positive.max()) if positive.size else (1e-12, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin / 10, vmax * 10
    epochs = [e for e, _, _ in rows]

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8),
                                  gridspec_kw={"width_ratios": [1.5, 1]})
    mesh = ax.imshow(grid, aspect="auto", origin="lower", interpolation="nearest",
                     norm=LogNorm(vmin=vmin, vmax=vmax), cmap="viridis",
                     extent=(-0.5, lags - 0.5, -0.5, len(rows) - 0.5))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda v, _: str(epochs[int(v)]) if 0 <= int(v) < len(epochs) and v == int(v) else ""))
    ax.set_xlabel("lag $k$ (steps before the last real step)")
    ax.set_ylabel("epoch (0 = before training)")
    ax.set_title(r"gradient norm $g(k) = \|\partial L_T / \partial x_{T-k}\|$")
    zeros = bool(np.any(np.stack([np.pad(p.g, (0, lags - len(p.g)), constant_values=1.0)
                                  for _, p, _ in rows]) == 0))
    fig.colorbar(mesh, ax=ax, label="g (log scale)" + ("; blank: g = 0" if zeros else ""))

    drawn = [(rows[0], "-", "epoch {}")]
    if len(rows) > 1:
        drawn.append((rows[-1], "--", "epoch {}"))
    if final is not None:
        drawn.append((final, ":", "final (epoch {} weights)"))
    floors = []  # (lag, colour): where a profile that was positive reaches exactly 0
    for (e, p, _), style, label in drawn:
        ok = np.isfinite(p.g) & (p.g > 0)
        (line,) = ax2.semilogy(np.arange(len(p.g))[ok], p.g[ok], style, label=label.format(e))
        if (lag := _underflow_lag(p.g)) is not None:
            floors.append((lag, line.get_color()))
    if floors:  # below float32: no place on a log axis, so a marker on the floor
        low = ax2.get_ylim()[0]
        ax2.set_ylim(low, ax2.get_ylim()[1])
        for lag, colour in floors:
            ax2.plot([lag], [low], marker="v", color=colour, linestyle="none", clip_on=False)
        ax2.plot([], [], marker="v", color="grey", linestyle="none",
                 label="g = 0 from here (below float32)")
    ax2.set_xlabel("lag $k$")
    ax2.set_ylabel("$g(k)$")
    ax2.set_title("profile")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
