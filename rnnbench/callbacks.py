"""Keras callbacks of a training run: per-epoch MLflow logging, the non-finite guard,
learning curves."""

from __future__ import annotations

import io
import math
import time
from typing import Any

import keras


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where it happened.

    ``failure`` is None, or ``{"what": "loss", "epoch": e, "step": s}`` (1-based epoch,
    0-based step within the epoch). Other components (the gradient-norm diagnostics)
    may set ``what="gradient"`` through :meth:`report`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failure: dict[str, Any] | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1

    def report(self, what: str, step: int) -> None:
        if self.failure is None:
            self.failure = {"what": what, "epoch": self.epoch, "step": step}
        self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.report("loss", batch)


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch's Keras metrics (train and ``val_``), its wall time and its
    throughput to the MLflow run, with ``step`` = epoch number (1-based)."""

    def __init__(self, run: Any, batch_size: int) -> None:
        super().__init__()
        self.run = run
        self.batch_size = batch_size
        self._t0 = 0.0
        self._steps = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps = batch + 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._t0
        metrics = {k: float(v) for k, v in (logs or {}).items()
                   if isinstance(v, (int, float)) or hasattr(v, "__float__")}
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        metrics["epoch_time_s"] = seconds
        if seconds > 0:
            metrics["throughput_samples_per_s"] = self._steps * self.batch_size / seconds
        self.run.log_metrics(metrics, step=epoch + 1)


def log_learning_curves(run: Any, history: dict[str, list[float]], task: str, cell: str) -> None:
    """Save the learning curves (one panel per metric, train and val) as a PNG and CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", label="val")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{task} · {cell}")
    fig.tight_layout()
    run.log_figure(fig, "plots/learning_curves.png")
    plt.close(fig)

    buf = io.StringIO()
    keys = list(history)
    buf.write("epoch," + ",".join(keys) + "\n")
    for i in range(len(history[keys[0]])):
        buf.write(f"{i + 1}," + ",".join(repr(float(history[k][i])) for k in keys) + "\n")
    run.log_text(buf.getvalue(), "history.csv")


def diagnostics_callbacks(cfg: Any, task: Any, data: Any, model: Any, run: Any) -> list:
    """The diagnostics component's callbacks (empty when diagnostics are disabled)."""
    return []
