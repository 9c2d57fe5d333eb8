"""Recurrent layers from the cell config: Keras built-ins or rnnbench's own layer.

The choice between the two implementations and the mapping of Keras weights onto
rnnbench's layout are here; whether cuDNN runs a layer is decided in `rnnbench.cudnn`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from rnnbench import cudnn
from rnnbench.cells.custom import CustomRecurrent
from rnnbench.cells.initializers import GateBias
from rnnbench.cells.registry import CELLS
from rnnbench.cells.settings import validate_cell_config


def make_recurrent_layer(
    cell_cfg: Any,
    units: int,
    *,
    return_sequences: bool,
    name: str | None = None,
    go_backwards: bool = False,
    stateful: bool = False,
) -> keras.layers.Layer:
    """Builds one recurrent layer for the `cell` config node.

    Args:
        cell_cfg: the `cell` config node (see `validate_cell_config`).
        units: number of units.
        return_sequences: whether the layer returns every step or the last one.
        name: layer name.
        go_backwards: whether to run the sequence backwards.
        stateful: whether states carry over from batch to batch.

    Returns:
        `keras.layers.SimpleRNN`, `LSTM` or `GRU` for `impl=builtin` (`gru_v1` is
        `GRU(reset_after=False)`), else a `CustomRecurrent`. `cell.bidirectional` is
        not applied here: wrap the layer in `keras.layers.Bidirectional`.

    Raises:
        ConfigError: the cell config is not valid.
    """
    s = validate_cell_config(cell_cfg)
    common = {
        "dropout": s.dropout,
        "recurrent_dropout": s.recurrent_dropout,
        "kernel_initializer": s.kernel_initializer,
        "recurrent_initializer": s.recurrent_initializer,
        "bias_initializer": s.bias_initializer,
        "return_sequences": return_sequences,
        "go_backwards": go_backwards,
        "stateful": stateful,
        "name": name,
    }
    if s.impl == "custom":
        others = {k: v for k, v in s.options.items() if k not in ("forget_bias", "chrono_init")}
        return CustomRecurrent(
            s.name,
            units,
            forget_bias=s.forget_bias,
            chrono_init=s.chrono_init,
            gradient=s.gradient,
            **others,
            **common,
        )
    builtin = CELLS[s.name].builtin
    if s.forget_bias is not None or s.chrono_init is not None:
        # Only a cell whose built-in has a forget block (Keras's LSTM) takes these
        # options; GateBias then makes the whole bias, so Keras's own forget-block ones
        # (unit_forget_bias) are turned off.
        common["bias_initializer"] = GateBias(
            builtin.gate_blocks,
            base=s.bias_initializer,
            forget_bias=s.forget_bias,
            chrono_init=s.chrono_init,
        )
        common["unit_forget_bias"] = False
    return getattr(keras.layers, builtin.layer)(units, **builtin.args, **common)


def _builtin_cell_name(layer) -> str | None:
    """The cell a Keras built-in layer runs (see `CellSpec.builtin`), or None."""
    for name, spec in CELLS.items():
        builtin = spec.builtin
        if (
            builtin is not None
            and isinstance(layer, getattr(keras.layers, builtin.layer))
            and all(getattr(layer.cell, k) == v for k, v in builtin.args.items())
        ):
            return name
    return None


def cudnn_eligible(layer) -> bool:
    """Whether this exact layer configuration can run on cuDNN on a GPU (Keras's rules
    are in `rnnbench.cudnn`; a mask, if any, must also be right-padded at run time)."""
    return cudnn.arguments_ok(layer)


def describe_layer(layer) -> dict:
    """What runs in a recurrent layer made by `make_recurrent_layer`.

    Args:
        layer: the layer, or a `keras.layers.Bidirectional` wrapping one.

    Returns:
        A dict with `impl` (`"builtin"` or `"custom"`), `cell` (cell name),
        `cudnn_eligible` (see `cudnn_eligible`), `params` (`count_params()`, of the
        wrapper for a bidirectional layer; None while the layer is not built),
        `bidirectional`, `gradient` (`"bptt"` or `"autodiff"`: what the layer's last
        call ran, or will run if it was never called) and `form` (`"scan"`: the family's
        parallel form over time, `"step"`: a loop over steps; None before the first call).
    """
    if isinstance(layer, keras.layers.Bidirectional):
        info = describe_layer(layer.forward_layer)
        info["cudnn_eligible"] = info["cudnn_eligible"] and cudnn_eligible(layer.backward_layer)
        info["params"] = layer.count_params() if layer.built else None
        info["bidirectional"] = True
        return info
    gradient, form = "autodiff", "step"
    if isinstance(layer, CustomRecurrent):
        impl, cell = "custom", layer.cell_name
        gradient = layer.gradient_ran or layer.gradient_plan()[0]
        form = layer.form_ran
    else:
        impl, cell = "builtin", _builtin_cell_name(layer)
        if cell is None:
            raise TypeError(f"not a recurrent layer of rnnbench.cells: {type(layer).__name__}")
    return {
        "impl": impl,
        "cell": cell,
        "cudnn_eligible": cudnn_eligible(layer),
        "params": layer.count_params() if layer.built else None,
        "bidirectional": False,
        "gradient": gradient,
        "form": form,
    }


def _twin_of_builtin(layer) -> CustomRecurrent:
    cell_name = _builtin_cell_name(layer)
    cell = layer.cell
    if cell.activation is not keras.activations.tanh or (
        cell_name != "rnn" and cell.recurrent_activation is not keras.activations.sigmoid
    ):
        raise ValueError("custom_twin needs the default activations (tanh, sigmoid)")
    twin = CustomRecurrent(
        cell_name,
        cell.units,
        forget_bias=0.0 if "forget_bias" in CELLS[cell_name].options else None,
        dropout=cell.dropout,
        recurrent_dropout=cell.recurrent_dropout,
        return_sequences=layer.return_sequences,
        return_state=layer.return_state,
        go_backwards=layer.go_backwards,
        stateful=layer.stateful,
        name=f"{layer.name}_twin",
    )
    if not layer.built:
        return twin
    kernel = keras.ops.convert_to_numpy(cell.kernel)
    batch = None
    if layer.stateful and layer.states is not None:
        batch = keras.ops.shape(layer.states[0])[0]
    twin.build((batch, None, kernel.shape[0]))
    recurrent = keras.ops.convert_to_numpy(cell.recurrent_kernel)
    n = cell.units
    # Keras's reset-after GRU keeps its bias as two rows: input side, recurrent side.
    split_bias = getattr(cell, "reset_after", False)
    if cell.use_bias:
        bias = keras.ops.convert_to_numpy(cell.bias)
    else:
        bias = np.zeros((2, 3 * n) if split_bias else kernel.shape[1], kernel.dtype)
    tc = twin.cell
    tc.kernel.assign(kernel)
    tc.recurrent_kernel.assign(recurrent)
    if split_bias:
        # Keras keeps input and recurrent biases for all three blocks; in the spec the
        # recurrent biases of z and r are redundant with bz, br.
        tc.bias.assign(bias[0] + np.concatenate([bias[1, : 2 * n], np.zeros(n, bias.dtype)]))
        tc.recurrent_bias.assign(bias[1, 2 * n :])
    else:
        tc.bias.assign(bias)
    return twin


def custom_twin(layer) -> keras.layers.Layer:
    """The rnnbench implementation of a layer, computing the same function.

    Args:
        layer: a built-in `SimpleRNN`, `LSTM` or `GRU`, a `CustomRecurrent`, or a
            `Bidirectional` wrapping one of them.

    Returns:
        For a built-in layer, a `CustomRecurrent` of the same cell with the built-in's
        weights mapped to rnnbench's layout (built if the layer is built); for a
        custom layer, the layer itself; for `Bidirectional`, a `Bidirectional` of the
        twins. Used to `trace()` the gates of built-in layers.
    """
    if isinstance(layer, CustomRecurrent):
        return layer
    if isinstance(layer, keras.layers.Bidirectional):
        forward = (
            _twin_of_builtin(layer.forward_layer)
            if not isinstance(layer.forward_layer, CustomRecurrent)
            else layer.forward_layer
        )
        backward = (
            _twin_of_builtin(layer.backward_layer)
            if not isinstance(layer.backward_layer, CustomRecurrent)
            else layer.backward_layer
        )
        twin = keras.layers.Bidirectional(
            forward,
            backward_layer=backward,
            merge_mode=layer.merge_mode,
            name=f"{layer.name}_twin",
        )
        if layer.built:
            d = forward.cell.kernel.shape[0]
            twin.build((None, None, d))
            for src, dst in ((forward, twin.forward_layer), (backward, twin.backward_layer)):
                dst.set_weights(src.get_weights())
        return twin
    if _builtin_cell_name(layer) is None:
        raise TypeError(f"not a recurrent layer of rnnbench.cells: {type(layer).__name__}")
    return _twin_of_builtin(layer)
