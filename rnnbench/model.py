"""The model: the task's input → stacked recurrent layers of the chosen cell → the task's head."""

from __future__ import annotations

from typing import Any

import keras

from rnnbench.cells import describe_layer, make_recurrent_layer, validate_cell_config
from rnnbench.errors import ConfigError
from rnnbench.tasks.base import Task, TaskData


def check_compatible(cfg: Any, task: Task) -> None:
    """Refuse combinations that make no sense before anything is built."""
    validate_cell_config(cfg.cell)
    if cfg.cell.bidirectional and task.causal:
        raise ConfigError(
            f"cell.bidirectional=true is not allowed on task={task.name}: it is "
            f"{task.kind} and causal, so a backward pass would see the future. "
            "Bidirectional layers are allowed on non-causal sequence-classification tasks."
        )


def recurrent_layer_names(cfg: Any) -> list[str]:
    return [f"rnn_{i}" for i in range(cfg.model.layers)]


def build_model(cfg: Any, task: Task, data: TaskData) -> keras.Model:
    """Build (not compile) the model for ``cfg`` on ``task``.

    The recurrent layers are named ``rnn_0``, ``rnn_1``, … (wrapped in Bidirectional
    when asked); the last one returns sequences only for sequence-to-sequence tasks.
    With ``model.params``, the width is solved first (:mod:`rnnbench.sizing`), and
    ``describe_model`` reports it under ``sizing``.
    """
    check_compatible(cfg, task)
    if cfg.model.params is None:
        return _network(cfg, task, data, cfg.model.units)
    from rnnbench import sizing

    def count_at(n: int) -> int:
        probe = _network(cfg, task, data, n)
        return sizing.counted(cfg.model.params_of, probe, recurrent_layers(probe))

    with sizing.random_state_kept():  # the probes draw no initial weight of the model
        solved = sizing.size_model(cfg, count_at, task.name)
    model = _network(cfg, task, data, solved.units)
    model.rnnbench_sizing = sizing.check_built(solved, model, recurrent_layers(model),
                                               sizing.describe_target(cfg, task.name))
    return model


def _network(cfg: Any, task: Task, data: TaskData, units: int) -> keras.Model:
    inputs, x = task.build_inputs(data)
    if cfg.model.input_projection:  # one linear encoder, the same for every cell
        x = keras.layers.Dense(cfg.model.input_projection, name="input_projection")(x)
    for i, name in enumerate(recurrent_layer_names(cfg)):
        last = i == cfg.model.layers - 1
        layer = make_recurrent_layer(
            cfg.cell, units,
            return_sequences=(not last) or task.kind == "seq2seq",
            name=name, stateful=task.stateful,
        )
        if cfg.cell.bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bi_{name}")
        x = layer(x)
        if cfg.model.dropout > 0:
            x = keras.layers.Dropout(cfg.model.dropout, name=f"dropout_{i}")(x)
    outputs = task.build_head(x, data)
    return keras.Model(inputs, outputs, name=f"{task.name}_{cfg.cell.name}")


def sizing_params(what: dict[str, Any]) -> dict[str, Any]:
    """The MLflow params of a model sized by ``model.params`` (``what``: describe_model's
    answer): the solved width as ``model.units`` (and ``units``), the target and which
    weights it counts. Empty for a model given by ``model.units``."""
    from rnnbench.tracking.schema import Params

    solved = what.get("sizing")
    if not solved:
        return {}
    return {Params.UNITS: solved["units"], Params.PLAIN_UNITS: solved["units"],
            Params.MODEL_PARAMS: solved["target"], Params.PARAMS_OF: solved["of"]}


def recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers
            if layer.name.startswith(("rnn_", "bi_rnn_"))]


def describe_model(model: keras.Model) -> dict[str, Any]:
    """What runs: implementation, cuDNN eligibility per layer, parameter counts."""
    layers = {layer.name: describe_layer(layer) for layer in recurrent_layers(model)}
    impls = sorted({d["impl"] for d in layers.values()})
    return {
        "impl": ",".join(impls),
        "gradient": ",".join(sorted({d["gradient"] for d in layers.values()})),
        "cudnn_eligible": all(d["cudnn_eligible"] for d in layers.values()),
        "layers": layers,
        "params_count": int(model.count_params()),
        "recurrent_params": int(sum(d["params"] for d in layers.values())),
        **({"sizing": sizing.as_dict()} if (sizing := getattr(model, "rnnbench_sizing", None))
           else {}),
    }


def make_optimizer(opt: Any, lr_scale: float = 1.0) -> keras.optimizers.Optimizer:
    lr = opt.lr * lr_scale
    kwargs: dict[str, Any] = {"learning_rate": lr}
    if opt.clipnorm is not None:
        kwargs["global_clipnorm"] = opt.clipnorm
    if opt.name == "adam":
        return keras.optimizers.Adam(**kwargs)
    if opt.name == "adamw":
        return keras.optimizers.AdamW(weight_decay=opt.weight_decay, **kwargs)
    if opt.name == "nadam":
        return keras.optimizers.Nadam(**kwargs)
    if opt.name == "rmsprop":
        return keras.optimizers.RMSprop(**kwargs)
    return keras.optimizers.SGD(momentum=opt.momentum, **kwargs)
