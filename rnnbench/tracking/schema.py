"""The names of rnnbench's MLflow record: the tags, params, metrics and artifacts that
training runs and sweeps write and that reports, resumed sweeps and reused runs read.

A name here is a contract between modules that never import each other (a report
reads what a run wrote months ago, in another process), so each is spelled once and
used by the writer and the reader alike. The values are what stores already hold:
changing one orphans every run logged before. Each group says who writes it and who
reads it. (``docs/`` describes the record for people; this module is it for code.)
"""

from __future__ import annotations


class RunKind:
    """The value of :attr:`Tags.RUN_KIND`: what a run stands for.

    Written by :func:`rnnbench.train.run` (``RUN``, ``TRIAL``) and the sweep record
    (``SWEEP``, :mod:`rnnbench.tuning.record`); read by reports (trials are grouped and
    averaged differently, a sweep's parent names the objective), by ``skip_finished``
    (a run is reused only for the same kind) and by sweeps that resume.
    """

    RUN = "run"
    TRIAL = "trial"
    SWEEP = "sweep"


class Tags:
    """Tags of every training run (single runs and sweep trials alike).

    Written by :func:`rnnbench.train.run` (what ran, where it belongs, how it ended;
    the hardware's tags come from :mod:`rnnbench.hardware`), by the diagnostics
    (``DIAGNOSTICS_WEIGHTS_EPOCH``) and by :func:`rnnbench.tracking.replay`
    (``REPLAYED_FROM``). Read by :mod:`rnnbench.report` (grouping, ranking,
    provenance, the environment table, the commands to reproduce), by ``skip_finished``
    and by the sweep record (a trial's outcome).
    """

    # what the run is
    TASK = "task"
    TASK_FAMILY = "task_family"
    CELL = "cell"
    SEED = "seed"
    RUN_KIND = "run_kind"  # a RunKind value
    PRIMARY_METRIC = "primary_metric"  # the task's headline metric, without ``test_``
    PRIMARY_MODE = "primary_mode"  # ``min`` or ``max``
    OBJECTIVE = "objective"  # the metric the run's objective reads (rnnbench.objective)
    OBJECTIVE_DIRECTION = "objective_direction"
    METRIC_UNITS = "metric_units"  # JSON: factor and unit of the per-epoch metrics
    # what ran it
    IMPL = "impl"
    GRADIENT = "gradient"  # bptt or autodiff (rnnbench.cells.describe_layer)
    CUDNN = "cudnn"
    CUDNN_LAYER_PREFIX = "cudnn."  # + a recurrent layer's name: true/false
    CUDNN_LAYERS = "cudnn_layers"  # ``<layers on cuDNN>/<recurrent layers>``
    XLA = "xla"
    GLOBAL_BATCH_SIZE = "global_batch_size"
    REPLICA_BATCH_SIZE = "replica_batch_size"
    EFFECTIVE_LR = "effective_lr"  # the optimizer's learning rate after any lr_scale
    # where it comes from, and how to run it again
    CONFIG_HASH = "config_hash"
    GIT_COMMIT = "git_commit"  # ``<sha>`` or ``<sha>-dirty``
    COMMAND = "command"
    SWEEP_ID = "sweep_id"  # the Hydra multirun folder, or the keras-tuner project
    SWEEP_JOB = "sweep_job"  # a Hydra multirun job's number (its folder: SweepTags.SWEEP_NAME)
    # a job of a Hydra sweeper that optimises (Optuna): its direction; such a job is a
    # trial (RunKind.TRIAL) without a parent run, ranked by its ``OBJECTIVE``
    SWEEPER_DIRECTION = "sweeper_direction"
    SWEEP_IDS = "sweep_ids"  # every sweep a reused run belongs to: ``;<id>;<id>;``
    REPLAYED_FROM = "replayed_from"  # the run id a replayed spool was logged as first
    # how it ended
    FAILURE_REASON = "failure_reason"
    FAILURE_WHAT = "failure_what"  # what went non-finite (set only for that failure)
    FAILURE_EPOCH = "failure_epoch"
    FAILURE_STEP = "failure_step"
    NOT_LOGGED_PREFIX = "not_logged."  # + the extra that could not be written
    DIAGNOSTICS_WEIGHTS_EPOCH = "diagnostics_weights_epoch"
    TENSORBOARD_LOGDIR = "tensorboard_logdir"
    # MLflow's own
    PARENT_RUN_ID = "mlflow.parentRunId"
    RUN_NAME = "mlflow.runName"


class EnvTags:
    """Tags of what a run ran on and with which versions.

    Written by :func:`rnnbench.train.run` from :meth:`rnnbench.hardware.HardwareInfo.tags`
    (the hardware known before the model exists), :func:`rnnbench.provenance.version_tags`
    and the layers' description (``CUDNN_ELIGIBLE``); read by reports, whose environment
    table lists ``ENVIRONMENT`` in this order.
    """

    RNNBENCH_VERSION = "rnnbench_version"
    PYTHON_VERSION = "python_version"
    TENSORFLOW_VERSION = "tensorflow_version"
    KERAS_VERSION = "keras_version"
    BACKEND = "backend"
    HARDWARE = "hardware"
    DEVICE = "device"
    DEVICE_TYPE = "device_type"
    DEVICE_NAME = "device_name"
    DEVICES_USED = "devices_used"
    VISIBLE_DEVICES = "visible_devices"
    CPU = "cpu"
    REPLICAS = "replicas"
    CUDNN_ELIGIBLE = "cudnn_eligible"
    HARDWARE_NOTES = "hardware_notes"  # what the hardware setup changed or could not do
    VERSION_SUFFIX = "_version"  # a backend other than TensorFlow: ``<backend>_version``
    PRECISION = "precision"
    XLA_REQUESTED = "xla_requested"
    DETERMINISTIC = "deterministic"
    LR_SCALE = "lr_scale"
    #: the environment table of a report, in its order
    ENVIRONMENT = (RNNBENCH_VERSION, PYTHON_VERSION, TENSORFLOW_VERSION, KERAS_VERSION,
                   BACKEND, HARDWARE, DEVICE, VISIBLE_DEVICES, CPU, REPLICAS, Tags.CUDNN,
                   CUDNN_ELIGIBLE, Tags.XLA, PRECISION, DETERMINISTIC, Tags.GIT_COMMIT)


class SweepTags:
    """Tags of a keras-tuner sweep: on its parent run, and on each trial run.

    Written by :mod:`rnnbench.tuning` (the parent's by ``app`` and ``record``, a trial's
    by ``tuner``); read by the sweep itself when it resumes or a worker joins
    (``TRIAL_ID``, ``EXECUTION``) and by reports (the parent's ``OBJECTIVE`` and
    ``DIRECTION`` rank the trials).
    """

    OBJECTIVE = "objective"
    DIRECTION = "direction"
    SWEEP_NAME = "sweep_name"
    # the parent's description of the search
    TUNER = "tuner"  # also on each trial
    SEARCH_SPACE = "search_space"
    DISTRIBUTED = "distributed"  # none, chief or worker
    BUDGET_MAX_TRIALS = "budget.max_trials"
    BUDGET_MAX_EPOCHS = "budget.max_epochs"
    BUDGET_EXECUTIONS = "budget.executions_per_trial"
    # a trial: keras-tuner's id (``"00"``, ``"01"``, ...: what a resumed sweep matches),
    # and the one number people see, the id plus one (console, run name ``trial-<k>``)
    TRIAL_ID = "trial_id"
    TRIAL_NUMBER = "trial_number"
    TUNER_ID = "tuner_id"  # which tuner process ran it (tuner0, chief, worker-...)
    WARM_START_FROM = "warm_start_from"  # hyperband: the trial number whose weights it resumed
    EXECUTION = "execution"
    TRIALS_COMPLETED = "trials_completed"
    TRIALS_FAILED = "trials_failed"
    BEST_TRIAL_ID = "best_trial_id"
    BEST_TRIAL_NUMBER = "best_trial_number"
    BEST_RUN_ID = "best_run_id"
    BEST_HP_PREFIX = "best_hp."


class Params:
    """Params a reader looks up by name (every run logs its whole flattened config).

    Written by :func:`rnnbench.train.run` and the sweep tuner (``HP_PREFIX``: a trial's
    sampled values under the tuner's names); read by reports (a run without the ``cell``
    tag, the seed, the design points of paired sweeps, a sweep's objective).
    """

    CELL = "cell.name"
    SEED = "seed"
    HP_PREFIX = "hp/"
    TUNER_OBJECTIVE = "tuner.objective"
    TUNER_DIRECTION = "tuner.direction"
    # a model sized by model.params: the width solved for it, the target, which weights
    UNITS = "model.units"
    PLAIN_UNITS = "units"
    MODEL_PARAMS = "model.params"
    PARAMS_OF = "model.params_of"


class Metrics:
    """Metrics a reader looks up by name.

    Written by :func:`rnnbench.train.run` (final values), by the epoch logger of
    :mod:`rnnbench.callbacks` (per epoch) and by the diagnostics (``GRAD_FLOW_PREFIX``);
    read by reports (test metrics, trivial baselines, time per epoch, learning curves,
    gradient-flow summaries) and by ``skip_finished`` (a reused run's test metrics).
    """

    TEST_PREFIX = "test_"  # + the task's metric: on the test split
    BASELINE_PREFIX = "baseline_"  # + the metric of a trivial predictor
    OBJECTIVE = "objective"
    PARAMS_COUNT = "params_count"
    RECURRENT_PARAMS = "recurrent_params"
    FIT_TIME_S = "fit_time_s"
    EPOCHS_RUN = "epochs_run"
    VAL_LOSS = "val_loss"  # per epoch
    EPOCH_TIME_S = "epoch_time_s"  # per epoch
    THROUGHPUT = "throughput_samples_per_s"  # per epoch
    GRAD_FLOW_PREFIX = "grad_flow/"  # gradient-flow summaries of the tested weights
    # + "<layer>/<stat>": |λ| of a diagonal complex recurrence (lru), per probe epoch
    EIGENVALUE_MODULUS_PREFIX = "eigenvalue_modulus/"


class SweepMetrics:
    """Metrics of a keras-tuner sweep's parent run, at step = the trial's number.

    Written by :class:`rnnbench.tuning.record.SweepRecord` as each trial ends; read by
    people in the MLflow UI (the optimisation history).
    """

    TRIALS_FAILED = "trials_failed"
    TRIAL_PREFIX = "trial_"  # + the objective: the trial's value
    BEST_PREFIX = "best_"  # + the objective: the best value so far


class Artifacts:
    """Artifact paths of a run, relative to its artifact root.

    Written by :func:`rnnbench.train.run` (model, config), :mod:`rnnbench.callbacks`
    (learning curves), the diagnostics (``GRAD_FLOW_*``) and the sweep record
    (``SWEEP_*``, on the parent run); read by reports (``GRAD_FLOW_JSON``), by
    TensorBoard export (the figures) and by people in the MLflow UI.
    """

    MODEL_DIR = "model"  # model.keras, and the MLflow model of the same name
    WHAT_RAN = "model/what_ran.json"
    CONFIG = "config/config.yaml"
    OVERRIDES = "config/overrides.yaml"
    HISTORY = "history.csv"
    LEARNING_CURVES = "plots/learning_curves.png"
    DIAGNOSTICS_DIR = "diagnostics"
    GRAD_FLOW_JSON = "diagnostics/grad_flow.json"
    GRAD_FLOW_CSV = "diagnostics/grad_flow.csv"
    GRAD_FLOW_HEATMAP = "diagnostics/grad_flow_heatmap.png"
    TENSORBOARD_DIR = "tensorboard"
    SWEEP_SEARCH_SPACE = "sweep/search_space.json"
    SWEEP_BEST = "sweep/best.json"
    SWEEP_TRIALS = "sweep/trials.json"
