"""A private one-node Slurm cluster for the tests (and by hand: ``python
tests/slurm_cluster.py start|stop <folder>``).

Everything lives in one folder: ``slurm.conf`` (this machine's CPUs and memory, one
partition ``debug``, free ports), a MUNGE daemon on its own socket and key, the state,
logs and pid files of ``slurmctld`` and ``slurmd``. Client commands (``sbatch``,
``squeue``, ``scontrol``) find it through ``SLURM_CONF``, which :meth:`Cluster.env`
sets. The daemons must run as root (``slurmd`` starts jobs as their user); without root
or without the Slurm packages :func:`missing` says what is wrong and how to install them
(``bash .ci/install-slurm.sh``). Stopped by the PIDs in their pid files, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

INSTALL = "bash .ci/install-slurm.sh"
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol",
            "scancel")


def _which(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name,)
                                       if p.exists()), None)


def missing() -> str | None:
    """Why a cluster cannot start here (None: it can)."""
    absent = [p for p in PROGRAMS if _which(p) is None]
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} missing): run {INSTALL}"
    if os.geteuid() != 0:
        return "the Slurm test cluster must be started as root (slurmd runs jobs as their user)"
    return None


# job states that are not an end state (``sacct`` waits until none is listed)
LIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED",
                         "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING",
                         "STAGE_OUT", "STOPPED"})
ACCOUNTING = ("slurmdbd", "mariadbd", "mariadb-install-db", "mariadb", "sacct", "sacctmgr")


def accounting_missing() -> str | None:
    """Why this cluster cannot keep accounts (``sacct``) here (None: it can)."""
    absent = [p for p in ACCOUNTING if _which(p) is None]
    if absent:
        return (f"Slurm accounting needs slurmdbd and MariaDB ({', '.join(absent)} missing): "
                f"run {INSTALL}")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(512, int(line.split()[1]) // 1024 - 2000)
    return 2048


class Cluster:
    """One ``slurmctld`` + one ``slurmd`` (+ ``munged``) under ``root``."""

    def __init__(self, root: Path, accounting: bool | None = None) -> None:
        """``accounting``: run ``slurmdbd`` on a private MariaDB so that ``sacct`` works
        (None: when they are installed)."""
        self.root = Path(root).resolve()
        self.accounting = accounting_missing() is None if accounting is None else accounting
        self.db_port = _free_port()
        self.dbd_port = _free_port()
        self.conf = self.root / "slurm.conf"
        self.munge_dir = self.root / "munge"
        self.socket = self.munge_dir / "munge.socket"
        self.host = socket.gethostname().split(".")[0]

    # ------------------------------------------------------------ configuration
    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a client of this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), **extra}

    def write_conf(self) -> None:
        for sub in ("spool/slurmd", "spool/slurmctld", "log", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        r = self.root
        self.conf.write_text("\n".join([
            "ClusterName=rnnbenchtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",  # no name lookup needed
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            # cred_expire: a requeued job waits this long (+1 s) before it may start again
            # (Slurm's default 120 s)
            f"AuthInfo=socket={self.socket},cred_expire=20",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "ReturnToService=2",
            f"SlurmctldPidFile={r}/run/slurmctld.pid",
            f"SlurmdPidFile={r}/run/slurmd.pid",
            f"SlurmdSpoolDir={r}/spool/slurmd",
            f"StateSaveLocation={r}/spool/slurmctld",
            "SlurmUser=root",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            *([f"AccountingStorageType=accounting_storage/slurmdbd",
               "AccountingStorageHost=127.0.0.1", f"AccountingStoragePort={self.dbd_port}",
               f"AccountingStoragePass={self.socket}"] if self.accounting else []),
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd.log",
            "SlurmctldTimeout=30", "SlurmdTimeout=60", "MessageTimeout=30",
            "KillWait=5", "JobRequeue=1",
            # at least 4 job slots, also on a 2-core machine (a tuning chief holds one
            # while it waits): the configured CPUs count, not the probed ones
            "SlurmdParameters=config_overrides",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={max(4, os.cpu_count() or 1)} "
            f"RealMemory={_memory_mb()} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            ""]))
        self.conf.chmod(0o644)

    # ------------------------------------------------------------ daemons
    def _start_munge(self) -> None:
        import pwd

        m = pwd.getpwnam("munge")
        self.root.chmod(0o755)
        self.munge_dir.mkdir(exist_ok=True)
        self.munge_dir.chmod(0o711)  # munged: the socket folder must be searchable by all
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        for p in (self.munge_dir, key):
            os.chown(p, m.pw_uid, m.pw_gid)
        cmd = [_which("munged"), f"--socket={self.socket}", f"--key-file={key}",
               f"--pid-file={self.munge_dir}/munged.pid", f"--log-file={self.munge_dir}/munged.log",
               f"--seed-file={self.munge_dir}/munged.seed"]
        subprocess.run(["runuser", "-u", "munge", "--", *cmd], check=True, timeout=60,
                       capture_output=True, text=True)
        self._wait(lambda: subprocess.run(
            f"munge -S {self.socket} -n | unmunge -S {self.socket}", shell=True,
            capture_output=True).returncode == 0, 60, "munged to answer")

    def _start_accounting(self, timeout: float) -> None:
        """MariaDB on 127.0.0.1:<db_port> (its own data folder), a database and user for
        ``slurmdbd``, ``slurmdbd`` on <dbd_port>, and this cluster registered in it."""
        db = self.root / "mariadb"
        (db / "data").mkdir(parents=True, exist_ok=True)
        sock = db / "mysqld.sock"
        subprocess.run([_which("mariadb-install-db"), "--no-defaults", f"--datadir={db}/data",
                        "--user=root", "--skip-test-db", "--auth-root-authentication-method=socket"],
                       check=True, timeout=120, capture_output=True)
        subprocess.Popen([_which("mariadbd"), "--no-defaults", f"--datadir={db}/data",
                          f"--socket={sock}", f"--port={self.db_port}", "--bind-address=127.0.0.1",
                          "--user=root", f"--pid-file={self.root}/run/mariadb.pid",
                          f"--log-error={self.root}/log/mariadb.log", "--skip-name-resolve",
                          "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        sql = [_which("mariadb"), "--no-defaults", "-S", str(sock), "-u", "root"]
        self._wait(lambda: subprocess.run([*sql, "-e", "SELECT 1"], capture_output=True
                                          ).returncode == 0, timeout, "MariaDB to answer")
        password = os.urandom(12).hex()
        subprocess.run([*sql, "-e",
                        "CREATE DATABASE slurm_acct_db; "
                        f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"],
                       check=True, timeout=60, capture_output=True)
        r = self.root
        conf = r / "slurmdbd.conf"  # slurmdbd reads it beside slurm.conf (SLURM_CONF)
        conf.write_text("\n".join([
            "AuthType=auth/munge", f"AuthInfo=socket={self.socket}",
            "DbdAddr=127.0.0.1", f"DbdHost={self.host}", f"DbdPort={self.dbd_port}",
            "SlurmUser=root", f"PidFile={r}/run/slurmdbd.pid", f"LogFile={r}/log/slurmdbd.log",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
            f"StoragePort={self.db_port}", "StorageUser=slurm", f"StoragePass={password}",
            "StorageLoc=slurm_acct_db", ""]))
        conf.chmod(0o600)
        subprocess.run([_which("slurmdbd")], env=self.env(), check=True, timeout=60,
                       capture_output=True)

        def registered() -> bool:
            for cmd in (["add", "cluster", "rnnbenchtest"], ["-n", "-P", "list", "cluster"]):
                done = subprocess.run(["sacctmgr", "-i", *cmd], env=self.env(),
                                      capture_output=True, text=True, timeout=60)
            return done.returncode == 0 and "rnnbenchtest" in done.stdout

        self._wait(registered, timeout, "slurmdbd to register the cluster")

    def start(self, timeout: float = 120) -> "Cluster":
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_conf()
        self._start_munge()
        if self.accounting:
            self._start_accounting(timeout)
        env = self.env()
        # -i: ignore a stale state; -c: clear it (a fresh cluster every time)
        subprocess.run([_which("slurmctld"), "-c", "-i", "-f", str(self.conf)], env=env,
                       check=True, timeout=60, capture_output=True)
        subprocess.run([_which("slurmd"), "-f", str(self.conf)], env=env, check=True,
                       timeout=60, capture_output=True)
        self._wait(lambda: self.node_state() == "idle", timeout, "the node to be idle")
        return self

    def node_state(self) -> str:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env(),
                              capture_output=True, text=True, timeout=60)
        return done.stdout.strip() if done.returncode == 0 else ""

    def _wait(self, ok, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ok():
                return
            time.sleep(0.5)
        logs = "\n".join(p.read_text(errors="replace")[-1500:]
                         for p in sorted(self.root.rglob("*.log")))
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")

    def run(self, *cmd: str) -> str:
        """A client command's standard output (raises on failure)."""
        return subprocess.run(cmd, env=self.env(), check=True, capture_output=True,
                              text=True, timeout=60).stdout

    def sacct(self, *args: str, timeout: float = 60) -> str:
        """``sacct -X -n -P <args>`` (one line per job, ``|`` between fields), once every
        job it lists has reached an end state. A job's end reaches the accounting
        database after the job itself has ended (slurmd tells slurmctld, which tells
        slurmdbd), so a job whose results are already on disk can still read RUNNING
        for a moment; this waits (up to ``timeout`` seconds) for the record to catch up."""
        out = ""

        def settled() -> bool:
            nonlocal out
            out = self.run("sacct", "-X", "-n", "-P", *args)
            return not any(field in LIVE_STATES for line in out.split()
                           for field in line.split("|"))

        try:
            self._wait(settled, timeout, f"sacct {' '.join(args)} to show only ended jobs")
        except TimeoutError as err:
            raise TimeoutError(f"{err}\nlast sacct output:\n{out}") from None
        return out

    def stop_slurmdbd(self) -> None:
        """Stop the accounting daemon alone (``sacct`` then fails; jobs still run)."""
        self._kill_pidfile(self.root / "run/slurmdbd.pid")

    def start_slurmdbd(self, timeout: float = 60) -> None:
        subprocess.run([_which("slurmdbd")], env=self.env(), check=True, timeout=60,
                       capture_output=True)
        self._wait(lambda: subprocess.run(["sacct", "-X", "-n"], env=self.env(),
                                          capture_output=True, timeout=60).returncode == 0,
                   timeout, "slurmdbd to answer sacct")

    @staticmethod
    def _kill_pidfile(pidfile: Path) -> None:
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop slurmd, slurmctld, slurmdbd, MariaDB and munged by the PIDs in their pid
        files."""
        for pidfile in (self.root / "run/slurmd.pid", self.root / "run/slurmctld.pid",
                        self.root / "run/slurmdbd.pid", self.root / "run/mariadb.pid",
                        self.munge_dir / "munged.pid"):
            self._kill_pidfile(pidfile)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: python tests/slurm_cluster.py start|stop <folder>")
    if sys.argv[1] == "start" and (why := missing()):
        sys.exit(why)
    cluster = Cluster(Path(sys.argv[2]))
    if sys.argv[1] == "start":
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
