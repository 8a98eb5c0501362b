"""`python -m portal.auditcheck PIP_AUDIT_JSON NPM_AUDIT_JSON` (used by `make audit`): fail when a
known vulnerability has a fixed version, in the pinned Python packages (pip-audit's JSON, run
with `--strict` so that a package it could not check has already failed the audit) or in the npm
packages (`npm audit --json`). Vulnerabilities without a fix are listed and let pass: nothing
can be bumped for them yet. Exit 0 (nothing to fix), 1 (something to bump), 2 (a report is not
what the tools write)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def pip_findings(report: dict) -> tuple[list[str], list[str]]:
    """(fixable, unfixable) lines of a pip-audit JSON report."""
    fixable, unfixable = [], []
    for dependency in report["dependencies"]:
        for vuln in dependency.get("vulns", []):
            line = f"{dependency['name']}=={dependency['version']}: {vuln['id']}"
            if vuln.get("fix_versions"):
                fixable.append(f"{line} (fixed in {', '.join(vuln['fix_versions'])})")
            else:
                unfixable.append(line)
    return fixable, unfixable


def npm_findings(report: dict) -> tuple[list[str], list[str]]:
    """(fixable, unfixable) lines of an `npm audit --json` report (npm 7+)."""
    if "vulnerabilities" not in report:  # the registry refused: {"message": ..., "error": ...}
        error = report.get("error") or {}
        reason = report.get("message") or error.get("summary") or "no vulnerability data"
        raise ValueError(f"npm audit failed: {reason}")
    fixable, unfixable = [], []
    for name, vuln in report["vulnerabilities"].items():
        line = f"{name} ({vuln['severity']}, {vuln['range']})"
        (fixable if vuln.get("fixAvailable") else unfixable).append(line)
    return fixable, unfixable


def main(argv: list[str]) -> int:
    try:
        pip_report, npm_report = (json.loads(Path(p).read_text()) for p in argv[1:3])
        findings = [("Python", *pip_findings(pip_report)), ("npm", *npm_findings(npm_report))]
    except (ValueError, KeyError, TypeError, OSError) as exc:
        print(f"audit: unreadable report: {exc}", file=sys.stderr)
        return 2
    failed = False
    for where, fixable, unfixable in findings:
        for line in unfixable:
            print(f"audit: {where}: known, no fix yet: {line}")
        for line in fixable:
            print(f"audit: {where}: FIX AVAILABLE, bump the pin: {line}", file=sys.stderr)
            failed = True
    if not failed:
        print("audit: no known vulnerability with a fix in the pinned packages")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
