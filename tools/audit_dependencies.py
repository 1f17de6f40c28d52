"""Check every pinned dependency of a lock file against the known-vulnerability services, with pip-audit.

Exit status: 1 when a locked version has a known vulnerability (or the audit itself cannot run: a missing or
malformed lock); 0 when none has one; also 0, with a ``NOT AUDITED:`` line saying why, when no advisory service
could be asked.  An unreachable service is the network's fault, not the code's: CI reports it (``.ci/run`` shows
it in its summary) instead of failing every build for it, and a later run with network access audits again.

The services are asked in order, the first that answers decides: OSV (``api.osv.dev``, which carries the PyPA
advisories and GitHub's), then PyPI's per-version JSON API.  A service "answers" only if it audited something:
pip-audit reports a dependency it could not look up as skipped and exits 0, which must not pass for a clean audit.

    .venv/bin/python tools/audit_dependencies.py requirements-dev.lock            # what `make audit` runs
    .venv/bin/python tools/audit_dependencies.py --service osv --osv-url http://127.0.0.1:8080/v1/query LOCK
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("osv", "pypi")
NOT_AUDITED = "NOT AUDITED:"
# What pip-audit's output says when the service could not be reached (it has no exit status of its own for that).
UNREACHABLE_SIGNS = (
    "ConnectionError",
    "Could not connect",
    "NameResolutionError",
    "Max retries exceeded",
    "ConnectTimeout",
    "ReadTimeout",
    "Temporary failure in name resolution",
)


@dataclass
class ServiceResult:
    """What one service said: the vulnerabilities found, the dependencies skipped, or why it could not be asked."""

    service: str
    vulnerable: list[str] = field(default_factory=list)
    audited: int = 0
    skipped: list[str] = field(default_factory=list)
    unavailable: str | None = None


def pip_audit_command() -> list[str]:
    """pip-audit from the running interpreter's environment (the project venv)."""
    return [sys.executable, "-m", "pip_audit"]


def run_service(
    lock_files: list[Path], service: str, *, osv_url: str | None, timeout: int, cache_dir: Path
) -> ServiceResult:
    """Run pip-audit once against ``service``; never raises for a network failure, says so in the result."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [
            *pip_audit_command(),
            "--disable-pip",  # the lock is complete and hashed: nothing to resolve, nothing to install
            "--require-hashes",
            "--vulnerability-service",
            service,
            "--format",
            "json",
            "--output",
            str(report),
            "--progress-spinner",
            "off",
            "--timeout",
            str(timeout),
            "--cache-dir",
            str(cache_dir),
        ]
        if osv_url and service == "osv":
            command += ["--osv-url", osv_url]
        for lock_file in lock_files:
            command += ["--requirement", str(lock_file)]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        output = completed.stdout + completed.stderr
        if not report.exists():
            if any(sign in output for sign in UNREACHABLE_SIGNS):
                last_line = output.strip().splitlines()[-1] if output.strip() else "no output"
                return ServiceResult(service, unavailable=f"unreachable ({last_line[:300]})")
            raise SystemExit(f"pip-audit could not audit {', '.join(map(str, lock_files))}:\n{output.strip()}")
        dependencies = json.loads(report.read_text(encoding="utf-8"))["dependencies"]
    result = ServiceResult(service)
    for dependency in dependencies:
        if "skip_reason" in dependency:
            result.skipped.append(f"{dependency['name']}: {dependency['skip_reason']}")
            continue
        result.audited += 1
        for vulnerability in dependency.get("vulns", []):
            fixed = ", ".join(vulnerability.get("fix_versions") or []) or "no fixed version yet"
            aliases = ", ".join(vulnerability.get("aliases") or [])
            result.vulnerable.append(
                f"{dependency['name']}=={dependency['version']}: {vulnerability['id']}"
                f"{f' ({aliases})' if aliases else ''}, fixed in {fixed}"
            )
    if result.audited == 0 and result.skipped:
        result.unavailable = f"could not look up any dependency ({result.skipped[0]})"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lock_files", nargs="+", type=Path, help="hashed, fully pinned requirements files")
    parser.add_argument("--service", choices=SERVICES, action="append", help="ask only these (repeatable)")
    parser.add_argument("--osv-url", help="OSV API endpoint instead of api.osv.dev (a mirror)")
    parser.add_argument("--timeout", type=int, default=15, help="seconds per request (default 15)")
    arguments = parser.parse_args(argv)
    for lock_file in arguments.lock_files:
        if not lock_file.is_file():
            parser.error(f"no such lock file: {lock_file}")
    reasons = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for service in arguments.service or SERVICES:
            result = run_service(
                arguments.lock_files,
                service,
                osv_url=arguments.osv_url,
                timeout=arguments.timeout,
                cache_dir=Path(cache_dir),
            )
            if result.unavailable:
                print(f"{service}: {result.unavailable}")
                reasons.append(f"{service} {result.unavailable}")
                continue
            for skipped in result.skipped:
                print(f"{service}: not looked up: {skipped}")
            if result.vulnerable:
                print(f"{service}: {len(result.vulnerable)} known vulnerabilit(y/ies) in the locked versions:")
                for line in result.vulnerable:
                    print(f"  {line}")
                return 1
            print(f"{service}: no known vulnerability in the {result.audited} locked dependencies.")
            return 0
    print(f"{NOT_AUDITED} no advisory service could be asked; the dependencies were not checked. " + "; ".join(reasons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
