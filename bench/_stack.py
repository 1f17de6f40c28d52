"""Process plumbing shared by the benchmarks: free ports, child processes in their own groups, CPU accounting.

Every child is started in a process group of its own, so stopping it also reaches what it forked (gunicorn's
and qcluster's workers) and a Ctrl-C in the terminal reaches only the benchmark, which then stops the children
in order.  CPU time is read from ``/proc`` so a benchmark can say where the machine's cycles went.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE_PY = BASE_DIR / "manage.py"
STOP_TIMEOUT = 20.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


@dataclass
class Child:
    name: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Stack:
    """The children of one benchmark run; stop() is safe to call more than once."""

    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], *, quiet: bool = True) -> Child:
        """Start ``python argv…`` from the project directory in a new process group."""
        output = subprocess.DEVNULL if quiet else None
        process = subprocess.Popen([sys.executable, *argv], cwd=BASE_DIR, env=self.env, process_group=0, stdout=output)
        child = Child(name, process)
        self.children.append(child)
        return child

    def manage(self, name: str, *args: str, quiet: bool = True) -> Child:
        return self.spawn(name, [str(MANAGE_PY), *args], quiet=quiet)

    def check_alive(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise RuntimeError(f"{child.name} (pid {child.pid}) exited with code {code}")

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.2)

    def stop(self, child: Child) -> None:
        """SIGTERM, wait, then SIGKILL whatever is left in the child's group."""
        if child.process.poll() is None:
            child.process.terminate()
        try:
            child.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"{child.name} did not stop within {STOP_TIMEOUT:.0f} s; killing its group", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.process.wait()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child)


def process_group_pids(pgid: int) -> list[int]:
    """Pids of every live process in a group (a gunicorn master and its workers, a qcluster and its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None and int(stat[4]) == pgid:
            pids.append(int(entry.name))
    return pids


def pids_by_command(name: str) -> list[int]:
    """Pids whose command name is ``name`` (e.g. ``postgres``), whoever started them."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None and stat[1] == name:
                pids.append(int(entry.name))
    return pids


def _read_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat split into fields, the command name (which may hold spaces) as field 1."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, tail = text.rpartition(")")
    pid_text, _, name = head.partition(" (")
    return [pid_text, name, *tail.split()]


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds used so far by each live pid (children already reaped count in their parent)."""
    used = {}
    for pid in pids:
        stat = _read_stat(pid)
        if stat is not None:
            # Fields 13-16 (0-based, name at 1): utime, stime, cutime, cstime in clock ticks.
            used[pid] = sum(int(value) for value in stat[13:17]) / _CLOCK_TICKS
    return used


def worker_pids(master_pid: int) -> list[int]:
    """Direct children of a process (gunicorn's workers)."""
    try:
        text = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set since the process started) in KiB."""
    found = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found
