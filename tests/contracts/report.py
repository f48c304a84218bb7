"""Prints, per environment, the flow matrix and the limits chain as Markdown, from the checks' own data.

    .venv/bin/python -m tests.contracts.report > /tmp/report.md

tests/contracts/README.md carries its output.
"""

import json
import tempfile
from pathlib import Path

from stacks.app import synth_all
from tests.conftest import SYNTH_ENVIRON
from tests.contracts.aws_needs import NEEDS
from tests.contracts.flows import check_flows, unlisted_rules
from tests.contracts.limits import chain
from tests.contracts.stack_model import Stack, environment

HOLDS = {True: "yes", False: "**NO**", None: "n/a"}


def cell(text: str) -> str:
    return text.replace("|", "\\|") or " "


def flow_table(stack: Stack) -> list[str]:
    lines = [
        "| client | server | port | why | client egress | server side | allowed |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in check_flows(stack):
        flow = result.flow
        if not result.applies:
            status = f"n/a (no {flow.server})"
        else:
            status = "yes" if not result.problems else "**NO**: " + "; ".join(result.problems)
        lines.append(
            f"| {flow.client} | {flow.server} | {flow.port} | {cell(flow.why)} "
            f"| {cell('; '.join(result.egress))} "
            f"| {cell('; '.join(result.ingress))} | {cell(status)} |"
        )
    wider = unlisted_rules(stack)
    if wider:
        lines += ["", "Open beyond the matrix:", *(f"- {line.split(': ', 1)[1]}" for line in wider)]
    return lines


def limits_table(stack: Stack) -> list[str]:
    lines = ["| link | limit | must admit | holds |", "|---|---|---|---|"]
    for link in chain(stack):
        lines.append(f"| {link.name} | {cell(link.limit)} | {cell(link.load)} | {HOLDS[link.holds]} |")
    return lines


def needs_table() -> list[str]:
    lines = ["| need | when | actions | on | required by |", "|---|---|---|---|---|"]
    for key, need in NEEDS.items():
        lines.append(f"| {key} | {need.when} | {', '.join(need.actions)} | {need.on} | {need.url} |")
    return lines


def report(stacks: list[Stack]) -> str:
    lines = ["### What AWS needs on a role's behalf (aws_needs.py)", "", *needs_table()]
    for stack in stacks:
        lines += ["", f"### {environment(stack)}", "", "#### Flows", "", *flow_table(stack)]
        lines += ["", "#### Limits chain", "", *limits_table(stack)]
    return "\n".join(lines) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as outdir:
        names = synth_all(Path(outdir), SYNTH_ENVIRON)
        stacks = [json.loads((Path(outdir) / "stacks" / name / "cdk.tf.json").read_text()) for name in names]
    print(report(stacks), end="")


if __name__ == "__main__":
    main()
