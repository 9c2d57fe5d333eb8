"""Every recurrent cell of the spec (`docs/cells.md`): registry, config checks, layers.

- `CELLS`, `CellSpec`, `cell_names()`: what the spec says about each cell, and how each
  implementation builds it (`rnnbench.cells.registry`, no Keras).
- `validate_cell_config(cell_cfg)`: checks the `cell` config node (no Keras).
- `make_recurrent_layer(...)`: one recurrent layer, Keras built-in or rnnbench's own
  (`CustomRecurrent`, see `rnnbench.cells.custom`).
- `describe_layer(layer)`: which implementation runs, cuDNN eligibility, parameters.
- `custom_twin(layer)`: rnnbench's layer with the same weights as a built-in one, to
  `trace()` its gates.

rnnbench's own implementation: `families` (one cell family per module pair: its cells
and options without Keras, its cell class and hand-written gradient with Keras; the
protocol is in `rnnbench.cells.families`), `base` (`SpecCell`, the fused layout),
`variants` (loads a family's cell class by name), `custom` (the layer and its tracer),
`bptt` and `bptt_kernels` (the hand-written backward pass through time),
`initializers` (`GateBias`).

The names that need Keras are imported on first use, so that importing this package
(for the registry or the config checks) does not import Keras before the backend is
chosen. Importing `rnnbench.cells.custom` registers the cells and the layer for `.keras`
loading; using any Keras name of this package does it too.
"""

from rnnbench.cells.registry import CELLS, CellSpec, cell_names
from rnnbench.cells.settings import CellSettings, validate_cell_config
from rnnbench.lazy import lazy_getattr

_LAZY = {
    "make_recurrent_layer": "rnnbench.cells.layers",
    "describe_layer": "rnnbench.cells.layers",
    "custom_twin": "rnnbench.cells.layers",
    "cudnn_eligible": "rnnbench.cells.layers",
    "CustomRecurrent": "rnnbench.cells.custom",
    "GateBias": "rnnbench.cells.initializers",
}

__all__ = [
    "CELLS",
    "CellSettings",
    "CellSpec",
    "CustomRecurrent",
    "GateBias",
    "cell_names",
    "cudnn_eligible",
    "custom_twin",
    "describe_layer",
    "make_recurrent_layer",
    "validate_cell_config",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
