"""checkov over synthesized stacks, judged by security/checkov-exceptions.toml: the plan review scans one
stack (`scan`), the tests every environment's in one run (`run_checkov`)."""

import json
import subprocess
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHECKOV_PYTHON = PROJECT_ROOT / ".cache" / "checkov-venv" / "bin" / "python"
# checkov's own command, with the garbage collector off: the short-lived scan builds many objects that live
# to its end, and the collector's passes over them took an eighth of its CPU time (for a third more memory).
CHECKOV = """
import gc, sys, warnings
gc.disable()
warnings.simplefilter("ignore", category=SyntaxWarning)
from checkov.main import Checkov
sys.exit(Checkov().run())
"""
EXCEPTIONS = PROJECT_ROOT / "security" / "checkov-exceptions.toml"
SCAN_SECONDS = 600


class ScanError(RuntimeError):
    pass


@dataclass(frozen=True)
class Finding:
    stack: str
    check: str
    resource: str
    title: str


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    scanned_stacks: frozenset[str]
    """The stacks with at least one passed check."""
    parsing_errors: int


@dataclass(frozen=True)
class ScanResult:
    findings: int
    unexcused: tuple[Finding, ...]
    """Findings that no entry of the exceptions file excuses."""
    parsing_errors: int

    @property
    def passed(self) -> bool:
        return not self.unexcused and not self.parsing_errors


def run_checkov(stacks: Mapping[str, dict[str, Any]]) -> Report:
    """Scan the stacks (name -> cdk.tf.json) in one checkov run; raises ScanError if checkov is not set up or
    fails."""
    if not CHECKOV_PYTHON.exists():
        raise ScanError(f"checkov is not set up at {CHECKOV_PYTHON.parents[1]}: run `make setup`")
    with tempfile.TemporaryDirectory() as scan_dir:
        for name, stack in stacks.items():
            # checkov's Terraform-JSON parser fails on scalar settings in the `terraform` block ("this method
            # receives only dicts"); the version constraint holds nothing to scan.
            settings = {key: value for key, value in stack["terraform"].items() if key != "required_version"}
            stack_dir = Path(scan_dir) / name  # findings are told apart, and excused, by the directory's name
            stack_dir.mkdir()
            (stack_dir / "cdk.tf.json").write_text(json.dumps({**stack, "terraform": settings}))
        result = subprocess.run(
            [
                str(CHECKOV_PYTHON),
                *("-c", CHECKOV, "--directory", scan_dir, "--framework", "terraform_json"),
                *("--output", "json", "--compact", "--skip-download"),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=SCAN_SECONDS,
        )
    if not result.stdout.startswith("{"):
        raise ScanError(f"checkov produced no report: {result.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(result.stdout)

    def stack_of(check: dict[str, Any]) -> str:
        return Path(check["file_path"]).parent.name

    return Report(
        findings=tuple(
            Finding(stack_of(f), f["check_id"], f["resource"], f["check_name"])
            for f in report["results"]["failed_checks"]
        ),
        scanned_stacks=frozenset(map(stack_of, report["results"]["passed_checks"])),
        parsing_errors=report["summary"]["parsing_errors"],
    )


def exceptions() -> list[dict[str, Any]]:
    """The entries of the exceptions file: check, resource and stacks (patterns), reason."""
    entries: list[dict[str, Any]] = tomllib.loads(EXCEPTIONS.read_text())["exception"]
    return entries


def excuses(exception: Mapping[str, Any], finding: Finding) -> bool:
    return (
        exception["check"] == finding.check
        and fnmatch(finding.resource, exception["resource"])
        and any(fnmatch(finding.stack, pattern) for pattern in exception["stacks"])
    )


def scan(stack_name: str, stack: dict[str, Any]) -> ScanResult:
    """Scan one stack (its cdk.tf.json); raises ScanError if checkov is not set up or fails."""
    report = run_checkov({stack_name: stack})
    entries = exceptions()
    return ScanResult(
        findings=len(report.findings),
        unexcused=tuple(f for f in report.findings if not any(excuses(e, f) for e in entries)),
        parsing_errors=report.parsing_errors,
    )
