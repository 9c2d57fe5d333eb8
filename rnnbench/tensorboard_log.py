"""TensorBoard logs of a run (``tracking.tensorboard=true``), next to its MLflow record.

While the run trains, Keras's own ``TensorBoard`` callback (:func:`live_callback`)
writes each epoch's loss and compiled metrics (``epoch_loss``, ``epoch_mae``, ...; step:
the epoch, 1-based as in MLflow) to ``train/`` and ``validation/`` under the run's
folder, flushed after every epoch, so ``tensorboard --logdir`` shows the run live (on the
TensorFlow backend; the others get the record when the run ends only). When the run
ends, every metric of its MLflow record (per epoch: loss, val_loss, the compiled metrics,
epoch times; the diagnostics ``grad_flow/``, ``grad_norm/``,
``spectral_norm/``, ``gates/``; at the end: ``test_*``, ``objective``, ...) is written
as a TensorBoard scalar at its MLflow step, and the run's figures (learning curves, the
gradient-flow heatmap) as images. The event files go to
``<folder of the SQLite store>/tensorboard/<experiment>/<run name>-<run id>`` (for a
tracking server: ``./tensorboard/...``) and into the run's artifacts under
``tensorboard/``. Open them with ``tensorboard --logdir <that folder>/tensorboard``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from rnnbench import tracking

FIGURES = (tracking.Artifacts.LEARNING_CURVES, tracking.Artifacts.GRAD_FLOW_HEATMAP)


def logdir(uri: str, experiment: str, run_name: str, run_id: str) -> Path:
    """Where a run's event files go."""
    if uri.startswith("sqlite:///"):
        root = Path(uri[len("sqlite:///"):]).resolve().parent
    else:
        root = Path.cwd()
    safe = lambda s: re.sub(r"[^A-Za-z0-9._-]+", "_", s)  # noqa: E731
    return root / "tensorboard" / safe(experiment) / f"{safe(run_name)}-{run_id}"


def live_callback(folder: Path) -> Any:
    """Keras's ``TensorBoard`` callback writing to ``folder`` and flushing its event files
    after every epoch (TensorFlow's writer would hold them up to two minutes); None on a
    backend Keras's callback does not support."""
    import keras

    class LiveTensorBoard(keras.callbacks.TensorBoard):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            super().on_epoch_end(epoch + 1, logs)  # step = the 1-based epoch, as MLflow's
            for writer in self._writers.values():
                writer.flush()

    if keras.backend.backend() != "tensorflow":
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return LiveTensorBoard(log_dir=str(folder), histogram_freq=0, write_graph=False,
                           profile_batch=0)


def export(run: Any, folder: Path) -> Path:
    """Write the MLflow record of ``run`` (a :class:`tracking.Run`) as TensorBoard
    event files in ``folder`` and log them to the run under ``tensorboard/``."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    record = tracking.get_run(run.run_id)
    keys = sorted(record.data.metrics) if record is not None else []
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for key in keys:
            for step, value in tracking.metric_history(run.run_id, key):
                tf.summary.scalar(key, value, step=step)
        listed = set()
        for parent in {str(Path(f).parent) for f in FIGURES}:
            try:
                listed |= set(tracking.list_artifacts(run.run_id, parent))
            except Exception:  # nothing logged there
                pass
        with tempfile.TemporaryDirectory() as tmp:
            for name in FIGURES:
                if name not in listed:
                    continue
                png = tracking.download_artifacts(run.run_id, name, tmp).read_bytes()
                image = tf.expand_dims(tf.image.decode_png(png, channels=4), 0)
                tf.summary.image(name.removesuffix(".png"), image, step=0)
    writer.flush()
    writer.close()
    for path in sorted(folder.rglob("*")):  # the record, and the live train/, validation/
        if path.is_file():
            parent = path.parent.relative_to(folder).as_posix()
            run.log_artifact(path, tracking.Artifacts.TENSORBOARD_DIR
                             + ("" if parent == "." else f"/{parent}"))
    run.set_tags({tracking.Tags.TENSORBOARD_LOGDIR: str(folder)})
    return folder
