"""Hyperparameter sweeps: keras-tuner oracles, search spaces from config, MLflow child
runs per trial, resume after a crash, chief/worker distribution.

- :mod:`rnnbench.tuning.configs`: the ``tuner`` and ``search_space`` schema (light).
- :mod:`rnnbench.tuning.space`: a search space as keras-tuner hyperparameters, and a
  trial's hyperparameters as a run config.
- :mod:`rnnbench.tuning.record`: the sweep's MLflow record (parent run, trial runs).
- :mod:`rnnbench.tuning.tuner`: the oracles and the tuner that runs each trial through
  :func:`rnnbench.train.run`.
- :mod:`rnnbench.tuning.app`: a sweep from start to end (``rnnbench-tune``'s job is in
  :mod:`rnnbench.cli.job`).

Importing this package is light; the modules that import Keras load on demand.
"""
