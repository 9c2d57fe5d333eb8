"""Hardware setup by config, and a record of what actually ran.

``select_backend`` runs before Keras is imported (Keras reads ``KERAS_BACKEND`` once).
``setup`` then makes the devices, precision, determinism and distribution strategy
match ``cfg.hardware`` or fails with a message, never silently running elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import random
import sys
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from rnnbench.errors import ConfigError, HardwareError


def select_backend(name: str) -> None:
    """Choose the Keras backend; must run before ``import keras``."""
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[name]
    if importlib.util.find_spec(module) is None:
        raise HardwareError(
            f"backend={name}: the package '{module}' is not installed. Install it "
            f"(pip install {module}) or use backend=tensorflow."
        )
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", "tensorflow") != name:
        import keras

        if keras.backend.backend() != name:
            raise HardwareError(
                f"backend={name}: Keras was already imported with the "
                f"{keras.backend.backend()} backend in this process; start a new process."
            )
    os.environ["KERAS_BACKEND"] = name
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass
class HardwareInfo:
    """What the run uses: logged as tags."""

    backend: str
    device: str
    visible_devices: list[str]
    precision: str
    jit_compile: Any
    deterministic: bool
    replicas: int = 1
    strategy: Any = None
    lr_scale: float = 1.0
    notes: list[str] = field(default_factory=list)

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else nullcontext()

    def tags(self) -> dict[str, str]:
        return {
            "backend": self.backend,
            "device": self.device,
            "visible_devices": ",".join(self.visible_devices),
            "precision": self.precision,
            "xla": "on" if self.jit_compile is True else "off",
            "deterministic": str(self.deterministic).lower(),
            "replicas": str(self.replicas),
            "cpu": platform.processor() or platform.machine(),
        }


def _tf_devices(hw) -> tuple[list[str], list[str]]:
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    if hw.logical_cpus and hw.logical_cpus > 1 and cpus:
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * hw.logical_cpus)
        except RuntimeError:
            pass  # already initialised in this process (tests); keep what is there
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus_l = [d.name for d in tf.config.list_logical_devices("CPU")]
    return cpus_l, gpus


def _gpus_for(backend: str, hw) -> tuple[list[str], list[str]]:
    if backend == "tensorflow":
        return _tf_devices(hw)
    if backend == "jax":
        import jax

        return ([str(d) for d in jax.devices("cpu")],
                [str(d) for d in jax.devices() if d.platform == "gpu"])
    import torch

    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"], gpus


def setup(hw, backend: str, seed: int) -> HardwareInfo:
    """Apply ``hw`` (the ``hardware`` config) and seed every generator with ``seed``."""
    cpus, gpus = _gpus_for(backend, hw)
    device = hw.device
    notes: list[str] = []
    if device == "gpu" and not gpus:
        if hw.fallback == "cpu":
            notes.append("no GPU visible: fell back to the CPU (hardware.fallback=cpu)")
            warnings.warn(notes[-1], stacklevel=2)
            device = "cpu"
        else:
            raise HardwareError(
                f"hardware={hw.name} asks for a GPU, but {backend} sees none on this machine. "
                "Use hardware=cpu, or hardware.fallback=cpu to run on the CPU anyway "
                "(recorded as such), or install the GPU build (pip install -e '.[gpu]')."
            )
    if hw.strategy == "mirrored":
        if backend != "tensorflow":
            raise ConfigError("hardware.strategy=mirrored needs backend=tensorflow.")
        pool = gpus if device == "gpu" else cpus
        if len(pool) < max(2, hw.num_devices):
            raise HardwareError(
                f"hardware={hw.name} asks for {max(2, hw.num_devices)} {device.upper()} devices "
                f"with MirroredStrategy, but {len(pool)} are visible ({', '.join(pool) or 'none'})."
                " Use hardware=gpu for one device, or on the CPU split it with "
                "hardware.logical_cpus=2."
            )
    if hw.precision == "mixed_float16" and device == "cpu":
        warnings.warn(
            "hardware.precision=mixed_float16 on a CPU is usually slower than float32 "
            "(no fast float16 kernels); use mixed_bfloat16 or float32 on the CPU.",
            stacklevel=2,
        )

    import keras
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if hw.deterministic and backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(hw.precision)

    strategy, replicas = None, 1
    if hw.strategy == "mirrored":
        import tensorflow as tf

        pool = gpus if device == "gpu" else cpus
        strategy = tf.distribute.MirroredStrategy(devices=pool[: max(2, hw.num_devices)])
        replicas = strategy.num_replicas_in_sync

    if hw.xla == "on":
        jit: Any = True
    elif hw.xla == "off":
        jit = False
    else:
        # Keras's "auto" turns XLA off on a TF CPU; XLA makes recurrent training ~1.7x
        # faster on this kind of CPU, so auto means on, except where XLA is unsafe.
        jit = not (hw.deterministic or strategy is not None)
    return HardwareInfo(
        backend=backend,
        device=(gpus[0] if device == "gpu" and gpus else (cpus[0] if cpus else "cpu")),
        visible_devices=cpus + gpus,
        precision=hw.precision,
        jit_compile=jit,
        deterministic=hw.deterministic,
        replicas=replicas,
        strategy=strategy,
        lr_scale=float(replicas) if (replicas > 1 and hw.scale_lr) else 1.0,
        notes=notes,
    )
