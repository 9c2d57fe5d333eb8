"""fgr-weights.csv: the weights of `peephole` and `fgr` (recurrent layer and output layer)
at every point of the search space both were trained at, from the finished trials in
the report's tables/runs.csv and the cells' own parameter counts.

    python experiments/greff/fgr_weights.py   # after rnnbench-report --out experiments/greff
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
sys.path.insert(0, str(FOLDER.parent.parent))

# (input features, output units) of each task's model
SIZES = {"chorales": (88, 88), "speech_vowels": (12, 9)}


def points(runs_csv: Path) -> dict[tuple[str, str], set[tuple[int, str]]]:
    """(task, cell) -> the (units, learning rate) of its finished trials."""
    out: dict[tuple[str, str], set[tuple[int, str]]] = {}
    with runs_csv.open(newline="") as f:
        for r in csv.DictReader(f):
            if r["status"] != "FINISHED" or r["run_kind"] != "trial":
                continue
            units = int(re.search(r"model\.units=(\d+)", r["command"]).group(1))
            lr = re.search(r"optimizer\.lr=(\S+)", r["command"]).group(1)
            out.setdefault((r["task"].split(" ")[0], r["cell"]), set()).add((units, lr))
    return out


def weights(cell: str, task: str, units: int) -> int:
    from rnnbench.cells import CELLS

    d, k = SIZES[task]
    return CELLS[cell].param_count(d, units) + units * k + k


def main() -> int:
    pts = points(FOLDER / "tables" / "runs.csv")
    rows = []
    for task in SIZES:
        shared = pts.get((task, "fgr"), set()) & pts.get((task, "peephole"), set())
        for units, lr in sorted(shared, key=lambda p: (p[0], float(p[1]))):
            a, b = weights("peephole", task, units), weights("fgr", task, units)
            rows.append({"task": task, "units": units, "lr": lr, "peephole_weights": a,
                         "fgr_weights": b, "ratio": b / a})
    with (FOLDER / "fgr-weights.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["task", "units", "lr", "peephole_weights",
                                          "fgr_weights", "ratio"])
        w.writeheader()
        w.writerows(rows)
    for task in SIZES:
        r = [x["ratio"] for x in rows if x["task"] == task]
        if r:
            print(f"{task}: {len(r)} shared points, fgr/peephole weights "
                  f"{min(r):.2f}-{max(r):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
