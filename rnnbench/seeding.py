"""One seed for every random generator a run draws from.

A run's seed (``seed=``) must reach Python's ``random``, NumPy's global generator and the
Keras backend's (TensorFlow, JAX or torch, through ``keras.utils.set_random_seed``):
weight initialisation, dropout masks and data shuffling each read a different one.
Seeding alone does not make a run repeat bit for bit on every device; that also needs
``hardware.deterministic`` (see :mod:`rnnbench.hardware`).
"""

from __future__ import annotations

import random


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the Keras backend with ``seed``; imports Keras, so the
    backend must have been chosen."""
    import keras
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
