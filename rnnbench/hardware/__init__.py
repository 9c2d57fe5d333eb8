"""Where a run computes, set up by config, and a record of what actually ran.

- :mod:`rnnbench.hardware.devices`: the setup, before the model exists: the backend
  (before Keras is imported), devices, threads, precision, determinism, XLA, the
  distribution strategy; and the checks that refuse combinations that cannot work.
- :mod:`rnnbench.hardware.what_ran`: after the model is compiled, what it really runs
  on (device, XLA, cuDNN per layer) as MLflow tags, and the message for an op that
  has no deterministic kernel.
- :mod:`rnnbench.hardware.maps`: before each run, the kernel's limit on a process's
  memory maps, which XLA's CPU code (never unmapped) reaches in long sweeps.

Seeding is in :mod:`rnnbench.seeding`, the cuDNN rules in :mod:`rnnbench.cudnn`.

What each backend supports (see also `docs/hardware.md`):

| | tensorflow | jax | torch |
| --- | --- | --- | --- |
| ``strategy=mirrored``, ``logical_cpus`` | yes | no | no |
| ``deterministic`` | op determinism + seeds | seeds (+ XLA's GPU flag) | deterministic algorithms + seeds |
| cuDNN kernels (GPU only) | LSTM, GRU | LSTM | LSTM, GRU |
| ``xla=off`` | graph mode | eager (slow) | eager |

Importing this package is light: Keras and the backends load on demand.
"""

from rnnbench.hardware.devices import HardwareInfo, cpu_name, preflight, select_backend, setup
from rnnbench.hardware.what_ran import determinism_message, is_determinism_error, what_ran

__all__ = ["HardwareInfo", "cpu_name", "determinism_message", "is_determinism_error",
           "preflight", "select_backend", "setup", "what_ran"]
