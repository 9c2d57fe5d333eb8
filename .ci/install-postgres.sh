#!/usr/bin/env bash
# Installs Debian's PostgreSQL server for the MLflow-on-PostgreSQL test
# (tests/test_postgres_server.py), which starts its own private cluster on 127.0.0.1.
# Idempotent: does nothing when initdb and pg_ctl are already there.
set -euo pipefail

for bindir in /usr/lib/postgresql/*/bin; do
    if [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ]; then
        echo "install-postgres: $("$bindir/postgres" --version) already installed ($bindir)"
        exit 0
    fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
# the package index once per hour: CI runs the three install scripts one after another
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
    $SUDO apt-get update -qq
fi
# --no-install-recommends: the server and its client, no extra locales or docs.
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
for bindir in /usr/lib/postgresql/*/bin; do
    echo "install-postgres: $("$bindir/postgres" --version) installed ($bindir)"
done
