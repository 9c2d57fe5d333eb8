#!/usr/bin/env bash
# The modern study's seed extension on chorales (lane C): seeds 5-14 of lstm and mlstm,
# each at its rate from the chorales search (the same rates study.sh ran them at). At 5
# seeds the mlstm-lstm comparison was inconclusive with an MDE of 0.25 nats, above the
# study's 0.15 target; every other chorales comparison was resolved. Run it like
# study.sh: from the study's worktree, its environment on PATH
#   (PATH=$PWD/.venv/bin:$PATH bash experiments/modern/extend-chorales.sh).
# Resumable: a second run skips the finished jobs.
set -u
mkdir -p logs
for spec in "lstm 0.003361399006862172" "mlstm 0.01684376031113529"; do
  set -- $spec
  for try in 1 2 3; do
    stamp=$(date -u +%Y%m%d-%H%M%S)
    echo "$(date -u +%FT%TZ) start chorales-$1-seeds5-14 try $try" >> logs/study.log
    rnnbench -m experiment=modern task=chorales model.params=44440 cell=$1 optimizer.lr=$2 \
      seed=5,6,7,8,9,10,11,12,13,14 train.verbose=0 \
      "hydra.sweep.dir=multirun/C-chorales-$1-seeds-$try-$stamp" \
      > "logs/C-chorales-$1-seeds-$try-$stamp.log" 2>&1
    rc=$?
    echo "$(date -u +%FT%TZ) end chorales-$1-seeds5-14 try $try rc=$rc" >> logs/study.log
    if [ $rc -eq 0 ] || [ $rc -eq 1 ]; then break; fi
  done
done
echo "$(date -u +%FT%TZ) lane C done" >> logs/study.log
