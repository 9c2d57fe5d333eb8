"""The config schemas, registered in Hydra's ConfigStore for the commands' configs.

``conf/config.yaml`` (``rnnbench``) and ``conf/tune.yaml`` (``rnnbench-tune``) name these
schemas in their defaults lists. Registration lives with the commands, not with the
schemas: :mod:`rnnbench.tuning.configs` builds on :mod:`rnnbench.config`, and neither
needs to know the other's place in Hydra.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from rnnbench.config import RunConfig
from rnnbench.tasks.configs import TASK_SCHEMAS
from rnnbench.tuning.configs import SearchSpaceConfig, TuneConfig, TunerConfig


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for name, schema in TASK_SCHEMAS.items():
        cs.store(group="schema/task", name=name, node=schema)
    cs.store(name="tune_schema", node=TuneConfig)
    cs.store(group="schema", name="tuner", node=TunerConfig)
    cs.store(group="schema", name="search_space", node=SearchSpaceConfig)
