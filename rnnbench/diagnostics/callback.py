"""The Keras callback that computes the diagnostics during ``fit`` and logs them to MLflow.

Per epoch (step = epoch, 1-based): the gradient-norm statistics of the epoch's steps
(read once from the recorder). Before training (step = the initial epoch, 0 for a fresh
run), after every ``every_n_epochs``-th epoch and after the last epoch ``fit`` was asked
for: the gradient-flow summaries, the gate statistics on the probe batch and the
spectral norms. At the end of training, once more on the weights the model ends with
(those ``EarlyStopping`` restored, whose test metrics the run reports): that final
evaluation is logged last, at the step of the last epoch, so that it is what MLflow (and
``rnnbench-report``) shows as each probe metric's value; its epoch (the epoch after
which the model had these weights) is the metric ``grad_flow/weights_epoch`` and the
tag ``diagnostics_weights_epoch``. Then the gradient-flow profiles as artifacts under
``diagnostics/``.

Where the time goes: on the default task an epoch is only 25 steps, and one probe
evaluation (a forward and backward pass through time plus a gate trace, on 32
sequences) costs about as much as one or two training steps; a write to MLflow's
SQLite store costs about 5 ms of CPU time and 20 ms of wall time whatever it holds. So
the probe runs on a copy of the model whose weights are refreshed at the end of the
epoch (a few assignments); the evaluation goes to one worker thread, which works while
the next epoch trains; and the metrics are written in one batch at most every
``write_every_s`` seconds (10) and at the end of training, so that in the MLflow UI
they may appear up to that long after their epoch.
At most one evaluation is in flight: the next epoch end waits for it, and the end of
training waits for the last one before the artifacts are written. A model that cannot
be copied (a layer Keras cannot rebuild from its config) is probed in place, in the
training thread.

An epoch with a non-finite loss or gradient logs its gradient-norm statistics (over its
finite steps) but no probe evaluation: the weights may no longer be finite, and the
last evaluation before it stays the last one logged. When it is the last epoch (the run
fails and reports no test metrics), there is no final evaluation either.
"""

from __future__ import annotations

import math
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import keras
import numpy as np

from rnnbench.diagnostics import artifacts
from rnnbench.diagnostics.flow import (
    FLOW_BACKENDS,
    FlowProfile,
    GradientFlow,
    summarize,
    valid_steps,
)
from rnnbench.diagnostics.gradient_norms import recorder_of
from rnnbench.diagnostics.recurrent import RecurrentProbe
from rnnbench.tracking import Artifacts, Metrics, Tags


def _unstate(node: Any) -> Any:
    """A layer config tree without carried state and with a free batch size."""
    if isinstance(node, dict):
        node = {k: _unstate(v) for k, v in node.items()}
        if node.get("stateful") is True:
            node["stateful"] = False
        if isinstance(node.get("batch_shape"), (list, tuple)):
            node["batch_shape"] = [None, *list(node["batch_shape"])[1:]]
        return node
    if isinstance(node, list):
        return [_unstate(v) for v in node]
    return node


def _pair_weights(weights: list, copy_weights: list) -> list[tuple[Any, Any]]:
    """``(copy's variable, model's variable)`` pairs, matched by path. A wrapper rebuilt
    from its config (Keras's ``Bidirectional``) names the weights of its inner layers
    without its own prefix (``forward_rnn_0/...`` for the model's
    ``bi_rnn_0/forward_rnn_0/...``): those are matched by the one unmatched path that
    ends the model's. Shapes must agree. The model's weights the copy lacks (the carried
    states of a stateful layer) stay unpaired."""
    free = {v.path: v for v in copy_weights}
    pairs, unmatched = [], []
    for src in weights:
        dst = free.pop(src.path, None)
        if dst is None:
            unmatched.append(src)
        elif tuple(dst.shape) == tuple(src.shape):
            pairs.append((dst, src))
    for src in unmatched:
        ends = [p for p in free if src.path.endswith("/" + p)]
        if len(ends) == 1 and tuple(free[ends[0]].shape) == tuple(src.shape):
            pairs.append((free.pop(ends[0]), src))
    return pairs


def detached_copy(model: keras.Model) -> tuple[keras.Model, Callable[[], None]]:
    """``(copy, sync)``: a copy of ``model`` with weights of its own, rebuilt from its
    config without carried state (stateful layers) and with any batch size, and a
    function that copies the model's current weights into it.

    Raises whatever Keras raises when the model cannot be rebuilt from its config.
    """
    copy = model.__class__.from_config(_unstate(model.get_config()))
    pairs = _pair_weights(model.weights, copy.weights)
    paired = {id(dst) for dst, _ in pairs}
    missing = [v.path for v in copy.trainable_weights if id(v) not in paired]
    if missing:
        raise ValueError(f"the copy has weights the model does not: {missing}")

    def sync() -> None:
        # a copy of each value: the JAX trainer donates the buffers of its variables to
        # the next train step, which would delete them under the copy
        for dst, src in pairs:
            dst.assign(keras.ops.copy(src.value))

    sync()
    return copy, sync


def probe_jit_compile(model: keras.Model) -> bool:
    """Whether to compile the probe function with XLA: when the model's train step is
    XLA-compiled and runs on an accelerator. On a CPU the probe runs as a plain graph:
    measured on the default task (LSTM, 64 units, T = 52, probe of 32), XLA saves about
    2 ms of CPU time per evaluation but costs about 1 s more to compile, which a run of
    the default 30 epochs does not win back."""
    if not getattr(model, "jit_compile", False):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    return False


class DiagnosticsCallback(keras.callbacks.Callback):
    """Computes the vanishing-gradient diagnostics during ``fit`` and logs them.

    Args:
        run: the open MLflow run (``rnnbench.tracking.Run``).
        probe: the fixed probe batch ``(x, y)`` or ``(x, y, lengths)`` (NumPy), drawn
            once per run; ``lengths`` (the real length of each example, or None) is
            needed when the inputs are padded without a mask.
        loss: the task's loss (``Task.loss()``).
        seq2seq: whether the task predicts every step (the last step's loss is used).
        every_n_epochs: evaluate the probe after every n-th epoch, before training and
            after the last epoch ``fit`` was asked for.
        horizon_fraction: the fraction of ``g(T)`` that defines the effective horizon.
        title: the heatmap's title.
        background: evaluate and write in a worker thread while the next epoch trains
            (see the module docstring); False: in the training thread, at the epoch end.
        write_every_s: write the metrics to MLflow when this many seconds have passed
            since the last write (and at the end of training); 0: every epoch.
        early_stopping: the run's ``keras.callbacks.EarlyStopping``, if any, placed
            before this callback: it tells which epoch's weights it restored.
    """

    def __init__(self, run: Any, probe: tuple[Any, ...], *, loss: Any, seq2seq: bool,
                 every_n_epochs: int = 1, horizon_fraction: float = 0.01,
                 title: str = "", background: bool = True,
                 write_every_s: float = 10.0,
                 early_stopping: keras.callbacks.EarlyStopping | None = None) -> None:
        super().__init__()
        self.run = run
        self.x, self.y = probe[0], probe[1]
        self.lengths = probe[2] if len(probe) > 2 else None
        self.early_stopping = early_stopping
        self.final: tuple[int, FlowProfile | None, dict[str, float]] | None = None
        self._last_step: int | None = None
        self._last_healthy = True
        self._last_evaluation: tuple[int, FlowProfile | None, dict[str, float]] | None = None
        self._written_ms = 0
        self.loss = loss
        self.seq2seq = seq2seq
        self.every_n_epochs = every_n_epochs
        self.horizon_fraction = horizon_fraction
        self.title = title
        self.background = background
        self.write_every_s = write_every_s
        self._unwritten: list[tuple[int, dict[str, float]]] = []
        self._written_at = time.monotonic()
        self.rows: list[tuple[int, FlowProfile, dict[str, float]]] = []
        self._pending: tuple[FlowProfile | None, dict[str, float]] | None = None
        self._recorder: Any = None
        self._nonfinite_seen = 0
        self._worker: ThreadPoolExecutor | None = None
        self._job: Future | None = None

    # -- set-up ---------------------------------------------------------------------
    def _build(self, jit_compile: bool) -> None:
        try:
            probe_model, self._sync_copy = detached_copy(self.model)
        except Exception as exc:  # a layer that cannot be rebuilt from its config
            if any(getattr(layer, "stateful", False) for layer in _all_layers(self.model)):
                raise
            warnings.warn(f"diagnostics: probing the training model itself ({exc})",
                          stacklevel=2)
            probe_model, self._sync_copy = self.model, None
        self.recurrent = RecurrentProbe(probe_model)
        self.flow = None
        if keras.backend.backend() in FLOW_BACKENDS:
            self.flow = GradientFlow(probe_model, self.loss, seq2seq=self.seq2seq,
                                     jit_compile=jit_compile,
                                     extra=self.recurrent.trace_statistics)
        else:
            warnings.warn(f"diagnostics: no gradient flow on the {keras.backend.backend()} "
                          f"backend (only {', '.join(FLOW_BACKENDS)}); the other "
                          "diagnostics are computed", stacklevel=2)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._recorder = recorder_of(self.model.optimizer)
        self._nonfinite_seen = self._recorder.nonfinite_steps() if self._recorder else 0
        jit = probe_jit_compile(self.model)
        self._build(jit)
        try:
            self._snapshot()
            self._pending = self._evaluate()  # compiles the probe function once, here
        except Exception as exc:  # e.g. an op XLA cannot compile: retry without XLA
            if not jit:
                raise
            warnings.warn(f"diagnostics: probe not compiled with XLA ({exc}); "
                          "running it without XLA", stacklevel=2)
            self._build(False)
            self._snapshot()
            self._pending = self._evaluate()
        if self.background and self._sync_copy is not None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="rnnbench-diagnostics")

    # -- per epoch ------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._recorder is not None:
            self._recorder.reset()
        if self._pending is not None:
            profile, metrics = self._pending
            self._pending = None
            self._submit(self._record, epoch, profile, metrics)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics: dict[str, float] = {}
        healthy = math.isfinite(float((logs or {}).get("loss", 0.0)))
        if self._recorder is not None:
            metrics.update(self._recorder.gradient_stats())
            total = self._recorder.nonfinite_steps()
            healthy = healthy and total == self._nonfinite_seen
            self._nonfinite_seen = total
        self._last_step = epoch + 1
        self._last_healthy = healthy
        last = epoch + 1 == (self.params or {}).get("epochs")
        evaluate = healthy and ((epoch + 1) % self.every_n_epochs == 0 or last)
        self._wait()  # the copy is free again
        if evaluate:
            self._snapshot()
        self._submit(self._finish_epoch, epoch + 1, metrics, evaluate)

    def on_train_end(self, logs: dict | None = None) -> None:
        try:
            if self._pending is not None:  # no epoch ran
                self._record(0, *self._pending)
                self._pending = None
            self._wait()
            self._flush()
            if self._last_step is not None and self._last_healthy:
                self._final_evaluation()
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True)
                self._worker = None
        if not self.rows:
            return
        final = self.final if self.final is not None and self.final[1] is not None else None
        table = artifacts.profile_table(self.rows, self.horizon_fraction, final)
        self.run.log_json(table, Artifacts.GRAD_FLOW_JSON)
        self.run.log_text(artifacts.profile_csv(self.rows), Artifacts.GRAD_FLOW_CSV)
        import matplotlib.pyplot as plt

        fig = artifacts.heatmap_figure(self.rows, self.title, final)
        self.run.log_figure(fig, Artifacts.GRAD_FLOW_HEATMAP)
        plt.close(fig)

    # -- helpers --------------------------------------------------------------------
    def _submit(self, fn: Callable, *args: Any) -> None:
        if self._worker is None:
            fn(*args)
        else:
            self._wait()
            self._job = self._worker.submit(fn, *args)

    def _wait(self) -> None:
        """Wait for the job in flight; its exception, if any, is raised here."""
        if self._job is not None:
            job, self._job = self._job, None
            job.result()

    def _snapshot(self) -> None:
        """Copy the weights the probe reads (training thread, between epochs)."""
        if self._sync_copy is not None:
            self._sync_copy()
        self.recurrent.sync()

    def _weights_epoch(self) -> int | None:
        """The epoch after which the model had the weights it has now: the epoch
        ``EarlyStopping`` restored, or the last epoch; None when they are not finite."""
        weights = self.model.get_weights()
        if not all(np.all(np.isfinite(w)) for w in weights
                   if np.issubdtype(np.asarray(w).dtype, np.floating)):
            return None
        es = self.early_stopping
        best = getattr(es, "best_weights", None) if es is not None else None
        if best is not None and len(best) == len(weights) and all(
                np.array_equal(a, b) for a, b in zip(best, weights)):
            return int(es.best_epoch) + 1
        return self._last_step

    def _final_evaluation(self) -> None:
        """Probe the weights the model ends training with and log that evaluation
        last, at the last epoch's step (see the module docstring)."""
        epoch = self._weights_epoch()
        if epoch is None:
            return  # not finite: the last evaluation logged stays the last
        last = self._last_evaluation
        if last is not None and last[0] == epoch == self._last_step:
            # the last epoch's weights: their evaluation is already the one logged last
            _, profile, probe_metrics = last
            metrics: dict[str, float] = {}
        else:
            self._snapshot()
            profile, probe_metrics = self._evaluate()
            metrics = dict(probe_metrics)
        self.final = (epoch, profile, self._flow_summary(probe_metrics))
        if profile is not None:
            metrics[Metrics.GRAD_FLOW_PREFIX + "weights_epoch"] = float(epoch)
        # MLflow shows the value of the highest step, then of the latest timestamp
        while int(time.time() * 1000) <= self._written_ms:
            time.sleep(0.001)
        self._log(metrics, self._last_step)
        self._flush()
        self.run.set_tags({Tags.DIAGNOSTICS_WEIGHTS_EPOCH: str(epoch)})

    def _evaluate(self) -> tuple[FlowProfile | None, dict[str, float]]:
        if self.flow is not None:
            profile, extra = self.flow.compute(self.x, self.y, self.lengths)
            metrics = summarize(profile, self.horizon_fraction)
        else:
            valid = None
            if self.lengths is not None:
                valid = valid_steps(self.lengths, len(self.x), np.shape(self.x)[1])
            profile, extra, metrics = None, self.recurrent.trace_statistics(self.x, valid), {}
        metrics.update({k: float(keras.ops.convert_to_numpy(v)) for k, v in extra.items()})
        metrics.update(self.recurrent.spectral_norms())
        metrics.update(self.recurrent.eigenvalue_moduli())
        return profile, metrics

    def _finish_epoch(self, step: int, metrics: dict[str, float], evaluate: bool) -> None:
        if evaluate:
            profile, probe_metrics = self._evaluate()
            self._last_evaluation = (step, profile, probe_metrics)
            metrics = {**metrics, **probe_metrics}
            if profile is not None:
                self.rows.append((step, profile, self._flow_summary(probe_metrics)))
        self._log(metrics, step)

    @staticmethod
    def _flow_summary(metrics: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in metrics.items() if k.startswith(Metrics.GRAD_FLOW_PREFIX)}

    def _record(self, step: int, profile: FlowProfile | None,
                metrics: dict[str, float]) -> None:
        if profile is not None:
            self.rows.append((step, profile, self._flow_summary(metrics)))
        self._log(metrics, step)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
        if metrics:
            self._unwritten.append((step, metrics))
        if time.monotonic() - self._written_at >= self.write_every_s:
            self._flush()

    def _flush(self) -> None:
        if self._unwritten:
            from rnnbench import tracking

            rows, self._unwritten = self._unwritten, []
            tracking.log_metric_steps(self.run, rows)
            self._written_ms = int(time.time() * 1000)
        self._written_at = time.monotonic()


def _all_layers(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.layers.Bidirectional):
            out += [layer.forward_layer, layer.backward_layer]
    return out
