"""The gradient flow of a row's runs: the profiles of the diagnostics' document
(``diagnostics/grad_flow.json``, see :mod:`rnnbench.diagnostics.artifacts`) and the
``grad_flow/*`` summary metrics, averaged over the runs a row uses.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from rnnbench.report.collect import History
from rnnbench.report.content import Row
from rnnbench.report.runs import mean_of
from rnnbench.tracking import Metrics

Profile = tuple[int, list[float], list[float]]  # (epoch, lags, g)


def parse_gradient_flow(obj: Any) -> list[Profile]:
    """``(epoch, lags, g)`` profiles, by epoch, from the diagnostics' gradient-flow JSON.

    The diagnostics write ``{"epochs": [{"epoch": e, "g": [...], ...}, ...]}`` with
    ``g[k]`` the gradient norm at lag ``k`` (0: the final step) and null for a
    non-finite value; the lags are ``0 … len(g) - 1``. Anything else gives no profile.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("epochs"), list):
        return []
    out: list[Profile] = []
    for i, item in enumerate(obj["epochs"]):
        if not isinstance(item, dict) or not isinstance(item.get("g"), list):
            continue
        try:
            epoch = int(item.get("epoch", i))
            g = [math.nan if x is None else float(x) for x in item["g"]]
        except (TypeError, ValueError):
            continue
        if g:
            out.append((epoch, [float(k) for k in range(len(g))], g))
    return sorted(out, key=lambda p: p[0])


def fill_gradient_flow(row: Row, history: History) -> None:
    """Set ``row.grad_flow`` (mean summaries), ``row.profiles`` (mean profile per evaluated
    epoch) and ``row.final_profile``/``final_epochs`` (the weights the test metrics come
    from) from the runs the row uses."""
    flows = defaultdict(list)
    for r in row.used:
        for k, v in r.metrics.items():
            if k.startswith(Metrics.GRAD_FLOW_PREFIX):
                flows[k.removeprefix(Metrics.GRAD_FLOW_PREFIX)].append(v)
    row.grad_flow = {k: mean_of(v) for k, v in sorted(flows.items())}
    profiles: dict[int, list[tuple[list[float], list[float]]]] = defaultdict(list)
    for r in row.used:
        for epoch, lags, g in parse_gradient_flow(history.gradient_flow(r.run_id)):
            profiles[epoch].append((lags, g))
    for epoch, items in sorted(profiles.items()):
        lags = items[0][0]
        same = [g for lg, g in items if lg == lags]
        row.profiles[epoch] = (lags, [mean_of(col) for col in zip(*same)])
    finals = []
    for r in row.used:
        obj = history.gradient_flow(r.run_id)
        final = obj.get("final") if isinstance(obj, dict) else None
        if isinstance(final, dict) and isinstance(final.get("g"), list):
            parsed = parse_gradient_flow({"epochs": [final]})
            if parsed:
                finals.append(parsed[0])
    if finals:
        lags = finals[0][1]
        same = [g for _, lg, g in finals if lg == lags]
        row.final_profile = (lags, [mean_of(col) for col in zip(*same)])
        row.final_epochs = sorted({e for e, _, _ in finals})
