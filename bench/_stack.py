"""Plumbing shared by the benchmarks: free ports, child processes in their own groups, CPU accounting, the
benchmark's own environment, database and Redis, and its section of ``bench/RESULTS.md``.

Every child is started in a process group of its own, so stopping it also reaches what it forked (gunicorn's
and qcluster's workers) and a Ctrl-C in the terminal reaches only the benchmark, which then stops the children
in order.  CPU time is read from ``/proc`` so a benchmark can say where the machine's cycles went.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE_PY = BASE_DIR / "manage.py"
RESULTS_FILE = BASE_DIR / "bench" / "RESULTS.md"
STOP_TIMEOUT = 20.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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

    def spawn(self, name: str, argv: list[str], *, quiet: bool = True, log: Path | None = None) -> Child:
        """Start ``python argv…`` from the project directory in a new process group."""
        return self.program(name, [sys.executable, *argv], quiet=quiet, log=log)

    def program(self, name: str, argv: list[str], *, quiet: bool = True, log: Path | None = None) -> Child:
        """Start any program from the project directory in a new process group.

        With ``log``, its stdout and stderr are appended to that file (a restarted child appends to the same one);
        otherwise stdout is dropped when ``quiet`` and stderr goes to the benchmark's terminal.
        """
        if log is not None:
            with log.open("ab") as output:
                process = subprocess.Popen(
                    argv, cwd=BASE_DIR, env=self.env, process_group=0, stdout=output, stderr=subprocess.STDOUT
                )
        else:
            output = subprocess.DEVNULL if quiet else None
            process = subprocess.Popen(argv, cwd=BASE_DIR, env=self.env, process_group=0, stdout=output)
        child = Child(name, process)
        self.children.append(child)
        return child

    def manage(self, name: str, *args: str, quiet: bool = True, log: Path | None = None) -> Child:
        return self.spawn(name, [str(MANAGE_PY), *args], quiet=quiet, log=log)

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

    def kill(self, child: Child) -> None:
        """SIGKILL the child's whole process group at once (a crash: nothing gets to clean up), and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.process.wait()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child)


@dataclass(frozen=True)
class ProcessSample:
    pgid: int
    name: str
    cpu_seconds: float
    ppid: int = 0


def sample_processes() -> dict[int, ProcessSample]:
    """Every live process's group, command name and own CPU (user + system) so far, in one pass over /proc.

    Only a process's own CPU is counted, never what its reaped children used: a qcluster recycles its workers
    (every 500 tasks), and a dead worker's lifetime CPU landing in its parent at once would skew a short phase.
    """
    samples = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, tail = text.rpartition(")")
        name = head.partition(" (")[2]
        fields = tail.split()
        # After the name: state, ppid (index 1), pgrp (index 2), …, utime and stime (indices 11 and 12).
        samples[int(entry.name)] = ProcessSample(
            int(fields[2]), name, (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, int(fields[1])
        )
    return samples


class CpuMeter:
    """CPU seconds each part of the stack spends between start() and stop(), sampled in the background.

    ``parts`` maps a name to a predicate over (pid, sample).  A process that exits between two samples loses
    at most one interval of its CPU; one that starts counts from zero.
    """

    INTERVAL = 0.5

    def __init__(self, parts: dict[str, Callable[[int, ProcessSample], bool]]) -> None:
        self.parts = parts
        self._first: dict[int, float] = {}
        self._last: dict[int, ProcessSample] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        for pid, sample in sample_processes().items():
            if any(belongs(pid, sample) for belongs in self.parts.values()):
                self._last[pid] = sample

    def start(self) -> None:
        self._last = {}
        self._sample()
        self._first = {pid: sample.cpu_seconds for pid, sample in self._last.items()}
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        used = dict.fromkeys(self.parts, 0.0)
        for pid, sample in self._last.items():
            spent = sample.cpu_seconds - self._first.get(pid, 0.0)
            for name, belongs in self.parts.items():
                if belongs(pid, sample):
                    used[name] += spent
                    break
        return used


def backend_database(pid: int, cache: dict[int, str]) -> str:
    """The database a postgres backend serves, from its title ``postgres: [cluster:] user database host state``."""
    if pid not in cache:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            title = []
        if title[:1] == ["postgres:"]:
            words = [word for word in title if not word.endswith(":")]
            cache[pid] = words[1] if len(words) > 1 else ""
        else:
            cache[pid] = ""
    return cache[pid]


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


# --- Environment, database, Redis, results -------------------------------------------------------------------------


def stack_environment(
    database_url: str, redis_url: str, sandbox_port: int, metrics_dir: str, **extra: str
) -> dict[str, str]:
    """One environment for this process and every child: the same SECRET_KEY and encryption key (AppSecrets and
    cached access_tokens are encrypted with it), production settings (DEBUG off) served over plain HTTP on
    127.0.0.1 (no redirect to HTTPS), the sandbox as WeChat, plus a benchmark's ``extra``."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="wxnotify.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        WXNOTIFY_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        WXNOTIFY_SSL_REDIRECT="0",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        WECHAT_API_BASE=f"http://127.0.0.1:{sandbox_port}",
        WXNOTIFY_LOG_LEVEL="WARNING",
        # Our own metrics directory: the shared var/prometheus belongs to whatever else runs on this host.
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def recreate_database(database_url: str) -> str:
    import dj_database_url
    import psycopg

    config = dj_database_url.parse(database_url)
    name = config["NAME"]
    if not re.fullmatch(r"bench\w*", name or ""):
        raise SystemExit(f"refusing to drop database {name!r}: the benchmark's database name must start with 'bench'")
    with psycopg.connect(
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
        user=config["USER"] or "postgres",
        password=config["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return name


def flush_redis(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def verdict(ok: bool) -> str:
    """A target's cell in a results table."""
    return "met" if ok else "**MISSED**"


def fresh_services(database_url: str, redis_url: str, env: dict[str, str]) -> str:
    """An empty benchmark database (recreated) and Redis database (flushed), Django set up in this process with
    ``env`` and migrated; returns the database's name."""
    database = recreate_database(database_url)
    flush_redis(redis_url)
    setup_django(env)
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    return database


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=BASE_DIR, check=True, capture_output=True, text=True).stdout.strip()


def this_tree() -> str:
    head = git("rev-parse", "--short", "HEAD")
    return f"{head} + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else head


def export_commit(rev: str, into: Path) -> str:
    """Extract commit ``rev`` into ``into`` (no .git, the repository is not touched); return its short hash."""
    short = git("rev-parse", "--short", f"{rev}^{{commit}}")
    archive = subprocess.run(["git", "archive", "--format=tar", short], cwd=BASE_DIR, check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return short


def services_urls(default_database_url: str, default_redis_url: str) -> tuple[str, str]:
    """The PostgreSQL and Redis a services-only benchmark runs on: DATABASE_URL and REDIS_URL, else its defaults."""
    database_url = os.environ.get("DATABASE_URL") or default_database_url
    redis_url = os.environ.get("REDIS_URL") or default_redis_url
    if not database_url.startswith("postgres") or not redis_url.startswith("redis"):
        raise SystemExit("this benchmark runs on PostgreSQL and Redis: DATABASE_URL and REDIS_URL must point there")
    return database_url, redis_url


def command_line() -> str:
    """This run's command as RESULTS.md shows it: the database and Redis it was pointed at, then the script and its
    arguments, so the section can be run again as written."""
    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    shown = " ".join(f"{name}={os.environ[name]}" for name in ("DATABASE_URL", "REDIS_URL") if os.environ.get(name))
    return f"{shown} {command}".strip()


def unwind_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, through the benchmark's cleanup of every child process it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def write_results_section(title: str, text: str) -> None:
    """Replace the section starting with ``title`` in RESULTS.md (other benchmarks' sections stay as they are)."""
    current = RESULTS_FILE.read_text(encoding="utf-8") if RESULTS_FILE.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(title)}\b.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _match: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    RESULTS_FILE.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")


# --- Servers of the benchmark's own (for runs that restart them) ---------------------------------------------------


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian's layout: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parent.parent.name or 0))
    if not found:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql): no /usr/lib/postgresql/*/bin")
    return found[-1].parent


class ThrowawayPostgres:
    """A PostgreSQL cluster of the benchmark's own under ``root`` (trust auth, fsync off, ``host``:``port``).

    For runs that stop and restart the database: the machine's shared server must never be restarted.  The
    binaries run as the ``postgres`` user (``runuser``), so the benchmark must run as root.  ``stop()`` and
    ``start()`` may be called any number of times; ``destroy()`` stops the cluster if it runs and removes it.
    On another host than the loopback (bench/cluster.py's network namespaces), ``wrapper`` is the command that runs
    a program on that host and ``clients`` the network whose connections are trusted.
    """

    def __init__(
        self,
        root: Path,
        port: int,
        *,
        host: str = "127.0.0.1",
        wrapper: tuple[str, ...] = (),
        clients: str = "127.0.0.1/32",
    ) -> None:
        self.root = root
        self.port = port
        self.host = host
        self.wrapper = wrapper
        self.clients = clients
        self.data = root / "data"
        self.log = root / "postgresql.log"
        self.bin = postgres_bin_dir()

    def _run(self, program: str, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [*self.wrapper, "runuser", "-u", "postgres", "--", str(self.bin / program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed: {(result.stderr or result.stdout).strip()[-500:]}")

    def init(self) -> None:
        if os.geteuid() != 0:
            raise SystemExit("a throwaway PostgreSQL needs root (its binaries run as the postgres user via runuser)")
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.clients} trust\n")

    def start(self) -> None:
        options = (
            f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories={self.root} -c fsync=off "
            "-c max_connections=300"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects every client and shuts down cleanly; ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return self.postmaster_pid() is not None

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def url(self, database: str) -> str:
        return f"postgres://postgres@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"could not stop the throwaway PostgreSQL: {exc}", file=sys.stderr)
                pid = self.postmaster_pid()
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def redis_server_argv(port: int, directory: Path, host: str = "127.0.0.1") -> list[str]:
    """A Redis of the benchmark's own on ``host``:``port``, without persistence: a restart empties it, as a
    Redis without AOF/RDB that crashes or is replaced would."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        host,
        # Bound to the run's own address only; no password, as the machine's own Redis.
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--daemonize",
        "no",
    ]
