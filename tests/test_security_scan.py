"""checkov over every synthesized stack: no finding without a listed, reasoned exception."""

import json
import subprocess
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STACK_NAMES, Synth, require

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHECKOV = PROJECT_ROOT / ".cache" / "checkov-venv" / "bin" / "checkov"
EXCEPTIONS = PROJECT_ROOT / "security" / "checkov-exceptions.toml"


@dataclass(frozen=True)
class Finding:
    stack: str
    check: str
    resource: str
    title: str


@dataclass(frozen=True)
class Scan:
    findings: list[Finding]
    parsing_errors: int
    scanned_stacks: set[str]


@pytest.fixture(scope="session")
def scan(synth: Synth, tmp_path_factory: pytest.TempPathFactory) -> Scan:
    require(CHECKOV.exists(), f"checkov is not set up at {CHECKOV}: run `make setup`")
    scan_dir = tmp_path_factory.mktemp("checkov")
    for name, stack in synth.stacks.items():
        # checkov's Terraform-JSON parser fails on scalar settings in the `terraform` block
        # ("this method receives only dicts"); the version constraint holds nothing to scan.
        terraform = {key: value for key, value in stack["terraform"].items() if key != "required_version"}
        (scan_dir / name).mkdir()
        (scan_dir / name / "cdk.tf.json").write_text(json.dumps({**stack, "terraform": terraform}))
    result = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(scan_dir),
            "--framework",
            "terraform_json",
            "--output",
            "json",
            "--compact",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.startswith("{"), f"checkov produced no report: {result.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(result.stdout)
    return Scan(
        findings=[
            Finding(Path(f["file_path"]).parent.name, f["check_id"], f["resource"], f["check_name"])
            for f in report["results"]["failed_checks"]
        ],
        parsing_errors=report["summary"]["parsing_errors"],
        scanned_stacks={Path(f["file_path"]).parent.name for f in report["results"]["passed_checks"]},
    )


def exceptions() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = tomllib.loads(EXCEPTIONS.read_text())["exception"]
    return entries


def excused(finding: Finding, entry: dict[str, Any]) -> bool:
    return (
        entry["check"] == finding.check
        and fnmatch(finding.resource, entry["resource"])
        and any(fnmatch(finding.stack, pattern) for pattern in entry["stacks"])
    )


def test_every_stack_is_parsed_and_scanned(scan: Scan) -> None:
    assert scan.parsing_errors == 0
    assert scan.scanned_stacks == set(STACK_NAMES)


def test_every_finding_has_a_listed_exception(scan: Scan, stack_name: str) -> None:
    unexcused = [
        f"{f.check} {f.resource}: {f.title}"
        for f in scan.findings
        if f.stack == stack_name and not any(excused(f, entry) for entry in exceptions())
    ]
    assert unexcused == [], f"fix these or list them with a reason in {EXCEPTIONS.name}"


def test_every_exception_has_a_reason_and_still_matches_a_finding(scan: Scan) -> None:
    for entry in exceptions():
        assert len(entry["reason"]) > 40, f"{entry['check']} needs a real reason"
        assert any(excused(f, entry) for f in scan.findings), f"stale exception, remove it: {entry}"
