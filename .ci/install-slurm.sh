#!/usr/bin/env bash
# Installs Debian's Slurm (slurmctld, slurmd, the client commands) and MUNGE for the
# Slurm tests (tests/test_slurm.py), which start their own one-node cluster
# (tests/slurm_cluster.py). No accounting database (slurmdbd) is installed.
# Idempotent: does nothing when sbatch, slurmctld, slurmd and munged are already there.
set -euo pipefail

if command -v sbatch >/dev/null && command -v slurmctld >/dev/null \
   && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    echo "install-slurm: $(slurmctld -V) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# slurm-wlm: slurmctld, slurmd and the client; munge: the authentication daemon (its
# package creates /etc/munge/munge.key).
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
echo "install-slurm: $(slurmctld -V) installed"
