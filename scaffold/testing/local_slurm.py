"""A real Slurm 22.05 on loopback, for tests that submit generated ``finetune.slurm`` files.

Everything (config, munge key and socket, controller state, spool, logs, pid files, fake GPU devices)
lives under one state directory, so the cluster never touches ``/etc/slurm`` or a system munged.
Every client call needs ``SLURM_CONF`` exported (``Cluster.env``); without it a client looks for a
configless controller through DNS and fails.

One node by default. ``nodes=N`` starts N slurmd daemons on this machine, one per node name (the first is
this host's short name, then ``NAME-2``...), all at 127.0.0.1 on their own ports: multi-node scripts then
pass ``sbatch --test-only`` and really run ``srun`` across "nodes" (whose tasks all run here).
The partitions and node feature are those of the shipped example's site config (partition ``gpu``, feature
``gpu80``), so the example's scripts are accepted as generated.

Command line::

    python -m scaffold.testing.local_slurm start|stop|status|env [--dir DIR] [--nodes N]

From pytest::

    cluster = local_slurm.start(tmp_dir)
    job_id = cluster.sbatch(script)
    result = local_slurm.wait_for_job(job_id, cluster.env, timeout=60)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DIR = Path("/tmp/scaffold-slurm")
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
CLUSTER_NAME = "scaffold"
DEFAULT_CTLD_PORT = 6817
DEFAULT_SLURMD_PORT = 6818

# The advertised node is bigger than this machine so that scripts written for real clusters
# (80G, 4 GPUs) pass --test-only and run. SlurmdParameters=config_overrides makes slurmd trust it;
# TaskPlugin=task/none binds nothing, so jobs still run on the real cores whatever CPU ids they get.
NODE_CPUS = 16
NODE_MEMORY_MB = 1_000_000
NODE_GPUS = 8
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
DEF_MEM_PER_CPU_MB = 1024  # without a default, a job with no --mem takes the whole node's memory
NODE_FEATURES = "gpu80"  # the shipped example's constraint
# A requeued job may start again only cred_expire + 1 s after the requeue (Slurm's default: 120 s).
CRED_EXPIRE_S = 10

TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)


class LocalSlurmError(RuntimeError):
    """The local cluster could not be installed, started, stopped or queried."""


@dataclass(frozen=True)
class Partition:
    """One partition of the local cluster."""

    name: str
    max_time: str  # Slurm time text, as in slurm.conf
    default: bool = False


PARTITIONS: tuple[Partition, ...] = (
    Partition("debug", "1-00:00:00", default=True),
    Partition("short", "01:00:00"),  # a short limit so tests can check time limits against a partition
    Partition("gpu", "1-00:00:00"),  # the shipped example's partition (its partition_max_time)
)


@dataclass(frozen=True)
class Layout:
    """Paths of every file the cluster owns, all under ``root``."""

    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def gres_conf(self) -> Path:
        return self.etc / "gres.conf"

    @property
    def plugstack(self) -> Path:
        return self.etc / "plugstack.conf"

    @property
    def munge_dir(self) -> Path:
        return self.root / "munge"

    @property
    def munge_key(self) -> Path:
        return self.munge_dir / "munge.key"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def dev_dir(self) -> Path:
        return self.root / "dev"

    def pid_file(self, daemon: str) -> Path:
        """``daemon`` is munged, slurmctld or ``slurmd-NODE`` (one slurmd per node: see slurm.conf's %n)."""
        # munged insists on a pid file in a directory it considers secure: keep it with its socket.
        return (self.munge_dir if daemon == "munged" else self.run_dir) / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return (self.munge_dir if daemon == "munged" else self.log_dir) / f"{daemon}.log"

    def daemons(self) -> list[str]:
        """The daemons of the configured cluster, in start order: munged, slurmctld, one slurmd per node."""
        return ["munged", "slurmctld", *(f"slurmd-{n}" for n in self.nodes())]

    def nodes(self) -> list[str]:
        """Node names of the written slurm.conf (none before the first start)."""
        try:
            text = self.conf.read_text()
        except OSError:
            return []
        return re.findall(r"^NodeName=(\S+)", text, flags=re.MULTILINE)

    def gpu_devices(self) -> list[Path]:
        return [self.dev_dir / f"gpu{i}" for i in range(NODE_GPUS)]


def process_name(daemon: str) -> str:
    """The process name (``/proc/PID/comm``) of a daemon label: ``slurmd-NODE`` runs as ``slurmd``."""
    return "slurmd" if daemon.startswith("slurmd-") else daemon


@dataclass(frozen=True)
class Cluster:
    """A running local cluster: what a test needs to talk to it."""

    state_dir: Path
    conf: Path
    node: str  # the first node (this host's short name)
    env: dict[str, str]  # variables to add to the environment of every client call
    partitions: tuple[Partition, ...] = PARTITIONS
    gpus: int = NODE_GPUS  # per node
    nodes: tuple[str, ...] = ()  # every node, the first one first

    def environ(self) -> dict[str, str]:
        """The current process environment plus ``env``, for ``subprocess``."""
        return _client_environ(self.env)

    def run(self, *args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster and capture its output."""
        return _run(list(args), env=self.env, check=check, timeout=timeout)

    def sbatch(self, script: Path | str, *args: str, cwd: Path | str | None = None) -> int:
        """Submit ``script`` (extra ``args`` go before it) and return the job id."""
        proc = _run(["sbatch", "--parsable", *args, str(script)], env=self.env, cwd=cwd)
        return int(proc.stdout.strip().split(";")[0])


@dataclass(frozen=True)
class JobResult:
    """The final state of a job as ``scontrol show job`` reports it."""

    job_id: int | str  # a task of a job array: "ARRAYJOB_TASK"
    state: str
    exit_code: int
    signal: int
    reason: str
    fields: dict[str, str] = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == 0


# --- installation ------------------------------------------------------------------------------


def _package_installed(name: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "install ok installed"


def ensure_packages() -> None:
    """Install the Debian Slurm and munge packages unless they are already there."""
    missing = [p for p in PACKAGES if not _package_installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise LocalSlurmError(f"packages {', '.join(missing)} are missing and installing them needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        # A fresh image often has no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, check=False)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LocalSlurmError(f"{' '.join(cmd)} failed:\n{_tail_text(proc.stdout + proc.stderr)}")


def _bin(name: str) -> str:
    """Full path of a Slurm/munge program; daemons live in /usr/sbin, which a user PATH may lack."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise LocalSlurmError(f"{name} not found; is the {name} package installed?")
    return found


# --- configuration -----------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    # Slurm listens with SO_REUSEADDR on all addresses: test the same way, so a port left in
    # TIME_WAIT by a previous run counts as free and only a live listener counts as busy.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _pick_port(preferred: int, taken: Sequence[int] = ()) -> int:
    """``preferred`` if nobody listens there, else a free port the kernel hands out."""
    if preferred not in taken and _port_free(preferred):
        return preferred
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken and _port_free(port):
            return port
    raise LocalSlurmError("no free TCP port found for the Slurm daemons")


def short_hostname() -> str:
    """The name slurmctld and slurmd compare against SlurmctldHost and NodeName."""
    return socket.gethostname().split(".")[0]


def node_names(first: str, count: int) -> list[str]:
    """``count`` node names: this host's short name, then ``NAME-2``, ``NAME-3``..."""
    return [first] + [f"{first}-{i}" for i in range(2, count + 1)]


def render_slurm_conf(layout: Layout, nodes: Sequence[str], ctld_port: int, slurmd_ports: Sequence[int]) -> str:
    """The text of slurm.conf: loopback nodes, each slurmd on its own port of 127.0.0.1."""
    node = nodes[0]
    partitions = "\n".join(
        f"PartitionName={p.name} Nodes={','.join(nodes)} MaxTime={p.max_time} State=UP"
        + (" Default=YES" if p.default else "")
        for p in PARTITIONS
    )
    # NodeHostname is this host for every node: each slurmd is started with -N NAME and trusts the node line.
    node_lines = "\n".join(
        f"NodeName={name} NodeAddr=127.0.0.1 NodeHostname={node} Port={port} CPUs={NODE_CPUS} Boards=1 "
        f"SocketsPerBoard=1 CoresPerSocket={NODE_CPUS} ThreadsPerCore=1 RealMemory={NODE_MEMORY_MB} "
        f"Gres=gpu:{NODE_GPUS} Features={NODE_FEATURES} State=UNKNOWN"
        for name, port in zip(nodes, slurmd_ports, strict=True)
    )
    return f"""\
# Written by scaffold.testing.local_slurm; rewritten on every start.
ClusterName={CLUSTER_NAME}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_ports[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Both munge plugins read the socket from here; the system munged is never used. A requeued job waits
# cred_expire + 1 s before it may start again (default 120 s): short here, so requeue tests stay fast.
AuthInfo=socket={layout.munge_socket},cred_expire={CRED_EXPIRE_S}
StateSaveLocation={layout.state}
# %n: the node name, so that several slurmd daemons on this machine keep apart.
SlurmdSpoolDir={layout.spool}/%n
SlurmctldPidFile={layout.pid_file("slurmctld")}
SlurmdPidFile={layout.run_dir}/slurmd-%n.pid
SlurmctldLogFile={layout.log_file("slurmctld")}
SlurmdLogFile={layout.log_dir}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={layout.plugstack}
# No cgroups here: track processes by parentage and bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
# Reject at submission (and in --test-only) what a partition cannot run, as real sites do.
EnforcePartLimits=ALL
SchedulerType=sched/backfill
# Batch jobs are started by a background pass every batch_sched_delay s (default 3): 0 starts them in ~1 s.
# sched_interval: the main loop also runs every second (default 60 s), so a requeued job restarts as soon as
# it may.
SchedulerParameters=batch_sched_delay=0,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={DEF_MEM_PER_CPU_MB}
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
# Keep finished jobs visible to scontrol long enough for wait_for_job.
MinJobAge=600
KillWait=5
InactiveLimit=0
# Loopback only: nothing listens on other interfaces.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
{node_lines}
{partitions}
"""


def render_gres_conf(layout: Layout, nodes: Sequence[str]) -> str:
    """gres.conf naming one device file per fake GPU (counts without files drain the node); the nodes share
    the device files."""
    return "".join(f"NodeName={node} Name=gpu File={layout.dev_dir}/gpu[0-{NODE_GPUS - 1}]\n" for node in nodes)


def write_config(layout: Layout, nodes: Sequence[str], ctld_port: int, slurmd_ports: Sequence[int]) -> None:
    """Create the directory tree, munge key, fake GPU devices and Slurm config files."""
    if len(str(layout.munge_socket).encode()) > UNIX_PATH_MAX:
        # A long pytest tmp_path would otherwise fail later, in munged, with a cryptic message.
        raise LocalSlurmError(f"state directory {layout.root} is too long for a Unix socket path: use a shorter one")
    for d in (layout.etc, layout.state, layout.log_dir, layout.run_dir, layout.dev_dir):
        d.mkdir(parents=True, exist_ok=True)
    for node in nodes:
        (layout.spool / node).mkdir(parents=True, exist_ok=True)
    # munged insists that its socket directory is searchable by all and writable only by its owner,
    # and that the key is readable only by its owner.
    layout.munge_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.root, 0o755)
    os.chmod(layout.munge_dir, 0o755)
    if not layout.munge_key.exists():
        _run([_bin("mungekey"), "--create", f"--keyfile={layout.munge_key}"], env={})
    os.chmod(layout.munge_key, 0o600)
    for dev in layout.gpu_devices():
        if not dev.exists():
            # /dev/null's major/minor: harmless to open, and slurmd only needs a character device.
            os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))
    layout.plugstack.write_text("")
    layout.gres_conf.write_text(render_gres_conf(layout, nodes))
    layout.conf.write_text(render_slurm_conf(layout, nodes, ctld_port, slurmd_ports))


# --- processes ---------------------------------------------------------------------------------


def _client_environ(extra: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


def _run(
    cmd: list[str],
    env: Mapping[str, str],
    check: bool = True,
    timeout: float = 30.0,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, env=_client_environ(env), capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise LocalSlurmError(f"{' '.join(cmd)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, name: str) -> bool:
    """Whether ``pid`` is a live process called ``name`` (guards against recycled pids)."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    # A zombie is dead for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return comm == name


def _daemon_pids(layout: Layout) -> dict[str, int | None]:
    """Daemon label -> live pid (None when not running), for every daemon of the configured cluster and any
    slurmd whose pid file is left from an earlier configuration."""
    labels = layout.daemons()
    labels += sorted(p.stem for p in layout.run_dir.glob("slurmd-*.pid") if p.stem not in labels)
    pids: dict[str, int | None] = {}
    for daemon in labels:
        pid = _read_pid(layout.pid_file(daemon))
        pids[daemon] = pid if pid is not None and _alive(pid, process_name(daemon)) else None
    return pids


def _tail_text(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _log_tails(layout: Layout, lines: int = 20) -> str:
    parts = []
    for daemon in layout.daemons():
        for path in (layout.log_file(daemon), layout.log_dir / f"{daemon}.stderr"):
            if path.exists() and path.stat().st_size:
                parts.append(f"--- {path} (last {lines} lines)\n{_tail_text(path.read_text(errors='replace'), lines)}")
    return "\n".join(parts) or "(no daemon logs)"


def _launch(layout: Layout, daemon: str, cmd: list[str], timeout: float) -> int:
    """Run a self-daemonising program and return the pid it writes to its pid file."""
    pid_file = layout.pid_file(daemon)
    pid_file.unlink(missing_ok=True)
    # Errors before a daemon opens its log file go to stderr: keep them in a file (not a pipe,
    # which the forked daemon would hold open).
    with open(layout.log_dir / f"{daemon}.stderr", "w") as err:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=subprocess.STDOUT,
            env=_client_environ({"SLURM_CONF": str(layout.conf)}),
            cwd=layout.root,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        raise LocalSlurmError(f"{daemon} failed to start (exit {proc.returncode})\n{_log_tails(layout)}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _read_pid(pid_file)
        if pid is not None and _alive(pid, process_name(daemon)):
            return pid
        time.sleep(0.05)
    raise LocalSlurmError(f"{daemon} wrote no live pid to {pid_file} within {timeout:.0f} s\n{_log_tails(layout)}")


def _node_state(layout: Layout, node: str) -> tuple[str, str]:
    """(state, reason) of the node as sinfo reports it; ('', error) when the controller does not answer."""
    proc = _run(
        ["sinfo", "--noheader", "--Node", f"--nodes={node}", "--format=%T|%E"],
        env={"SLURM_CONF": str(layout.conf)},
        check=False,
        timeout=10,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return "", (proc.stderr or proc.stdout).strip()
    state, _, reason = proc.stdout.strip().splitlines()[0].partition("|")
    reason = reason.strip()
    return state.strip(), "" if reason == "none" else reason


def _wait_idle(layout: Layout, nodes: Sequence[str], timeout: float) -> None:
    """Wait until every slurmd has registered and its node can take jobs; fail fast on a drained node."""
    deadline = time.monotonic() + timeout
    state, reason, node = "", "", nodes[0]
    waiting = list(nodes)
    while time.monotonic() < deadline:
        node = waiting[0]
        state, reason = _node_state(layout, node)
        if state in ("idle", "mixed", "allocated"):
            waiting.pop(0)
            if not waiting:
                return
            continue
        if state.startswith(("drain", "inval")):
            # A mismatch between slurm.conf, gres.conf and what slurmd reports: waiting will not fix it.
            raise LocalSlurmError(f"node {node} is {state}: {reason}\n{_log_tails(layout)}")
        for daemon, pid in _daemon_pids(layout).items():
            if pid is None:
                raise LocalSlurmError(f"{daemon} died during start-up\n{_log_tails(layout)}")
        time.sleep(0.1)
    raise LocalSlurmError(
        f"node {node} is not idle after {timeout:.0f} s (state {state or 'unknown'!r}"
        f"{': ' + reason if reason else ''})\n{_log_tails(layout)}"
    )


# --- public API --------------------------------------------------------------------------------


def _cluster(layout: Layout, nodes: Sequence[str]) -> Cluster:
    return Cluster(
        state_dir=layout.root,
        conf=layout.conf,
        node=nodes[0],
        env={"SLURM_CONF": str(layout.conf)},
        nodes=tuple(nodes),
    )


def is_running(state_dir: Path | str = DEFAULT_DIR) -> bool:
    """Whether every daemon of the cluster in ``state_dir`` (munged, slurmctld, a slurmd per node) is alive."""
    layout = Layout(Path(state_dir))
    return bool(layout.nodes()) and all(pid is not None for pid in _daemon_pids(layout).values())


def start(state_dir: Path | str = DEFAULT_DIR, timeout: float = 30.0, nodes: int = 1) -> Cluster:
    """Install if needed, configure and start the cluster in ``state_dir`` with ``nodes`` nodes; wait until
    every node is idle.

    A cluster already running there with that many nodes and healthy is reused; any other is stopped first.
    """
    if nodes < 1:
        raise ValueError("a cluster needs at least one node")
    layout = Layout(Path(state_dir).absolute())
    names = node_names(short_hostname(), nodes)
    ready = ("idle", "mixed", "allocated")
    if is_running(layout.root) and layout.nodes() == names and all(_node_state(layout, n)[0] in ready for n in names):
        return _cluster(layout, names)
    stop(layout.root)
    ensure_packages()
    ctld_port = _pick_port(DEFAULT_CTLD_PORT)
    slurmd_ports: list[int] = []
    for i in range(nodes):
        slurmd_ports.append(_pick_port(DEFAULT_SLURMD_PORT + i, taken=(ctld_port, *slurmd_ports)))
    write_config(layout, names, ctld_port, slurmd_ports)
    for daemon in layout.daemons():
        # Daemons append to their logs: start afresh so that error tails show this start only.
        layout.log_file(daemon).unlink(missing_ok=True)
    try:
        _launch(
            layout,
            "munged",
            [
                _bin("munged"),
                f"--socket={layout.munge_socket}",
                f"--key-file={layout.munge_key}",
                f"--pid-file={layout.pid_file('munged')}",
                f"--log-file={layout.log_file('munged')}",
                f"--seed-file={layout.munge_dir / 'munged.seed'}",
            ],
            timeout,
        )
        conf = f"-f{layout.conf}"
        # -c: start with an empty queue, so no job of an earlier session runs again (job ids keep counting).
        _launch(layout, "slurmctld", [_bin("slurmctld"), conf, "-c"], timeout)
        for name in names:
            _launch(layout, f"slurmd-{name}", [_bin("slurmd"), conf, "-N", name], timeout)
        _wait_idle(layout, names, timeout)
    except BaseException:
        stop(layout.root)
        raise
    return _cluster(layout, names)


def _cancel_all_jobs(layout: Layout, timeout: float) -> None:
    """Cancel every job so that no slurmstepd outlives the daemons (best effort)."""
    env = {"SLURM_CONF": str(layout.conf)}
    listing = _run(["squeue", "--noheader", "--format=%i"], env=env, check=False, timeout=10)
    job_ids = listing.stdout.split() if listing.returncode == 0 else []
    if not job_ids:
        return
    _run(["scancel", *job_ids], env=env, check=False, timeout=10)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = _run(["squeue", "--noheader", "--format=%i"], env=env, check=False, timeout=10)
        if listing.returncode != 0 or not listing.stdout.strip():
            return
        time.sleep(0.2)


def stop(state_dir: Path | str = DEFAULT_DIR, timeout: float = 15.0) -> None:
    """Cancel running jobs, then stop the daemons recorded in ``state_dir``'s pid files and wait for them."""
    layout = Layout(Path(state_dir).absolute())
    pids = _daemon_pids(layout)
    if pids["slurmctld"] is not None and pids["munged"] is not None:
        _cancel_all_jobs(layout, timeout)
    for daemon in reversed(list(pids)):
        pid, name = pids[daemon], process_name(daemon)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid, name) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid, name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                while _alive(pid, name):
                    time.sleep(0.05)
        layout.pid_file(daemon).unlink(missing_ok=True)


def parse_scontrol_record(text: str) -> dict[str, str]:
    """Parse one ``scontrol -o show`` line into a dict; values may contain spaces."""
    fields: dict[str, str] = {}
    key = None
    for token in text.strip().split(" "):
        name, sep, value = token.partition("=")
        if sep and re.fullmatch(r"[A-Za-z][\w/:.]*", name):
            key = name
            fields[key] = value
        elif key is not None:
            fields[key] += " " + token
    return fields


def job_info(job_id: int | str, env: Mapping[str, str]) -> dict[str, str] | None:
    """``scontrol show job`` fields, or None once the controller has forgotten the job."""
    proc = _run(["scontrol", "--oneliner", "show", "job", str(job_id)], env=env, check=False, timeout=10)
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return None
        raise LocalSlurmError(f"scontrol show job {job_id} failed: {proc.stderr.strip()}")
    return parse_scontrol_record(proc.stdout.splitlines()[0])


def wait_for_job(job_id: int | str, env: Mapping[str, str], timeout: float = 60.0, poll: float = 0.2) -> JobResult:
    """Poll the controller until ``job_id`` reaches a final state; return that state and its exit code.

    ``sbatch --wait`` is not used: it polls with growing intervals and returns seconds late.
    """
    deadline = time.monotonic() + timeout
    while True:
        info = job_info(job_id, env)
        if info is None:
            raise LocalSlurmError(f"job {job_id} is unknown to the controller (purged, or never submitted)")
        state = info.get("JobState", "")
        if state in TERMINAL_STATES:
            code, _, sig = info.get("ExitCode", "0:0").partition(":")
            return JobResult(
                job_id=job_id,
                state=state,
                exit_code=int(code or 0),
                signal=int(sig or 0),
                reason=info.get("Reason", ""),
                fields=info,
            )
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} still {state} after {timeout:.0f} s")
        time.sleep(poll)


# --- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m scaffold.testing.local_slurm``."""
    parser = argparse.ArgumentParser(
        prog="python -m scaffold.testing.local_slurm", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("action", choices=("start", "stop", "status", "env"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"state directory (default {DEFAULT_DIR})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for start or stop")
    parser.add_argument("--nodes", type=int, default=1, help="nodes to start (each a slurmd on this machine)")
    args = parser.parse_args(argv)
    layout = Layout(args.dir.absolute())
    try:
        if args.action == "start":
            t0 = time.monotonic()
            cluster = start(layout.root, timeout=args.timeout, nodes=args.nodes)
            parts = ", ".join(
                f"{p.name} (max {p.max_time}{', default' if p.default else ''})" for p in cluster.partitions
            )
            print(
                f"local Slurm up in {time.monotonic() - t0:.1f} s: node(s) {', '.join(cluster.nodes)} "
                f"({NODE_CPUS} CPUs, {NODE_GPUS} fake GPUs each), partitions {parts}"
            )
            print(f"export SLURM_CONF={cluster.conf}")
        elif args.action == "stop":
            stop(layout.root, timeout=args.timeout)
            print(f"local Slurm in {layout.root} stopped")
        elif args.action == "status":
            pids = _daemon_pids(layout)
            for daemon, pid in pids.items():
                print(f"{daemon}: {'running, pid ' + str(pid) if pid else 'not running'}")
            if layout.nodes() and all(pids.values()):
                for node in layout.nodes():
                    state, reason = _node_state(layout, node)
                    print(f"node {node}: {state or 'no answer'}{' (' + reason + ')' if reason else ''}")
                return 0
            return 1
        else:
            print(f"export SLURM_CONF={layout.conf}")
    except LocalSlurmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
