"""Hardware config checks and the record of what ran, in-process on real Keras layers.

The end-to-end checks through the ``rnnbench`` command are in test_hardware_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rnnbench import cudnn, hardware
from rnnbench.config import HardwareConfig
from rnnbench.errors import ConfigError, HardwareError
from rnnbench.hardware import devices

CONF = Path(__file__).resolve().parent.parent / "conf"


def hw_config(**overrides) -> HardwareConfig:
    return HardwareConfig(**overrides)


# ---- the config group ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["cpu", "gpu", "multi_gpu"])
def test_hardware_group_files_are_complete_and_valid(name):
    data = yaml.safe_load((CONF / "hardware" / f"{name}.yaml").read_text())
    for key in ("precision", "xla", "deterministic", "fallback"):
        assert key in data, f"conf/hardware/{name}.yaml lacks {key}"
    cfg = HardwareConfig(**data)
    assert cfg.name == name and cfg.fallback == "fail" and cfg.deterministic is False
    if name == "multi_gpu":
        assert cfg.strategy == "mirrored" and cfg.num_devices >= 2
        assert hardware.preflight(cfg, "tensorflow") == []


@pytest.mark.parametrize("name", ["tensorflow", "jax", "torch"])
def test_backend_group_files(name):
    data = yaml.safe_load((CONF / "backend" / f"{name}.yaml").read_text())
    assert data == {"name": name}


@pytest.mark.parametrize("key, value, allowed", [
    ("precision", "float64", "float32, mixed_float16, mixed_bfloat16"),
    ("xla", "yes", "auto, on, off"),
    ("fallback", "ignore", "fail, cpu"),
])
def test_unknown_values_name_the_key_and_the_choices(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        hw_config(**{key: value})
    assert f"hardware.{key}={value!r}" in str(err.value) and allowed in str(err.value)


# ---- preflight: combinations refused or warned about before any device is touched -----

@pytest.mark.parametrize("overrides, backend, words", [
    (dict(strategy="mirrored", num_devices=2), "jax", ["backend=jax", "MirroredStrategy"]),
    (dict(strategy="mirrored", num_devices=1), "tensorflow",
     ["hardware.num_devices=1", "at least 2 devices"]),
    (dict(num_devices=2), "tensorflow", ["hardware.num_devices=2", "strategy=mirrored"]),
    (dict(logical_cpus=2), "jax", ["hardware.logical_cpus=2", "TensorFlow"]),
    (dict(xla="on", deterministic=True), "tensorflow",
     ["hardware.xla=on", "hardware.deterministic=true", "auto or off"]),
])
def test_preflight_refuses_combinations_that_cannot_work(overrides, backend, words):
    with pytest.raises(ConfigError) as err:
        hardware.preflight(hw_config(**overrides), backend)
    for word in words:
        assert word in str(err.value)


def test_mixed_float16_on_cpu_warns_with_a_suggestion():
    with pytest.warns(UserWarning, match="mixed_float16 on a CPU") as record:
        notes = hardware.preflight(hw_config(precision="mixed_float16"), "tensorflow")
    assert "mixed_bfloat16" in str(record[0].message)
    assert notes and "mixed_bfloat16" in notes[0]
    # on a GPU, and for bfloat16 on the CPU, nothing to say
    assert hardware.preflight(hw_config(precision="mixed_float16", device="gpu"),
                              "tensorflow") == []
    assert hardware.preflight(hw_config(precision="mixed_bfloat16"), "tensorflow") == []


def test_backend_that_is_not_installed_is_refused(monkeypatch):
    monkeypatch.setitem(devices._BACKEND_PACKAGES, "torch", "rnnbench_no_such_package")
    with pytest.raises(HardwareError) as err:
        hardware.select_backend("torch")
    message = str(err.value)
    assert "backend=torch" in message and "'rnnbench_no_such_package' is not installed" in message
    assert "backend=tensorflow" in message


# ---- cuDNN: Keras's conditions x backend x device -------------------------------------

def _info(backend="tensorflow", device_type="gpu", **kw) -> hardware.HardwareInfo:
    return hardware.HardwareInfo(backend=backend, device="d", visible_devices=["d"],
                                 precision="float32", jit_compile=False, deterministic=False,
                                 device_type=device_type, **kw)


@pytest.fixture(scope="module")
def layers():
    import keras
    from omegaconf import OmegaConf

    from rnnbench.cells import make_recurrent_layer
    from rnnbench.config import CellConfig

    def cell(name, **kw):
        return OmegaConf.structured(CellConfig(name=name, **kw))

    made = {
        "lstm": make_recurrent_layer(cell("lstm"), 4, return_sequences=False, name="rnn_0"),
        "gru": make_recurrent_layer(cell("gru"), 4, return_sequences=False, name="rnn_1"),
        "rnn": make_recurrent_layer(cell("rnn"), 4, return_sequences=False, name="rnn_2"),
        "lstm_custom": make_recurrent_layer(cell("lstm", impl="custom"), 4,
                                            return_sequences=False, name="rnn_3"),
        "lstm_rdrop": make_recurrent_layer(cell("lstm", recurrent_dropout=0.1), 4,
                                           return_sequences=False, name="rnn_4"),
        "no_cudnn": keras.layers.LSTM(4, use_cudnn=False, name="rnn_5"),
        "bi_lstm": keras.layers.Bidirectional(
            make_recurrent_layer(cell("lstm"), 4, return_sequences=False, name="rnn_6")),
    }
    for layer in made.values():
        layer.build((None, 5, 3))
    return made


@pytest.mark.parametrize("which, backend, device, masked, expected, why", [
    ("lstm", "tensorflow", "gpu", False, True, "cuDNN"),
    ("lstm", "tensorflow", "cpu", False, False, "CPU"),
    ("gru", "tensorflow", "gpu", False, True, "cuDNN"),
    ("lstm", "tensorflow", "gpu", True, True, "cuDNN"),  # TF takes right-padded masks
    ("bi_lstm", "tensorflow", "gpu", False, True, "cuDNN"),
    ("lstm", "jax", "gpu", False, True, "cuDNN"),
    ("gru", "jax", "gpu", False, False, "no cuDNN kernel for GRU"),
    ("lstm", "jax", "gpu", True, False, "masked"),
    ("gru", "torch", "gpu", False, True, "cuDNN"),
    ("rnn", "tensorflow", "gpu", False, False, "SimpleRNN"),
    ("lstm_custom", "tensorflow", "gpu", False, False, "not a Keras LSTM/GRU"),
    ("lstm_rdrop", "tensorflow", "gpu", False, False, "recurrent_dropout"),
    ("no_cudnn", "tensorflow", "gpu", False, False, "use_cudnn=False"),
])
def test_layer_cudnn(layers, which, backend, device, masked, expected, why):
    from rnnbench.cells import describe_layer

    layer = layers[which]
    ran, reason = cudnn.layer_cudnn(layer, backend, device, masked)
    assert ran is expected and why in reason
    # cuDNN runs a layer only when its arguments qualify (the cudnn_eligible tag)
    assert not ran or describe_layer(layer)["cudnn_eligible"]


def test_what_ran_reads_the_compiled_model():
    import keras
    from omegaconf import OmegaConf

    from rnnbench.cells import make_recurrent_layer
    from rnnbench.config import CellConfig
    from rnnbench.model import describe_model

    inputs = keras.Input((6, 2))
    h = make_recurrent_layer(OmegaConf.structured(CellConfig(name="lstm")), 4,
                             return_sequences=True, name="rnn_0")(inputs)
    h = make_recurrent_layer(OmegaConf.structured(CellConfig(name="gru", impl="custom")), 4,
                             return_sequences=False, name="rnn_1")(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    model.compile(optimizer=keras.optimizers.Adam(0.004), loss="mse", jit_compile=True)
    what = describe_model(model)
    info = _info("tensorflow", "cpu", replicas=2, devices_used=["/device:CPU:0"],
                 xla_request="on")
    tags = hardware.what_ran(model, info, what, batch_size=64)
    assert tags["xla"] == "on" and tags["xla_requested"] == "on"
    assert "CPU:0" in tags["device"]
    assert tags["cudnn.rnn_0"] == "false" and tags["cudnn.rnn_1"] == "false"
    assert tags["cudnn"] == "false" and tags["cudnn_layers"] == "0/2"
    assert what["layers"]["rnn_0"]["cudnn_reason"] == "the run is on the CPU"
    assert tags["global_batch_size"] == "64" and tags["replica_batch_size"] == "32"
    assert tags["effective_lr"] == "0.004"
    assert tags["backend"] == "tensorflow" and tags["precision"] == "float32"
    # the same model on a GPU: the built-in LSTM runs cuDNN, the custom GRU cannot
    gpu_tags = hardware.what_ran(model, _info("tensorflow", "gpu", xla_request="auto"),
                                 describe_model(model), batch_size=64)
    assert gpu_tags["cudnn.rnn_0"] == "true" and gpu_tags["cudnn.rnn_1"] == "false"
    assert gpu_tags["cudnn"] == "false" and gpu_tags["cudnn_layers"] == "1/2"


def test_determinism_message_names_the_op():
    text = ("{{function_node __wrapped__Timestamp_device_/job:localhost/replica:0/task:0/"
            "device:CPU:0}} Timestamp cannot be called when determinism is enabled "
            "[Op:Timestamp]")
    exc = RuntimeError(text)
    assert hardware.is_determinism_error(exc)
    assert not hardware.is_determinism_error(RuntimeError("shapes do not match"))
    message = hardware.determinism_message(exc, _info("tensorflow", "cpu"))
    assert message.startswith("hardware.deterministic=true, but Timestamp has no deterministic")
    assert "Timestamp cannot be called when determinism is enabled" in message
    assert "hardware.deterministic=false" in message and "function_node" not in message


def test_new_model_retracing_warning_is_dropped_and_others_kept(caplog):
    import logging

    from rnnbench.hardware import devices

    devices._quiet_backend_loggers()
    devices._quiet_backend_loggers()  # idempotent: one filter
    log = logging.getLogger("tensorflow")
    assert sum(isinstance(f, devices._NewModelRetracing) for f in log.filters) == 1
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        log.warning("6 out of the last 6 calls to <function f> triggered tf.function "
                    "retracing. Tracing is expensive")
        log.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]


def test_the_map_count_is_the_kernels_and_grows_with_new_mappings():
    """map_count reads this process's real mappings: 64 new anonymous mappings, read-only
    and writable in turn (so the kernel cannot merge neighbours), raise it by 64 or more;
    the limit is the kernel's own vm.max_map_count."""
    import mmap

    from rnnbench.hardware import maps

    if maps.map_count() is None:
        pytest.skip("no /proc/self/maps on this system: the map check does nothing here")
    assert maps.map_limit() == int(open("/proc/sys/vm/max_map_count").read())
    before = maps.map_count()
    kept = []
    for i in range(64):
        prot = mmap.PROT_READ if i % 2 else mmap.PROT_READ | mmap.PROT_WRITE
        kept.append(mmap.mmap(-1, 2 * mmap.PAGESIZE, prot=prot))
    after = maps.map_count()
    assert after - before >= 64, (before, after)
    for m in kept:
        m.close()
