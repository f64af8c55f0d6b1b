"""A throw-away single-node SLURM cluster on loopback, for the cluster test (tests/test_slurm.py) and by hand.

Why: the SLURM profile (profiles/slurm) is only worth something if it is exercised against a real slurmctld and
slurmd, not a mock. Debian's packages (slurmctld slurmd slurm-client munge, SLURM 22.05) give a working cluster
in ~10-20 s on one machine. Everything lives in one temporary directory (config, state, spool, logs, munge
socket); the daemons we start are stopped again by their PIDs, nothing else is touched.

Usage (root):
    python tests/cluster/slurm_cluster.py up DIR     # install if missing, start; prints `export SLURM_CONF=...`
    python tests/cluster/slurm_cluster.py down DIR   # stop the daemons started by `up DIR` (PIDs in DIR/pids)
Clients (sbatch, squeue, snakemake's slurm executor) find the cluster through the SLURM_CONF environment variable.

Settings that matter (learnt the hard way):
- CommunicationParameters=NoCtldInAddrAny,NoInAddrAny + NodeAddr=127.0.0.1: everything stays on loopback.
- No slurmdbd, so `sacct` cannot answer: snakemake-executor-plugin-slurm must use `squeue` for job status,
  which needs MinJobAge (here 300 s) >= 3 x its `init-seconds-before-status-checks`.
- The config is also installed as /etc/slurm/slurm.conf (only when that file is absent or ours; removed again
  by `down`): inside a job, snakemake's slurm-jobstep executor runs `srun` with the SLURM_* environment
  (SLURM_CONF included) stripped, so srun only finds the cluster through the default config path.
- DefMemPerCPU: without it a job takes the whole node's memory and jobs run one at a time.
- SlurmdParameters=config_overrides: the node may claim more CPUs/memory than the machine has, so jobs that ask
  for a few CPUs are scheduled on a 2-core CI runner (nothing is enforced: proctrack/linuxproc, no cgroups).
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "munged", "munge", "unmunge"]
NODE_CPUS = 8
NODE_MEMORY_MB = 16000
DEF_MEM_PER_CPU_MB = 500
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# single-node test cluster written by tests/cluster/slurm_cluster.py"


class ClusterUnavailable(RuntimeError):
    """SLURM cannot be brought up here for a reason outside the project (not root, no apt, install failed)."""


@dataclass
class Cluster:
    root: Path
    hostname: str
    pids: dict[str, int] = field(default_factory=dict)
    # munged (user munge) cannot reach a socket inside a root-only directory such as pytest's tmp dirs
    munge_dir: Path | None = None

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment for SLURM clients (sbatch/squeue/snakemake) talking to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    @property
    def partition(self) -> str:
        return "debug"


def _which_missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def ensure_installed(timeout_s: float = 600) -> None:
    """apt-get install the SLURM/munge packages when missing; ClusterUnavailable when that is impossible."""
    if not _which_missing():
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable(f"SLURM binaries {_which_missing()} missing and not root (cannot apt-get install)")
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable(f"SLURM binaries {_which_missing()} missing and no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise ClusterUnavailable(f"{' '.join(cmd)} timed out after {timeout_s:.0f} s") from exc
        if proc.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    if _which_missing():
        raise ClusterUnavailable(f"still missing after apt-get install: {_which_missing()}")


def _resolvable_hostname() -> str:
    """The short hostname, added to /etc/hosts (as 127.0.0.1) when it does not resolve: slurmd needs it."""
    name = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(name)
    except OSError:
        with open("/etc/hosts", "a") as hosts:
            hosts.write(f"\n127.0.0.1 {name}  # added by normscape tests/cluster\n")
    return name


def write_config(root: Path, hostname: str, munge_dir: Path) -> Path:
    for sub in ("etc", "state", "spool", "log", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "etc" / "slurm.conf"
    conf.write_text(f"""\
{MARKER}
ClusterName=normscape
SlurmctldHost={hostname}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_dir / "munge.socket.2"}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "run" / "slurmctld.pid"}
SlurmdPidFile={root / "run" / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={DEF_MEM_PER_CPU_MB}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName={hostname} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName=debug Nodes={hostname} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _wait(what: str, check, timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s\n{tail}")


def _ok(cmd: list[str], env: dict | None = None, input: str | None = None) -> bool:
    try:
        return subprocess.run(cmd, env=env, input=input, capture_output=True, text=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _idle(cluster: Cluster) -> bool:
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], env=cluster.env, capture_output=True, text=True, timeout=10
        ).stdout
    except subprocess.TimeoutExpired:
        return False
    return out.strip() in ("idle", "mixed", "allocated")


def up(root: Path | None = None, timeout_s: float = 60) -> Cluster:
    """Install if needed, write the config under ``root`` and start munged, slurmctld, slurmd (each waited for).

    On any failure the daemons started so far are stopped again.
    """
    if os.geteuid() != 0:
        raise ClusterUnavailable("not root: the test cluster runs slurmd/slurmctld/munged as root/munge")
    ensure_installed()
    root = Path(root) if root else Path(tempfile.mkdtemp(prefix="normscape-slurm-"))
    root.mkdir(parents=True, exist_ok=True)
    munge_dir = Path(tempfile.mkdtemp(prefix="normscape-munge-"))  # under /tmp: reachable by user munge
    (root / "munge_dir").write_text(str(munge_dir))
    cluster = Cluster(root=root, hostname=_resolvable_hostname(), munge_dir=munge_dir)
    conf = write_config(root, cluster.hostname, munge_dir)
    if SYSTEM_CONF.exists() and MARKER not in SYSTEM_CONF.read_text():
        raise ClusterUnavailable(
            f"{SYSTEM_CONF} exists and is not ours: this machine has a real SLURM config, not overwriting it"
        )
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_CONF.write_text(conf.read_text())
    try:
        _start_munge(cluster, timeout_s)
        _start(cluster, "slurmctld", [_binary("slurmctld"), "-D", "-i", "-f", str(cluster.conf)])
        _wait(
            "slurmctld",
            lambda: _ok(["scontrol", "ping"], cluster.env) and _alive(cluster, "slurmctld"),
            timeout_s,
            root / "log" / "slurmctld.log",
        )
        _start(cluster, "slurmd", [_binary("slurmd"), "-D", "-f", str(cluster.conf)])
        _wait("slurmd (node idle in sinfo)", lambda: _idle(cluster), timeout_s, root / "log" / "slurmd.log")
    except BaseException:
        down(cluster)
        raise
    return cluster


def _start_munge(cluster: Cluster, timeout_s: float) -> None:
    """munged as user munge with its own socket/pid/log/seed in its own dir (no clash with a system munged)."""
    mdir = cluster.munge_dir
    user = pwd.getpwnam("munge")
    os.chown(mdir, user.pw_uid, grp.getgrnam("munge").gr_gid)
    mdir.chmod(0o755)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create"], check=True, capture_output=True, timeout=30)
        os.chown(key, user.pw_uid, user.pw_gid)
    sock = mdir / "munge.socket.2"
    cmd = [
        "runuser",
        "-u",
        "munge",
        "--",
        _binary("munged"),
        "--foreground",
        f"--socket={sock}",
        f"--pid-file={mdir / 'munged.pid'}",
        f"--log-file={mdir / 'munged.log'}",
        f"--seed-file={mdir / 'munged.seed'}",
    ]
    _start(cluster, "munged", cmd)
    _wait(
        "munged", lambda: _ok(["sh", "-c", f"munge -n -S {sock} | unmunge -S {sock}"]), timeout_s, mdir / "munged.log"
    )


def _start(cluster: Cluster, name: str, cmd: list[str]) -> None:
    log = open(cluster.root / "log" / f"{name}.out", "ab")
    # own session, so stopping it never signals the test process group
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster.pids[name] = proc.pid
    (cluster.root / "pids").write_text("".join(f"{k} {v}\n" for k, v in cluster.pids.items()))


def _alive(cluster: Cluster, name: str) -> bool:
    pid = cluster.pids.get(name)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def down(cluster: Cluster, timeout_s: float = 20) -> None:
    """Stop the daemons this cluster started (reverse start order), by PID: SIGTERM, then SIGKILL."""
    for name in reversed(list(cluster.pids)):
        pid = cluster.pids[name]
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child (CLI `down`): poll for its disappearance
                done = 0 if _alive(cluster, name) else pid
            if done:
                break
            time.sleep(0.2)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    cluster.pids.clear()
    if cluster.munge_dir is not None:
        shutil.rmtree(cluster.munge_dir, ignore_errors=True)
    if SYSTEM_CONF.exists() and MARKER in SYSTEM_CONF.read_text():
        SYSTEM_CONF.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("root", type=Path, help="directory for the cluster's config, state, logs, PIDs")
    args = parser.parse_args(argv)
    if args.action == "up":
        try:
            cluster = up(args.root)
        except ClusterUnavailable as exc:
            print(f"slurm_cluster: unavailable: {exc}", file=sys.stderr)
            return 2
        print(f"export SLURM_CONF={cluster.conf}")
        return 0
    pids = {}
    pid_file = args.root / "pids"
    if pid_file.exists():
        pids = {name: int(pid) for name, pid in (line.split() for line in pid_file.read_text().splitlines())}
    munge_file = args.root / "munge_dir"
    munge_dir = Path(munge_file.read_text()) if munge_file.exists() else None
    down(Cluster(root=args.root, hostname="", pids=pids, munge_dir=munge_dir))
    pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
