"""Keras callbacks of a training run: per-epoch MLflow logging, the non-finite guard,
the interrupt check, learning curves."""

from __future__ import annotations

import io
import math
import time
from typing import Any

import keras

from rnnbench import interrupt
from rnnbench.tracking import Artifacts, Metrics


class InterruptCheck(keras.callbacks.Callback):
    """Raises KeyboardInterrupt again before any batch and after each epoch once Ctrl-C
    or SIGTERM came, in case library code swallowed the first one (see
    :mod:`rnnbench.interrupt`). Batch *begin* hooks run in the main thread and leave
    Keras's asynchronous dispatch of batch-end hooks as it is."""

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        interrupt.raise_if_requested()

    def on_test_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        interrupt.raise_if_requested()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        interrupt.raise_if_requested()


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss or gradient and remembers where.

    ``failure`` is None, or ``{"what": "loss" | "gradient", "epoch": e, "step": s}``
    (1-based epoch, 0-based step within the epoch). The loss is the one Keras reports
    after each step. Gradients are checked when gradient norms are recorded
    (``rnnbench.diagnostics.attach``, on by default), which keeps the iteration of
    the first step whose gradient norm before clipping was NaN or infinite; the guard
    reads it only when the loss turns non-finite (a non-finite gradient makes the
    weights, then the next loss, non-finite) and at the end of each epoch, so that it
    costs nothing per step. A step whose own loss is non-finite is reported as
    ``loss``; a finite loss followed by a non-finite gradient as ``gradient``, at the
    gradient's step. Other components may call :meth:`report`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failure: dict[str, Any] | None = None
        self.epoch = 0
        self._recorder: Any = None
        self._starts: list[tuple[int, int]] = []  # (epoch, iteration of its first step)

    def on_train_begin(self, logs: dict | None = None) -> None:
        from rnnbench.diagnostics.gradient_norms import recorder_of

        self._recorder = recorder_of(getattr(self.model, "optimizer", None))
        self._starts = []
        self._known_bad = (self._recorder.first_nonfinite_iteration()
                           if self._recorder is not None else -1)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1
        if self._recorder is not None:
            self._starts.append((self.epoch, self._recorder.iterations()))

    def report(self, what: str, step: int, epoch: int | None = None) -> None:
        if self.failure is None:
            self.failure = {"what": what, "epoch": epoch or self.epoch, "step": step}
        self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            start = self._starts[-1][1] if self._starts else None
            if not self._check_gradient(before=None if start is None else start + batch):
                self.report("loss", batch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.failure is None:
            self._check_gradient()

    def _check_gradient(self, before: int | None = None) -> bool:
        """Report a non-finite gradient of an iteration before ``before`` (any, if None)."""
        if self._recorder is None:
            return False
        it = self._recorder.first_nonfinite_iteration()
        if it < 0 or it == self._known_bad or (before is not None and it >= before):
            return False
        epoch, start = next(((e, s) for e, s in reversed(self._starts) if s <= it),
                            (self.epoch, it))
        self.report("gradient", it - start, epoch)
        return True


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
        metrics[Metrics.EPOCH_TIME_S] = seconds
        if seconds > 0:
            metrics[Metrics.THROUGHPUT] = self._steps * self.batch_size / seconds
        self.run.log_metrics(metrics, step=epoch + 1)


def learning_curves_figure(history: dict[str, list[float]], task: str, cell: str,
                           units: dict[str, tuple[float, str]] | None = None) -> Any:
    """The learning curves, one panel per metric (train and val), epochs as integers; a
    metric listed in ``units`` (``{name: (factor, unit)}``) is drawn times its factor,
    in its unit. None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    if not names:
        return None
    units = units or {}
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        factor, unit = units.get(name, (1.0, ""))
        epochs = range(1, len(history[name]) + 1)
        ax.plot(epochs, [v * factor for v in history[name]], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, [v * factor for v in history[f"val_{name}"]], marker="o",
                    label="val")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name} ({unit})" if unit else name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{task} · {cell}")
    fig.tight_layout()
    return fig


def log_learning_curves(run: Any, history: dict[str, list[float]], task: str, cell: str,
                        units: dict[str, tuple[float, str]] | None = None) -> None:
    """Save the learning curves (one panel per metric, train and val) as a PNG, and the
    history as CSV (as Keras logged it: normalised where the task normalises)."""
    import matplotlib.pyplot as plt

    fig = learning_curves_figure(history, task, cell, units)
    if fig is None:
        return
    run.log_figure(fig, Artifacts.LEARNING_CURVES)
    plt.close(fig)

    buf = io.StringIO()
    keys = list(history)
    buf.write("epoch," + ",".join(keys) + "\n")
    for i in range(len(history[keys[0]])):
        buf.write(f"{i + 1}," + ",".join(repr(float(history[k][i])) for k in keys) + "\n")
    run.log_text(buf.getvalue(), Artifacts.HISTORY)


def diagnostics_callbacks(cfg: Any, task: Any, data: Any, model: Any, run: Any,
                          early_stopping: Any = None) -> list:
    """The diagnostics component's callbacks (empty when diagnostics are disabled).

    The probe batch is drawn here, once per run, from the validation split with the
    run's seed; with ``diagnostics.gradient_norms`` a gradient-norm recorder is attached
    to the compiled model's optimizer (which the guard then also reads).
    ``early_stopping``: the run's ``EarlyStopping``, placed before these callbacks, so
    that the final evaluation knows which epoch's weights it restored.
    """
    diag = cfg.diagnostics
    if not diag.enabled:
        return []
    from rnnbench.diagnostics import DiagnosticsCallback, attach, draw_probe

    if diag.gradient_norms:
        attach(model)
    probe = draw_probe(task, data, diag.probe_batch_size, cfg.seed)
    return [DiagnosticsCallback(
        run, probe, loss=task.loss(), seq2seq=task.kind == "seq2seq",
        every_n_epochs=diag.every_n_epochs, horizon_fraction=diag.horizon_fraction,
        title=f"{task.name} · {cfg.cell.name} · seed {cfg.seed}",
        early_stopping=early_stopping,
    )]
