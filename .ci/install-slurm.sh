#!/usr/bin/env bash
# Installs Debian's Slurm (slurmctld, slurmd, the client commands), MUNGE, and the
# accounting daemon slurmdbd with MariaDB for the Slurm tests (tests/test_slurm.py),
# which start their own one-node cluster with accounting, so that sacct works
# (tests/slurm_cluster.py). Idempotent: does nothing when they are all there.
set -euo pipefail

have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
if have sbatch && have slurmctld && have slurmd && have munged && have slurmdbd \
   && have mariadbd && have mariadb-install-db; then
    echo "install-slurm: $(slurmctld -V) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
# the package index once per hour: CI runs the three install scripts one after another
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
    $SUDO apt-get update -qq
fi
# slurm-wlm: slurmctld, slurmd and the client; munge: the authentication daemon (its
# package creates /etc/munge/munge.key); slurmdbd and mariadb-server: accounting (the
# tests run their own MariaDB on a private folder and port, never the system's).
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge slurmdbd \
    mariadb-server >/dev/null
echo "install-slurm: $(slurmctld -V) installed"
