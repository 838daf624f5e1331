"""A real single-node Slurm on this machine, for tests and for trying things.

    python -m isthmus.testing.slurm up      # prints `export SLURM_CONF=...` last
    python -m isthmus.testing.slurm status
    python -m isthmus.testing.slurm down    # stops exactly what `up` started

munge, MariaDB + slurmdbd (accounting), slurmctld and slurmd run from a private
directory (``$ISTHMUS_SLURM_DIR``, default ``/tmp/isthmus-slurm``) with two partitions
(``debug``, the default, and ``long``), an account ``isthmus`` and an association for the
current user. ``up`` is idempotent and safe against concurrent callers (a file lock).
It needs root (the daemons switch users) and Debian's packages (``make system-deps``).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CLUSTER = "isthmus"
ACCOUNT = "isthmus"
DB_PORT = 33061
PACKAGES = "slurm-wlm slurmctld slurmd slurm-client slurmdbd munge mariadb-server"
DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged")  # stop order


class SlurmHarnessError(RuntimeError):
    """The private Slurm could not be started; the message says what to do."""


@dataclass
class SlurmInfo:
    root: Path
    conf: Path
    partitions: list[str] = field(default_factory=lambda: ["debug", "long"])
    account: str = ACCOUNT
    user: str = field(default_factory=getpass.getuser)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}


def root_dir() -> Path:
    return Path(os.environ.get("ISTHMUS_SLURM_DIR", "/tmp/isthmus-slurm"))


def _run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise SlurmHarnessError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.1)
    tail = ""
    if log is not None and log.exists():
        tail = "\n--- " + str(log) + " ---\n" + log.read_text(errors="replace")[-3000:]
    raise SlurmHarnessError(f"{what} did not happen within {timeout:g} s{tail}")


def _alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def _spawn(cmd: list[str], pidfile: Path, log: Path, env: dict[str, str] | None = None,
           user: str | None = None) -> None:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    pidfile.write_text(str(proc.pid))


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


def _write_configs(root: Path) -> Path:
    for sub in ("state", "spool", "log", "run", "db", "mysql-run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    cpus = os.cpu_count() or 1
    memory = max(256, int(_memory_mb() * 0.8))
    conf.write_text(f"""# written by isthmus.testing.slurm
ClusterName={CLUSTER}
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CryptoType=crypto/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SchedulerType=sched/backfill
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
InactiveLimit=0
KillWait=5
NodeName=localhost CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=long Nodes=localhost Default=NO MaxTime=2-00:00:00 DefaultTime=01:00:00 State=UP
""")
    dbd = root / "slurmdbd.conf"
    dbd.write_text(f"""# written by isthmus.testing.slurm
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile={root}/log/slurmdbd.log
PidFile={root}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={DB_PORT}
StorageUser=slurm
StoragePass=isthmus
StorageLoc=slurm_acct_db
""")
    dbd.chmod(0o600)
    return conf


def _start_munge(root: Path) -> None:
    if _run(["sh", "-c", "munge -n | unmunge"], check=False).returncode == 0:
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    _spawn(["munged", "--foreground"], root / "run" / "munged.pid", root / "log" / "munged.log", user="munge")
    _wait(lambda: _run(["sh", "-c", "munge -n | unmunge"], check=False).returncode == 0, "munge answering",
          log=root / "log" / "munged.log")


def _start_mariadb(root: Path) -> None:
    datadir = root / "db"
    sock = root / "mysql-run" / "mysqld.sock"
    if not (datadir / "mysql").exists():
        shutil.chown(datadir, "mysql", "mysql")
        _run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=mysql",
              "--auth-root-authentication-method=socket", "--skip-test-db"], timeout=120)
    shutil.chown(root / "mysql-run", "mysql", "mysql")
    _spawn(["mariadbd", "--no-defaults", f"--datadir={datadir}", f"--socket={sock}", f"--port={DB_PORT}",
            "--bind-address=127.0.0.1", "--skip-name-resolve", f"--pid-file={root}/mysql-run/mariadbd-own.pid",
            "--innodb-buffer-pool-size=64M"], root / "run" / "mariadbd.pid", root / "log" / "mariadbd.log",
           user="mysql")
    _wait(lambda: _run(["mariadb", f"--socket={sock}", "-u", "root", "-e", "select 1"], check=False).returncode == 0,
          "MariaDB answering", log=root / "log" / "mariadbd.log")
    sql = ("CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'isthmus'; "
           "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
    _run(["mariadb", f"--socket={sock}", "-u", "root", "-e", sql])


def _start_slurm(root: Path, conf: Path) -> None:
    env = {"SLURM_CONF": str(conf)}
    _spawn(["slurmdbd", "-D"], root / "run" / "slurmdbd.own.pid", root / "log" / "slurmdbd.out", env=env)
    _wait(lambda: _run(["sacctmgr", "-n", "show", "cluster"], env=env, check=False).returncode == 0,
          "slurmdbd answering", log=root / "log" / "slurmdbd.log")
    clusters = _run(["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"], env=env).stdout.split()
    if CLUSTER not in clusters:
        _run(["sacctmgr", "-i", "add", "cluster", CLUSTER], env=env)
    _spawn(["slurmctld", "-D", "-i"], root / "run" / "slurmctld.own.pid", root / "log" / "slurmctld.out", env=env)
    _wait(lambda: _run(["scontrol", "ping"], env=env, check=False).stdout.count("UP") > 0, "slurmctld answering",
          log=root / "log" / "slurmctld.log")
    _spawn(["slurmd", "-D", "-N", "localhost"], root / "run" / "slurmd.own.pid", root / "log" / "slurmd.out",
           env=env)
    _wait(lambda: _run(["sinfo", "-h", "-o", "%T"], env=env, check=False).stdout.split()[:1] in (["idle"], ["mixed"],
                                                                                               ["allocated"]),
          "the node idle", timeout=60, log=root / "log" / "slurmd.log")
    user = getpass.getuser()
    accounts = _run(["sacctmgr", "-n", "-P", "show", "account", "format=account"], env=env).stdout.split()
    if ACCOUNT not in accounts:
        _run(["sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={CLUSTER}", "description=Isthmus tests",
              "organization=isthmus"], env=env)
    assocs = _run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=account"], env=env).stdout.split()
    if ACCOUNT not in assocs:
        _run(["sacctmgr", "-i", "add", "user", user, f"account={ACCOUNT}", f"cluster={CLUSTER}",
              "maxjobs=100", "maxsubmitjobs=200"], env=env)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_up(root: Path | None = None) -> bool:
    root = root or root_dir()
    conf = root / "slurm.conf"
    if not conf.exists() or not all(_alive(root / "run" / f"{d}.own.pid") for d in ("slurmctld", "slurmd", "slurmdbd")):
        return False
    result = _run(["sinfo", "-h", "-o", "%T"], env={"SLURM_CONF": str(conf)}, check=False)
    return result.returncode == 0 and bool(result.stdout.strip())


def _check_prerequisites() -> None:
    missing = [c for c in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sinfo") if not shutil.which(c)]
    if missing:
        raise SlurmHarnessError(f"missing {', '.join(missing)}: run `make system-deps` as root "
                                f"(Debian packages: {PACKAGES})")
    if os.geteuid() != 0:
        raise SlurmHarnessError("the private Slurm needs root (its daemons switch users)")


def up() -> SlurmInfo:
    """Start (or reuse) the private Slurm and return where it is."""
    root = root_dir()
    _check_prerequisites()
    with _locked(root):
        conf = root / "slurm.conf"
        if not is_up(root):
            down(root, locked=True)
            conf = _write_configs(root)
            _start_munge(root)
            _start_mariadb(root)
            _start_slurm(root, conf)
        return SlurmInfo(root=root, conf=conf)


def down(root: Path | None = None, locked: bool = False) -> list[str]:
    """Stop what ``up`` started (by its pid files); returns what was stopped."""
    root = root or root_dir()
    stopped: list[str] = []
    ctx = contextlib.nullcontext() if locked else _locked(root)
    with ctx:
        for daemon in DAEMONS:
            pidfile = root / "run" / (f"{daemon}.own.pid" if daemon.startswith("slurm") else f"{daemon}.pid")
            if not pidfile.exists():
                continue
            try:
                pid = int(pidfile.read_text().strip())
                os.killpg(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.killpg(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
            pidfile.unlink(missing_ok=True)
            stopped.append(daemon)
    return stopped


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    command = args[0] if args else "status"
    try:
        if command == "up":
            start = time.monotonic()
            info = up()
            print(f"Slurm is up in {info.root} ({time.monotonic() - start:.1f} s): partitions "
                  f"{', '.join(info.partitions)}, account {info.account} for {info.user}", file=sys.stderr)
            print(f"export SLURM_CONF={info.conf}")
        elif command == "down":
            stopped = down()
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        elif command == "status":
            print("up" if is_up() else "down")
            return 0 if is_up() else 1
        else:
            print("usage: python -m isthmus.testing.slurm up|down|status", file=sys.stderr)
            return 2
    except SlurmHarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
