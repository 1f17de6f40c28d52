"""The lock files pin every dependency with hashes, make installs only from them, and the audit fails on a known
vulnerability but only reports an advisory service it cannot reach.

The audit runs the real pip-audit against a stand-in for the OSV API on 127.0.0.1, so no test needs the network.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import AbstractContextManager
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.servers import QuietHandler, serving

BASE_DIR = Path(__file__).resolve().parents[2]
AUDIT = BASE_DIR / "tools" / "audit_dependencies.py"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a requirements or lock file."""
    text = path.read_text(encoding="utf-8")
    return {canonical(name): version for name, version in PIN.findall(text)}


def lock_entries(path: Path) -> dict[str, list[str]]:
    """``name==version -> hashes`` of a pip-compile lock file."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            current = f"{canonical(match.group(1))}=={match.group(2)}"
            entries[current] = []
        elif current and line.strip().startswith("--hash=sha256:"):
            entries[current].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif not line.startswith(" "):
            current = None
    return entries


@pytest.mark.parametrize(
    ("requirements", "lock"),
    [("requirements.txt", "requirements.lock"), ("requirements-dev.txt", "requirements-dev.lock")],
)
def test_every_pin_of_the_requirements_is_in_its_lock(requirements, lock):
    wanted = pins(BASE_DIR / requirements)
    if requirements == "requirements-dev.txt":
        wanted |= pins(BASE_DIR / "requirements.txt")
    locked = pins(BASE_DIR / lock)

    stale = {name: (version, locked.get(name)) for name, version in wanted.items() if locked.get(name) != version}
    assert stale == {}, f"{lock} is out of date with {requirements}: run `make lock` ({{name: (wanted, locked)}})"


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-dev.lock"])
def test_every_locked_package_is_pinned_with_hashes(lock):
    entries = lock_entries(BASE_DIR / lock)

    assert len(entries) > 20  # the transitive dependencies are there too
    assert [entry for entry, hashes in entries.items() if not hashes] == []
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for hashes in entries.values() for digest in hashes)
    text = (BASE_DIR / lock).read_text(encoding="utf-8")
    assert "--index-url" not in text and "--find-links" not in text  # no machine's mirror is baked in


def test_the_dev_lock_pins_what_production_runs_at_the_same_versions_and_pip_itself():
    runtime, dev = pins(BASE_DIR / "requirements.lock"), pins(BASE_DIR / "requirements-dev.lock")

    assert {name: dev.get(name) for name in runtime} == runtime
    assert {"pip", "setuptools", "django-axes"} <= dev.keys()


def test_make_installs_only_from_the_lock_with_hashes():
    makefile = (BASE_DIR / "Makefile").read_text(encoding="utf-8")

    installs = re.findall(r"^\t\$\(PY\) -m pip install .*$", makefile, re.MULTILINE)
    assert installs, "no pip install in the Makefile"
    assert all("--require-hashes" in line and " -r " in line for line in installs)
    assert installs[-1].endswith("--require-hashes -r $(DEV_LOCK)")
    assert "DEV_LOCK := requirements-dev.lock" in makefile
    assert re.search(r"^\$\(STAMP\): \$\(DEV_LOCK\)", makefile, re.MULTILINE)


@pytest.mark.slow
def test_the_locked_pip_is_installed_first_from_the_lock_itself():
    """A new venv's pip (23.2) refuses a locked package asked for with an extra in hash-checking mode, so make
    installs the lock's own pip entry first; the awk that cuts it out must give exactly that entry."""
    makefile = (BASE_DIR / "Makefile").read_text(encoding="utf-8")
    awk = re.search(r"^\tawk '([^']+)' \$\(DEV_LOCK\) > \$\(VENV\)/pip.lock$", makefile, re.MULTILINE)
    assert awk, "the Makefile no longer cuts pip's entry out of the lock"
    cut = subprocess.run(
        ["awk", awk.group(1), str(BASE_DIR / "requirements-dev.lock")], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert re.fullmatch(r"pip==[\d.]+ \\", cut[0])
    assert len(cut) >= 2
    assert all(re.fullmatch(r" +--hash=sha256:[0-9a-f]{64}( \\)?", line) for line in cut[1:])


# --- The audit ------------------------------------------------------------------------------------------------------

VULNERABLE = ("django", "4.2.0")
ADVISORY = {
    "id": "PYSEC-2099-17",
    "aliases": ["CVE-2099-0017"],
    "summary": "SQL injection in a made-up corner of the ORM",
    "affected": [
        {
            "package": {"name": "django", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "4.2.1"}]}],
        }
    ],
}


class FakeOsv(ThreadingHTTPServer):
    """Answers OSV's ``POST /v1/query``: one advisory for django 4.2.0, none for anything else."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeOsvHandler)
        self.queries: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/query"


class FakeOsvHandler(QuietHandler):
    server: FakeOsv

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.queries.append(query)
        known = (query["package"]["name"], query["version"]) == VULNERABLE
        body = json.dumps({"vulns": [ADVISORY]} if known else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def fake_osv() -> AbstractContextManager[FakeOsv]:
    return serving(FakeOsv())


def write_lock(tmp_path: Path, *packages: tuple[str, str]) -> Path:
    lock = tmp_path / "audited.lock"
    lock.write_text(
        "".join(f"{name}=={version} \\\n    --hash=sha256:{'ab' * 32}\n" for name, version in packages),
        encoding="utf-8",
    )
    return lock


def audit(lock: Path, osv_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(AUDIT), "--service", "osv", "--osv-url", osv_url, "--timeout", "5", str(lock)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_a_known_vulnerability_fails_the_audit_and_is_named(tmp_path):
    lock = write_lock(tmp_path, VULNERABLE, ("asgiref", "3.13.0"))

    with fake_osv() as osv:
        result = audit(lock, osv.url)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "django==4.2.0: PYSEC-2099-17 (CVE-2099-0017), fixed in 4.2.1" in result.stdout
    assert {query["package"]["name"] for query in osv.queries} == {"django", "asgiref"}


@pytest.mark.slow
def test_no_known_vulnerability_passes(tmp_path):
    lock = write_lock(tmp_path, ("django", "5.2.19"), ("asgiref", "3.13.0"))

    with fake_osv() as osv:
        result = audit(lock, osv.url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "osv: no known vulnerability in the 2 locked dependencies." in result.stdout
    assert "NOT AUDITED" not in result.stdout


@pytest.mark.slow
def test_an_unreachable_advisory_service_is_reported_not_failed(tmp_path):
    lock = write_lock(tmp_path, VULNERABLE)
    with fake_osv() as osv:
        closed = osv.url  # nothing listens there once the server is gone

    result = audit(lock, closed)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "osv: unreachable" in result.stdout
    assert "NOT AUDITED: no advisory service could be asked; the dependencies were not checked." in result.stdout


@pytest.mark.slow
def test_a_malformed_lock_fails_the_audit(tmp_path):
    lock = tmp_path / "broken.lock"
    lock.write_text("django>=4 \\\n    --hash=sha256:" + "ab" * 32 + "\n", encoding="utf-8")

    with fake_osv() as osv:
        result = audit(lock, osv.url)

    assert result.returncode != 0
    assert "pip-audit could not audit" in result.stderr
