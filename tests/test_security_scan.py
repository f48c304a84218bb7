"""checkov over every synthesized stack: no finding without a listed, reasoned exception."""

import pytest

from tests.conftest import STACK_NAMES, Synth, require
from tools.local.security_scan import CHECKOV_PYTHON, EXCEPTIONS, Report, exceptions, excuses, run_checkov


@pytest.fixture(scope="session")
def scan(synth: Synth) -> Report:
    require(
        CHECKOV_PYTHON.exists(), f"checkov is not set up at {CHECKOV_PYTHON.parents[1]}: run `make setup`"
    )
    return run_checkov(synth.stacks)


def test_every_stack_is_parsed_and_scanned(scan: Report) -> None:
    assert scan.parsing_errors == 0
    assert scan.scanned_stacks == set(STACK_NAMES)


def test_every_finding_has_a_listed_exception(scan: Report, stack_name: str) -> None:
    unexcused = [
        f"{f.check} {f.resource}: {f.title}"
        for f in scan.findings
        if f.stack == stack_name and not any(excuses(entry, f) for entry in exceptions())
    ]
    assert unexcused == [], f"fix these or list them with a reason in {EXCEPTIONS.name}"


def test_every_exception_has_a_reason_and_still_matches_a_finding(scan: Report) -> None:
    for entry in exceptions():
        assert len(entry["reason"]) > 40, f"{entry['check']} needs a real reason"
        assert any(excuses(entry, f) for f in scan.findings), f"stale exception, remove it: {entry}"
