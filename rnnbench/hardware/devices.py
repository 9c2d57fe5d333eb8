"""Hardware setup by config: backend, devices, threads, precision, determinism, XLA and
the distribution strategy.

``select_backend`` runs before Keras is imported (Keras reads ``KERAS_BACKEND`` once).
``setup`` then makes the devices, precision, determinism and distribution strategy
match ``cfg.hardware`` or fails with a message, never silently running elsewhere, and
seeds every generator (:mod:`rnnbench.seeding`). What the compiled model then really
runs on is read back by :mod:`rnnbench.hardware.what_ran`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import sys
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

from rnnbench.errors import ConfigError, HardwareError
from rnnbench.hardware import maps
from rnnbench.hardware.what_ran import determinism_message, is_determinism_error
from rnnbench.seeding import seed_everything
from rnnbench.tracking.schema import EnvTags, Tags

_BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
_INSTALL_HINTS = {"tensorflow": "pip install 'tensorflow>=2.21,<2.22'",
                  "jax": "pip install 'jax[cpu]' (or 'jax[cuda12]' on a GPU machine)",
                  "torch": "pip install torch"}

_MIXED_FLOAT16_ON_CPU = (
    "hardware.precision=mixed_float16 on a CPU is usually slower than float32 (CPUs have "
    "few fast float16 kernels): use hardware.precision=mixed_bfloat16 or float32 on the "
    "CPU, and mixed_float16 on a GPU."
)


def select_backend(name: str) -> None:
    """Choose the Keras backend; must run before ``import keras``.

    Args:
        name: ``tensorflow``, ``jax`` or ``torch``.
    """
    module = _BACKEND_PACKAGES[name]
    if importlib.util.find_spec(module) is None:
        raise HardwareError(
            f"backend={name}: the package '{module}' is not installed in this Python "
            f"({sys.executable}). Install it ({_INSTALL_HINTS[name]}) or use "
            "backend=tensorflow."
        )
    if "keras" in sys.modules:
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
    """What a run asked for and got from :func:`setup`; its :meth:`tags` go to MLflow.

    Args:
        backend: the Keras backend.
        device: the device the run computes on (the first of ``devices_used``).
        visible_devices: every device the backend sees.
        precision: the Keras dtype policy.
        jit_compile: the value passed to ``model.compile`` (Keras may still turn XLA
            off: :func:`what_ran` reads what the compiled model does).
        deterministic: whether op determinism is on.
        replicas: data-parallel replicas (1 without a strategy).
        strategy: the ``tf.distribute`` strategy, or None.
        lr_scale: factor applied to ``optimizer.lr`` (linear scaling with replicas).
        notes: what the user should know (fallbacks, overridden requests).
        device_type: ``cpu`` or ``gpu``, what the run uses.
        devices_used: the devices that hold a replica.
        xla_request: ``hardware.xla`` as configured.
        device_name: the GPU's model name (empty on the CPU).
    """

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
    device_type: str = "cpu"
    devices_used: list[str] = field(default_factory=list)
    xla_request: str = "auto"
    device_name: str = ""

    def scope(self):
        """The distribution strategy's scope (build and compile the model inside it)."""
        return self.strategy.scope() if self.strategy is not None else nullcontext()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn TensorFlow's "no deterministic kernel" errors into a HardwareError."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is that error
            if self.deterministic and is_determinism_error(exc):
                raise HardwareError(determinism_message(exc, self)) from None
            raise

    def tags(self) -> dict[str, str]:
        """The hardware tags known before the model exists."""
        tags = {
            EnvTags.BACKEND: self.backend,
            EnvTags.DEVICE: self.device,
            EnvTags.DEVICE_TYPE: self.device_type,
            EnvTags.DEVICES_USED: ",".join(self.devices_used or [self.device]),
            EnvTags.VISIBLE_DEVICES: ",".join(self.visible_devices),
            EnvTags.PRECISION: self.precision,
            Tags.XLA: "on" if self.jit_compile is True else "off",
            EnvTags.XLA_REQUESTED: self.xla_request,
            EnvTags.DETERMINISTIC: str(self.deterministic).lower(),
            EnvTags.REPLICAS: str(self.replicas),
            EnvTags.LR_SCALE: f"{self.lr_scale:g}",
            EnvTags.CPU: cpu_name(),
        }
        if self.device_name:
            tags[EnvTags.DEVICE_NAME] = self.device_name
        if self.backend != "tensorflow":
            module = sys.modules.get(_BACKEND_PACKAGES[self.backend])
            tags[self.backend + EnvTags.VERSION_SUFFIX] = getattr(module, "__version__", "unknown")
        if self.notes:
            tags[EnvTags.HARDWARE_NOTES] = " | ".join(self.notes)
        return tags


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name(backend: str, device: str) -> str:
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            phys = tf.config.list_physical_devices("GPU")
            return tf.config.experimental.get_device_details(phys[0]).get("device_name", "")
        if backend == "jax":
            import jax

            return jax.devices("gpu")[0].device_kind
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a name is a nicety, never a failure
        return ""


def preflight(hw: Any, backend: str) -> list[str]:
    """Check the ``hardware`` config against the backend before any device is touched.

    Raises ConfigError for combinations that cannot work, and returns (and warns
    about) those that work badly.

    Args:
        hw: the ``hardware`` config node.
        backend: the Keras backend name.
    """
    if hw.strategy == "mirrored":
        if backend != "tensorflow":
            raise ConfigError(
                f"hardware.strategy=mirrored is not allowed with backend={backend}: "
                "MirroredStrategy is TensorFlow's. Use backend=tensorflow, or "
                "hardware.strategy=none (one device)."
            )
        if hw.num_devices < 2:
            raise ConfigError(
                f"hardware.num_devices={hw.num_devices} is not allowed with "
                "hardware.strategy=mirrored: data parallelism needs at least 2 devices. "
                "Use hardware.num_devices=2 (or more), or hardware=gpu for one device."
            )
    elif hw.num_devices > 1:
        raise ConfigError(
            f"hardware.num_devices={hw.num_devices} needs hardware.strategy=mirrored "
            f"(now {hw.strategy!r}); without a strategy a run uses one device. "
            "Use hardware=multi_gpu, or hardware.num_devices=1."
        )
    if hw.logical_cpus > 1 and backend != "tensorflow":
        raise ConfigError(
            f"hardware.logical_cpus={hw.logical_cpus} is not allowed with backend={backend}: "
            "splitting the CPU into logical devices is a TensorFlow feature. "
            "Use backend=tensorflow or hardware.logical_cpus=0."
        )
    if hw.xla == "on" and hw.deterministic and backend == "tensorflow":
        raise ConfigError(
            "hardware.xla=on is not allowed with hardware.deterministic=true on "
            "backend=tensorflow: Keras turns XLA off under TensorFlow op determinism. "
            "Use hardware.xla=auto or off (or hardware.deterministic=false)."
        )
    notes: list[str] = []
    if hw.precision == "mixed_float16" and hw.device == "cpu":
        notes.append(_MIXED_FLOAT16_ON_CPU)
    if hw.xla == "off" and backend == "jax":
        notes.append(
            "hardware.xla=off on backend=jax runs every step eagerly (no jax.jit): "
            "much slower; use hardware.xla=auto."
        )
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return notes


class _NewModelRetracing(logging.Filter):
    """Drops TensorFlow's "N out of the last N calls ... triggered tf.function retracing"
    warning. A multirun or a sweep builds a new model per run or trial, each with its own
    train/predict functions; TensorFlow counts their first traces as retracing and
    advises fixes that do not apply."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _quiet_backend_loggers() -> None:
    # Hydra sets the root logger to INFO; these print a line per collective op.
    for name in ("tensorflow", "jax._src.xla_bridge", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    tf_logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NewModelRetracing) for f in tf_logger.filters):
        tf_logger.addFilter(_NewModelRetracing())


def _tf_devices(hw: Any) -> tuple[list[str], list[str]]:
    import tensorflow as tf

    threads = getattr(hw, "threads", 0)
    if threads:
        pools = tf.config.threading
        if (pools.get_intra_op_parallelism_threads(),
                pools.get_inter_op_parallelism_threads()) != (threads, threads):
            try:
                pools.set_intra_op_parallelism_threads(threads)
                pools.set_inter_op_parallelism_threads(threads)
            except RuntimeError:
                warnings.warn(f"hardware.threads={threads} was not applied: TensorFlow was "
                              "already started in this process with other thread pools",
                              stacklevel=2)
    cpus = tf.config.list_physical_devices("CPU")
    if hw.logical_cpus and hw.logical_cpus > 1 and cpus:
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * hw.logical_cpus)
        except RuntimeError:
            pass  # the runtime is already initialised in this process; the count check
            # in setup() reports a mismatch
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    cpus_l = [d.name for d in tf.config.list_logical_devices("CPU")]
    return cpus_l, gpus


def _gpus_for(backend: str, hw: Any) -> tuple[list[str], list[str]]:
    if backend == "tensorflow":
        return _tf_devices(hw)
    if backend == "jax":
        import jax

        try:
            gpus = [str(d) for d in jax.devices("gpu")]
        except RuntimeError:  # no GPU backend in this jaxlib / on this machine
            gpus = []
        return [str(d) for d in jax.devices("cpu")], gpus
    import torch

    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"], gpus


def _set_determinism(backend: str, on: bool, notes: list[str]) -> None:
    if backend == "tensorflow":
        import tensorflow as tf
        from tensorflow.python.framework import config as tf_config

        if on:
            tf.config.experimental.enable_op_determinism()
        elif tf_config.is_op_determinism_enabled():
            # an earlier job of the same multirun turned it on
            tf_config.disable_op_determinism()
    elif backend == "torch" and on:
        import torch

        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _jax_deterministic_flag(notes: list[str]) -> None:
    # XLA reads XLA_FLAGS once, when JAX first starts a backend.
    flag = "--xla_gpu_deterministic_ops=true"
    if flag in os.environ.get("XLA_FLAGS", ""):
        return
    if "jax" in sys.modules:
        notes.append("JAX was already started in this process: XLA's GPU determinism flag "
                     "could not be set (CPU runs are deterministic anyway)")
        return
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def setup(hw: Any, backend: str, seed: int) -> HardwareInfo:
    """Apply ``hw`` (the ``hardware`` config) and seed every generator with ``seed``.

    Args:
        hw: the ``hardware`` config node.
        backend: the Keras backend chosen by :func:`select_backend`.
        seed: seeds Python, NumPy and the backend.

    Raises:
        HardwareError: the asked-for devices are not there (and ``fallback`` is ``fail``).
        ConfigError: the hardware keys do not fit together or with the backend.
        HardwareError: another run could take this process past the kernel's limit on
            memory maps (:mod:`rnnbench.hardware.maps`).
    """
    notes = preflight(hw, backend)
    maps.check_headroom()
    _quiet_backend_loggers()
    if hw.deterministic and backend == "jax":
        _jax_deterministic_flag(notes)
    cpus, gpus = _gpus_for(backend, hw)
    device = hw.device
    if device == "gpu" and not gpus:
        if hw.fallback == "cpu":
            notes.append("no GPU visible: fell back to the CPU (hardware.fallback=cpu)")
            warnings.warn(notes[-1], stacklevel=2)
            device = "cpu"
        else:
            raise HardwareError(
                f"hardware={hw.name} asks for a GPU, but {backend} sees none on this machine "
                f"(visible: {', '.join(cpus) or 'nothing'}). Use hardware=cpu, or "
                "hardware.fallback=cpu to run on the CPU anyway (recorded as such), or "
                "install the GPU build (pip install -e '.[gpu]')."
            )
    if device == "cpu" and hw.precision == "mixed_float16" and hw.device != "cpu":
        notes.append(_MIXED_FLOAT16_ON_CPU)  # after a fallback from the GPU
        warnings.warn(notes[-1], stacklevel=2)
    pool = gpus if device == "gpu" else cpus
    if hw.strategy == "mirrored" and len(pool) < hw.num_devices:
        hint = ("Use hardware=gpu for one GPU" if device == "gpu" else
                f"Split the CPU with hardware.logical_cpus={hw.num_devices}, or use "
                "hardware=cpu for one device")
        raise HardwareError(
            f"hardware={hw.name} asks for {hw.num_devices} {device.upper()} devices with "
            f"MirroredStrategy (hardware.num_devices={hw.num_devices}), but {len(pool)} "
            f"{'is' if len(pool) == 1 else 'are'} visible ({', '.join(pool) or 'none'}). "
            f"{hint}."
        )

    import keras

    seed_everything(seed)
    _set_determinism(backend, hw.deterministic, notes)
    keras.mixed_precision.set_global_policy(hw.precision)

    strategy, replicas = None, 1
    used = [pool[0]] if pool else [device]
    if hw.strategy == "mirrored":
        import tensorflow as tf

        used = pool[: hw.num_devices]
        strategy = tf.distribute.MirroredStrategy(devices=used)
        replicas = strategy.num_replicas_in_sync

    if hw.xla == "on":
        jit: Any = True
    elif hw.xla == "off":
        jit = False
    elif backend == "tensorflow":
        # Keras's "auto" turns XLA off on a TF CPU, where XLA speeds up the project's own
        # cells (`docs/hardware.md`), so auto means on, except where Keras refuses XLA
        # (op determinism, tf.distribute). Keras still drops it for cuDNN layers.
        jit = not (hw.deterministic or strategy is not None)
    else:
        jit = backend == "jax"  # Keras's own defaults: jax.jit on JAX, eager on torch
    return HardwareInfo(
        backend=backend,
        device=used[0],
        visible_devices=cpus + gpus,
        precision=hw.precision,
        jit_compile=jit,
        deterministic=hw.deterministic,
        replicas=replicas,
        strategy=strategy,
        lr_scale=float(replicas) if (replicas > 1 and hw.scale_lr) else 1.0,
        notes=notes,
        device_type=device,
        devices_used=list(used),
        xla_request=hw.xla,
        device_name=_gpu_name(backend, used[0]) if device == "gpu" else "",
    )
