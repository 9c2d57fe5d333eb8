#!/usr/bin/env bash
# The modern-cells study (conf/experiment/modern.yaml, conf/experiment/modern_lr.yaml),
# one of its two lanes; each lane is one process at a time with one thread, so two lanes
# fill a 2-core machine. Resumable: run the same lane again and it goes on where it
# stopped (finished runs and trials are skipped).
#
#   git worktree add --detach ../study <commit>; cd ../study
#   python3 -m venv .venv && .venv/bin/pip install -e . && source .venv/bin/activate
#   experiments/modern/study.sh A & experiments/modern/study.sh B
#   (progress: logs/study.log; each command's output: logs/<lane>-<step>-<try>-<time>.log)
#
# Budgets, sized to about 10 hours of the 2-core machine (experiments/modern/README.md):
#   adding, copy at T = 100:  3 epochs of 1,000 updates (batches of 20)
#   adding, copy at T >= 400: 2 epochs of 250 updates
#   chorales: the task's own (up to 300 epochs, patience 20), after an 8-rate search
#   lm_char:  4 epochs of the task's 360 steps, after an 8-rate search at half of it
#             (2 epochs a trial: 72 trials at 4 epochs would take some 4.6 of the 10 hours)
set -uo pipefail
cd "$(dirname "$0")/../.."
lane=${1:?usage: experiments/modern/study.sh A|B}
for tool in rnnbench rnnbench-tune python; do
  if ! command -v "$tool" > /dev/null; then
    echo "study.sh: '$tool' is not on PATH: activate the project's environment first" \
         "(source .venv/bin/activate, or PATH=/path/to/.venv/bin:\$PATH)" >&2
    exit 2
  fi
done
# the runs must be this checkout's code: an environment installed from another checkout
# (say the main tree, editable) would run, and tag, that tree's commit instead
here=$(pwd -P)
code=$(cd / && python -c 'import pathlib, rnnbench; print(pathlib.Path(rnnbench.__file__).resolve().parent.parent)' 2>/dev/null)
if [ "$code" != "$here" ]; then
  echo "study.sh: the environment on PATH runs rnnbench from '${code:-nowhere}', not from" \
       "this checkout '$here': the study's runs would carry that tree's commit. Install" \
       "this checkout into an environment of its own (python3 -m venv .venv &&" \
       ".venv/bin/pip install -e .) and put it on PATH (source .venv/bin/activate)" >&2
  exit 2
fi
mkdir -p logs
export MLFLOW_TRACKING_URI="sqlite:///$PWD/mlflow.db"
CELLS=(rnn lstm gru indrnn mingru minlstm lru slstm mlstm)
ALL=$(IFS=,; echo "${CELLS[*]}")

step() {  # step NAME COMMAND...: up to 15 tries (a try stopped by a crash or by the
  # memory-map limit, after some 50-80 runs of one process, resumes where it stopped)
  local name=$1; shift
  for try in $(seq 1 15); do
    echo "$(date -u +%FT%TZ) start $name try $try: $*" >> logs/study.log
    # a folder of its own: two lanes' multiruns started in the same second would share
    # Hydra's default multirun/<date>/<time> (its job folders and its sweep_id)
    # (and a log of its own: a later sitting's try 1 must not overwrite this one's)
    local stamp; stamp=$(date -u +%Y%m%d-%H%M%S)
    "$@" train.verbose=0 "hydra.sweep.dir=multirun/$lane-$name-$try-$stamp" \
      > "logs/$lane-$name-$try-$stamp.log" 2>&1
    local rc=$?
    echo "$(date -u +%FT%TZ) end $name try $try rc=$rc" >> logs/study.log
    # 0: done; 1: every job ran, some FAILED for their own reasons (a NaN loss): a new try
    # would repeat them. Anything else (2: refused near the memory-map limit; a crash) goes on.
    if [ $rc -eq 0 ] || [ $rc -eq 1 ]; then return 0; fi
    # 126/127: the command could not run at all; another try would not change that
    if [ $rc -eq 126 ] || [ $rc -eq 127 ]; then return 1; fi
  done
  return 1
}

best_lr() {  # best_lr TASK CELL: the learning rate of the best trial of that cell's search
  python - "$1" "$2" <<'PY'
import sys
import mlflow
task, cell = sys.argv[1:]
client = mlflow.MlflowClient()
exp = client.get_experiment_by_name("modern_lr")
sweeps = client.search_runs([exp.experiment_id],
                            f"tags.run_kind = 'sweep' and tags.task = '{task}' and "
                            f"tags.cell = '{cell}' and attributes.status = 'FINISHED'")
if not sweeps:
    sys.exit(f"no finished learning-rate search of {cell} on {task}")
sweep = sweeps[0]
best = sweep.data.tags["best_trial_id"]
trials = client.search_runs([exp.experiment_id],
                            f"tags.mlflow.parentRunId = '{sweep.info.run_id}' and "
                            f"tags.trial_id = '{best}' and attributes.status = 'FINISHED'")
print(trials[0].data.params["optimizer.lr"])
PY
}

tuned() {  # tuned TASK PARAMS "SEARCH OVERRIDES" "RUN OVERRIDES": the search, then each
  # cell's seeds at its best rate
  local task=$1 params=$2 search=$3 runs=$4
  # shellcheck disable=SC2086  # the override lists are split on spaces on purpose
  step "$task-lr" rnnbench-tune -m experiment=modern_lr task=$task model.params=$params \
    cell=$ALL $search || return 1
  for cell in "${CELLS[@]}"; do
    lr=$(best_lr "$task" "$cell") || return 1
    # shellcheck disable=SC2086
    step "$task-$cell" rnnbench -m experiment=modern task=$task model.params=$params \
      cell=$cell optimizer.lr=$lr $runs
  done
}

case $lane in
  A)
    tuned lm_char 37852 train.epochs=2 train.epochs=4
    step adding-1000 rnnbench -m experiment=modern task=adding task.length=1000 \
      model.params=33281 train.epochs=2 train.steps_per_epoch=250
    step adding-100 rnnbench -m experiment=modern task=adding task.length=100 \
      model.params=33281 train.epochs=3 train.steps_per_epoch=1000
    ;;
  B)
    tuned chorales 44440 "" ""
    step copy-400 rnnbench -m experiment=modern task=copy task.length=400 \
      model.params=34313 train.epochs=2 train.steps_per_epoch=250
    step copy-100 rnnbench -m experiment=modern task=copy task.length=100 \
      model.params=34313 train.epochs=3 train.steps_per_epoch=1000
    step adding-400 rnnbench -m experiment=modern task=adding task.length=400 \
      model.params=33281 train.epochs=2 train.steps_per_epoch=250
    ;;
  *) echo "usage: experiments/modern/study.sh A|B" >&2; exit 2 ;;
esac
echo "$(date -u +%FT%TZ) lane $lane done" >> logs/study.log
