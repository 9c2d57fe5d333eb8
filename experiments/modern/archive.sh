#!/usr/bin/env bash
# Keep the running modern study's store between sittings (experiments/modern/in-progress):
#   experiments/modern/archive.sh /work/study2 experiments/modern/in-progress/store.tar.xz
# It takes an SQLite backup of mlflow.db (safe while the lanes write to it), the learning-
# rate searches' state (tuning/) and, of each run's artifacts, the text files the report
# and the resume read (diagnostics/*.json, sweep/, config/, history.csv); the models are
# left out; and the lanes' logs (logs/). The lanes may go on running meanwhile.
set -euo pipefail
store=${1:?usage: experiments/modern/archive.sh STUDY_WORKTREE OUT.tar.xz}
out=$(realpath -m "${2:?usage: experiments/modern/archive.sh STUDY_WORKTREE OUT.tar.xz}")
[ -f "$store/mlflow.db" ] || { echo "archive.sh: no mlflow.db in '$store'" >&2; exit 2; }
command -v sqlite3 > /dev/null || { echo "archive.sh: needs the sqlite3 command" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
sqlite3 -cmd ".timeout 20000" "$store/mlflow.db" ".backup '$tmp/mlflow.db'"
[ -d "$store/tuning" ] && cp -a "$store/tuning" "$tmp/tuning"
[ -d "$store/logs" ] && cp -a "$store/logs" "$tmp/logs"
if [ -d "$store/mlruns" ]; then
  (cd "$store" && find mlruns -type f \( -path '*/artifacts/diagnostics/*.json' \
     -o -path '*/artifacts/sweep/*' -o -path '*/artifacts/config/*' \
     -o -name history.csv -o -name meta.yaml \) -print0 \
   | tar --null -T - -cf "$tmp/mlruns.tar")
  (cd "$tmp" && tar -xf mlruns.tar && rm mlruns.tar)
fi
(cd "$tmp" && tar -cJf "$out" mlflow.db $( [ -d tuning ] && echo tuning ) \
   $( [ -d logs ] && echo logs ) \
   $( [ -d mlruns ] && echo mlruns ))
runs=$(sqlite3 "$tmp/mlflow.db" "select count(*) from runs where status = 'FINISHED'")
echo "archive.sh: $out ($(du -h "$out" | cut -f1)): $runs finished runs"
