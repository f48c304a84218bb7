"""checkov over one synthesized stack, judged by security/checkov-exceptions.toml as the tests judge it."""

import json
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHECKOV = PROJECT_ROOT / ".cache" / "checkov-venv" / "bin" / "checkov"
EXCEPTIONS = PROJECT_ROOT / "security" / "checkov-exceptions.toml"
SCAN_SECONDS = 600


class ScanError(RuntimeError):
    pass


@dataclass(frozen=True)
class Finding:
    check: str
    resource: str
    title: str


@dataclass(frozen=True)
class ScanResult:
    findings: int
    unexcused: tuple[Finding, ...]
    """Findings that no entry of the exceptions file excuses."""
    parsing_errors: int

    @property
    def passed(self) -> bool:
        return not self.unexcused and not self.parsing_errors


def scan(stack_name: str, stack: dict[str, Any]) -> ScanResult:
    """Scan `stack` (its cdk.tf.json) with checkov; raises ScanError if checkov is not set up or fails."""
    if not CHECKOV.exists():
        raise ScanError(f"checkov is not set up at {CHECKOV}: run `make setup`")
    # checkov's Terraform-JSON parser fails on scalar settings in the `terraform` block; the version
    # constraint holds nothing to scan.
    settings = {key: value for key, value in stack["terraform"].items() if key != "required_version"}
    with tempfile.TemporaryDirectory() as scan_dir:
        stack_dir = Path(scan_dir) / stack_name  # exceptions match on the directory's name
        stack_dir.mkdir()
        (stack_dir / "cdk.tf.json").write_text(json.dumps({**stack, "terraform": settings}))
        result = subprocess.run(
            [
                str(CHECKOV),
                *("--directory", str(stack_dir), "--framework", "terraform_json", "--output", "json"),
                *("--compact", "--skip-download"),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=SCAN_SECONDS,
        )
    if not result.stdout.startswith("{"):
        raise ScanError(f"checkov produced no report: {result.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(result.stdout)
    findings = [
        Finding(f["check_id"], f["resource"], f["check_name"]) for f in report["results"]["failed_checks"]
    ]
    exceptions: list[dict[str, Any]] = tomllib.loads(EXCEPTIONS.read_text())["exception"]
    return ScanResult(
        findings=len(findings),
        unexcused=tuple(f for f in findings if not any(_excuses(e, stack_name, f) for e in exceptions)),
        parsing_errors=report["summary"]["parsing_errors"],
    )


def _excuses(exception: dict[str, Any], stack_name: str, finding: Finding) -> bool:
    return (
        exception["check"] == finding.check
        and fnmatch(finding.resource, exception["resource"])
        and any(fnmatch(stack_name, pattern) for pattern in exception["stacks"])
    )
