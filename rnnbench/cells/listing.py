"""`rnnbench cells [--d 64] [--n 256]`: a table of every cell of the spec.

Reads only the registry: it does not import Keras.
"""

from __future__ import annotations

import argparse

from rnnbench.cells.registry import CELLS


def format_table(d: int, n: int) -> str:
    """The table `main` prints, for input size `d` and `n` units."""
    header = ("cell", f"params (d={d}, n={n})", "Keras built-in", "equations")
    rows = [
        (
            spec.name,
            f"{spec.param_count(d, n):,}",
            "yes" if spec.has_builtin else "no",
            spec.summary,
        )
        for spec in CELLS.values()
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(3)]
    lines = []
    for row in [header, None, *rows]:
        if row is None:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(header[3]))
            continue
        name, params, builtin, summary = row
        lines.append(
            f"{name:<{widths[0]}}  {params:>{widths[1]}}  {builtin:<{widths[2]}}  {summary}"
        )
    lines.append("")
    lines.append(
        "params: weights the spec's equations need. Keras's GRU (gru, built-in) also keeps "
        f"recurrent biases for z and r: +2n = +{2 * n:,}."
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Prints every cell: name, parameter count, whether Keras has it, equations.

    Args:
        argv: command-line arguments after `rnnbench cells`, e.g. `["--n", "128"]`.

    Returns:
        The exit status, 0.
    """
    parser = argparse.ArgumentParser(
        prog="rnnbench cells", description="List every recurrent cell rnnbench implements."
    )
    parser.add_argument("--d", type=int, default=64, help="input size (default 64)")
    parser.add_argument("--n", type=int, default=256, help="number of units (default 256)")
    args = parser.parse_args(argv)
    if args.d < 1 or args.n < 1:
        parser.error("--d and --n must be positive")
    print(format_table(args.d, args.n))
    return 0
