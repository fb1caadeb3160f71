"""A real, private SLURM cluster on this machine for the launch tests.

``SlurmCluster(base).up()`` starts munged (own key, own socket), slurmctld and two slurmd that
emulate the nodes n1 and n2 (``slurmd -N``), all configured under ``base`` with free ports, and
points ``SLURM_CONF`` at it; ``down()`` cancels every job, shuts the daemons down, removes the
``/etc/hosts`` line it added and deletes ``base``. Nothing is left behind, and a bring-up after a
crashed session first stops the daemons that session left (found by the marker variable in their
environment, never by name alone).

Settings that matter (measured on a 2-core Debian host, see the project's SLURM notes):
``cred_expire=10`` so a requeued job may start again after seconds rather than two minutes;
``TmpFS`` per node so the emulated nodes do not share a /tmp; ``EnforcePartLimits=ALL`` so an
impossible request fails at submit instead of pending forever; node names resolve through
/etc/hosts so ranks can build ``MASTER_ADDR`` from ``SLURM_JOB_NODELIST``. Each node declares two
schedulable GPUs (a count only: no device files), so scripts that ask for GPUs are accepted.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PREFIX = "mmdist-slurm-"
"""Base folders made by SlurmCluster start with this (in the system's temp folder)."""
MARKER = "MMDIST_TEST_SLURM_BASE"
"""Environment variable set on every daemon we start: its value is the cluster's base folder."""
NODES = ("n1", "n2")
CPUS_PER_NODE = 2
GPUS_PER_NODE = 2
HOSTS_FILE = Path("/etc/hosts")
REPO = Path(__file__).resolve().parents[2]
REQUIRED = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "scancel",
            "sinfo")


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here (None when it can)."""
    if os.geteuid() != 0:
        return "the test SLURM cluster needs root (daemons run as root, /etc/hosts gets n1 n2)"
    missing = [name for name in REQUIRED if shutil.which(name) is None
               and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"SLURM/munge binaries missing: {', '.join(missing)} (make system-deps installs them)"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (state Z, reaped late by PID 1 here) counts as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


def _cluster_processes() -> dict[int, str]:
    """pid -> base folder of every live process of some SlurmCluster: the daemons (marker
    variable) and the job steps they ran (SLURM_CONF inside a base folder named like ours)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        base = None
        for item in environ:
            name, _, value = item.decode(errors="replace").partition("=")
            if name == MARKER:
                base = value
                break
            if name == "SLURM_CONF" and Path(value).parent.parent.name.startswith(PREFIX):
                base = str(Path(value).parent.parent)
        if base is not None and int(entry.name) != os.getpid() and _pid_alive(int(entry.name)):
            found[int(entry.name)] = base
    return found


def _kill(pids, grace_s: float = 1.0) -> None:
    """TERM, wait up to ``grace_s``, then KILL (slurmstepd ignores TERM)."""
    pids = [p for p in pids if _pid_alive(p)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.1)


def _owner_alive(base: str) -> bool:
    try:
        return _pid_alive(int((Path(base) / "owner.pid").read_text()))
    except (OSError, ValueError):
        return False


def clean_orphans() -> list[str]:
    """Stop the daemons and job processes of clusters whose owner died (a crashed test session),
    delete their folders and /etc/hosts lines; live clusters are left alone. Returns the bases."""
    orphans: dict[str, list[int]] = {}
    for pid, base in _cluster_processes().items():
        if not _owner_alive(base):
            orphans.setdefault(base, []).append(pid)
    _kill([pid for pids in orphans.values() for pid in pids])
    for base in orphans:
        if Path(base).name.startswith(PREFIX):
            shutil.rmtree(base, ignore_errors=True)
    _remove_hosts_lines(stale_only=True)
    return sorted(orphans)


def _hosts_tag(base: Path) -> str:
    return f"# mmdist test cluster {base}"


def _remove_hosts_lines(base: Path | None = None, stale_only: bool = False) -> None:
    """Drop our /etc/hosts lines: this cluster's, or (stale_only) those of clusters now gone."""
    try:
        lines = HOSTS_FILE.read_text().splitlines(keepends=True)
    except OSError:
        return
    keep = []
    for line in lines:
        if "# mmdist test cluster " in line:
            owner = Path(line.split("# mmdist test cluster ", 1)[1].strip())
            if base is not None and owner == base:
                continue
            if stale_only and not owner.exists():
                continue
        keep.append(line)
    if keep != lines:
        # Rewrite in place (not rename): /etc/hosts may be a bind mount.
        HOSTS_FILE.write_text("".join(keep))


class SlurmCluster:
    """munged + slurmctld + slurmd n1, n2 under one private folder."""

    def __init__(self, base: str | Path | None = None):
        self.base = Path(base or tempfile.mkdtemp(prefix=PREFIX)).resolve()
        self.conf = self.base / "etc" / "slurm.conf"
        self.munge_socket = self.base / "munge" / "munge.socket"
        self.env: dict[str, str] = {}
        self._old_conf: str | None = None

    # ---- configuration -----------------------------------------------------------------------
    def _write_config(self) -> None:
        base, host = self.base, socket.gethostname().split(".")[0]
        for sub in ("etc", "state", "run", "log", "munge", "key", *(f"spool/{n}" for n in NODES),
                    *(f"tmp/{n}" for n in NODES)):
            (base / sub).mkdir(parents=True, exist_ok=True)
        # munged insists that every folder above its socket is executable by all; mkdtemp is 0700.
        for folder in [base, base / "munge"]:
            folder.chmod(0o755)
        (base / "key").chmod(0o700)
        key = base / "key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available_mb = int(meminfo["MemAvailable"].split()[0]) // 1024
        memory = max(256, int(available_mb * 0.8) // len(NODES))
        ctld_port, *node_ports = _free_ports(1 + len(NODES))
        nodes = "\n".join(
            f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} "
            f"CPUs={CPUS_PER_NODE} RealMemory={memory} Gres=gpu:{GPUS_PER_NODE}"
            for name, port in zip(NODES, node_ports))
        self.conf.write_text(f"""\
ClusterName=mmdisttest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool/%n
TmpFS={base}/tmp/%n
SlurmctldPidFile={base}/run/slurmctld.pid
SlurmdPidFile={base}/run/slurmd-%n.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
MpiDefault=none
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
SlurmdParameters=config_overrides
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        # slurmd counts a GPU per device file; plain files stand in for them (nothing binds them).
        (base / "dev").mkdir(exist_ok=True)
        for index in range(GPUS_PER_NODE):
            (base / "dev" / f"gpu{index}").touch()
        (base / "etc" / "gres.conf").write_text("".join(
            f"NodeName={name} Name=gpu File={base}/dev/gpu[0-{GPUS_PER_NODE - 1}]\n" for name in NODES))

    # ---- life cycle --------------------------------------------------------------------------
    def _daemon_env(self) -> dict[str, str]:
        env = dict(os.environ, SLURM_CONF=str(self.conf))
        env[MARKER] = str(self.base)
        return env

    def _run(self, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self._daemon_env(), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def up(self, timeout_s: float = 60) -> "SlurmCluster":
        clean_orphans()
        self._write_config()
        (self.base / "owner.pid").write_text(str(os.getpid()))
        self._run(_binary("munged"), f"--socket={self.munge_socket}",
                  f"--key-file={self.base / 'key' / 'munge.key'}",
                  f"--pid-file={self.base / 'run' / 'munged.pid'}",
                  f"--log-file={self.base / 'log' / 'munged.log'}",
                  f"--seed-file={self.base / 'run' / 'munged.seed'}", "--origin=127.0.0.1")
        self._run(_binary("slurmctld"))
        for name in NODES:
            self._run(_binary("slurmd"), "-N", name)
        self._add_hosts_line()
        self.env = {"SLURM_CONF": str(self.conf)}
        self._old_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(self.conf)
        deadline = time.monotonic() + timeout_s
        states = ""
        while time.monotonic() < deadline:
            done = self._run("sinfo", "-h", "-N", "-o", "%N %T", check=False)
            states = done.stdout.strip()
            if done.returncode == 0 and states.count("idle") == len(NODES):
                return self
            time.sleep(0.5)
        logs = self.logs()
        self.down()
        raise RuntimeError(f"test SLURM cluster did not come up within {timeout_s}s "
                           f"(node states: {states!r})\n{logs}")

    def _add_hosts_line(self) -> None:
        line = f"127.0.0.1 {' '.join(NODES)} {_hosts_tag(self.base)}\n"
        text = HOSTS_FILE.read_text()
        if not text.endswith("\n"):
            text += "\n"
        HOSTS_FILE.write_text(text + line)

    def logs(self) -> str:
        out = []
        for path in sorted((self.base / "log").glob("*.log")):
            out.append(f"== {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(out)

    def queue(self) -> list[str]:
        """Job ids in the queue (pending, running, completing)."""
        done = self._run("squeue", "-h", "-o", "%i", check=False)
        return done.stdout.split()

    def down(self, timeout_s: float = 30) -> None:
        """Cancel every job, stop every daemon and job step we started, remove what we wrote."""
        try:
            if self.conf.exists():
                self._run("scancel", "--user=root", check=False)
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline and self.queue():
                    time.sleep(0.5)
                self._run("scontrol", "shutdown", check=False)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and self._own_daemons(only_slurm=True):
                    time.sleep(0.2)
        finally:
            _kill(list(self._own_daemons()))
            _remove_hosts_lines(self.base)
            if self._old_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = self._old_conf
            shutil.rmtree(self.base, ignore_errors=True)

    def _own_daemons(self, only_slurm: bool = False) -> list[int]:
        pids = [pid for pid, base in _cluster_processes().items() if base == str(self.base)]
        if only_slurm:
            def comm(pid):
                try:
                    return Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    return ""
            pids = [pid for pid in pids if comm(pid).startswith("slurm")]
        return pids


# ---- waiting on jobs, always with a timeout (a job that dies unreported must fail a test) ----

def job_state(job_id: str) -> str:
    """SLURM state of a job ('' once it has left the queue; there is no accounting here)."""
    done = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True,
                          text=True, timeout=30)
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 1.0):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
