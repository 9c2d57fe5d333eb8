"""Benchmark reports from MLflow runs (``rnnbench-report``).

Reads MLflow only, through :mod:`rnnbench.tracking`; never imports TensorFlow.

- :mod:`rnnbench.report.collect`: which runs (experiment, filter, sweep) → ``RunRecord``s.
- :mod:`rnnbench.report.stats`: confidence intervals, Welch's t-test, Holm's correction.
- :mod:`rnnbench.report.analysis`: task sections, rows per cell, comparisons.
- :mod:`rnnbench.report.importance`: fANOVA hyperparameter importance (optuna).
- :mod:`rnnbench.report.figures`: learning curves, gradient flow, importance (PNG).
- :mod:`rnnbench.report.render`: Markdown, self-contained HTML, CSV.
- :mod:`rnnbench.report.cli`: the command line.
"""
