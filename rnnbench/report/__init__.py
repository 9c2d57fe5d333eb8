"""Benchmark reports from MLflow runs (``rnnbench-report``).

Reads MLflow only, through :mod:`rnnbench.tracking`; never imports TensorFlow.
The data flows down this list:

- :mod:`rnnbench.report.collect`: which runs (experiment, filter, sweep) → ``RunRecord``s.
- :mod:`rnnbench.report.runs`: how a run is read (what varies, what is averaged in).
- :mod:`rnnbench.report.analysis`: task sections and rows per cell, with
  :mod:`~rnnbench.report.compare` (ranking, paired and unpaired tests),
  :mod:`~rnnbench.report.gradient_flow` (the diagnostics' profiles) and
  :mod:`~rnnbench.report.sweeps` (a sweep's objective, fANOVA importance through
  :mod:`~rnnbench.report.importance`); the result is :mod:`~rnnbench.report.content`.
- :mod:`rnnbench.report.stats`: confidence intervals, the tests, Holm's correction, MDE.
- :mod:`rnnbench.report.render`: the analysis as a :mod:`~rnnbench.report.document`
  (headings, tables, figures from :mod:`~rnnbench.report.figures`).
- :mod:`rnnbench.report.writers`: the document as Markdown, self-contained HTML, CSV.
- :mod:`rnnbench.report.cli`: the command line.
"""
