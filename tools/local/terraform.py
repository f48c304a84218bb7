"""Terraform commands on one synthesized stack, each bounded in time."""

import json
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bounds a few times the measured ones (166 resources on the emulator: apply 2 min, plan 15 s, destroy
# 1.5 min) and far below Terraform's own time-outs (up to 30 min and more per resource), so that a
# resource the emulator cannot handle fails the command within minutes instead of hanging it.
INIT_SECONDS = 120
PLAN_SECONDS = 240
APPLY_SECONDS = 480  # apply and destroy
OUTPUT_SECONDS = 60
# A stopped Terraform gets SIGINT first: it halts, saves the state and releases the lock.
INTERRUPT_GRACE_SECONDS = 30
ERROR_TAIL_CHARS = 4000


class TerraformError(RuntimeError):
    pass


@dataclass(frozen=True)
class Terraform:
    stack_dir: Path
    environ: Mapping[str, str]
    """The process environment of every command (see tools.terraform.terraform_environ)."""
    echo: bool = False
    """Show the output of the long steps (init, plan, apply, destroy) as they run, instead of capturing it."""

    def run(
        self, *args: str, timeout: float, ok: tuple[int, ...] = (0,), capture: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run `terraform <args>`; its output is the result's stdout (with stderr; empty when echoed).

        Raises TerraformError when it exits with a code not in `ok` or runs over `timeout` seconds.
        """
        echoed = self.echo and not capture
        process = subprocess.Popen(
            ["terraform", *args] if echoed else ["terraform", *args, "-no-color"],
            cwd=self.stack_dir,
            env=dict(self.environ),
            stdin=subprocess.DEVNULL,
            stdout=None if echoed else subprocess.PIPE,
            stderr=None if echoed else subprocess.STDOUT,
            text=True,
            # A group of its own, so that stopping Terraform also stops its provider plugins.
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TerraformError(
                f"`terraform {' '.join(args)}` in {self.stack_dir} was stopped after {timeout:.0f} s"
                f"\n{stop(process)[-ERROR_TAIL_CHARS:]}"
            ) from None
        except KeyboardInterrupt:
            stop(process)  # Ctrl-C reaches only this process's group
            raise
        if process.returncode not in ok:
            raise TerraformError(
                f"`terraform {' '.join(args)}` in {self.stack_dir} exited with {process.returncode}"
                f"\n{(output or '')[-ERROR_TAIL_CHARS:]}"
            )
        return subprocess.CompletedProcess(process.args, process.returncode, stdout=output or "")

    def init(self) -> None:
        # -reconfigure: the local backend's endpoint changes with every emulator port.
        self.run("init", "-input=false", "-reconfigure", timeout=INIT_SECONDS)

    def apply(self) -> None:
        self.run("apply", "-input=false", "-auto-approve", timeout=APPLY_SECONDS)

    def destroy(self) -> None:
        # Without refreshing: only stacks on the emulator are destroyed here, where nothing but their own
        # deploy changes their resources, so the state holds what exists; reading all of it again took 10 s.
        self.run("destroy", "-input=false", "-auto-approve", "-refresh=false", timeout=APPLY_SECONDS)

    def outputs(self) -> dict[str, Any]:
        """The stack's outputs as flat JSON: name -> value."""
        raw: dict[str, dict[str, Any]] = json.loads(
            self.run("output", "-json", timeout=OUTPUT_SECONDS, capture=True).stdout
        )
        return {name: output["value"] for name, output in raw.items()}

    def resources(self) -> list[str]:
        """The addresses of the resources in the state (data sources are not resources)."""
        listed = self.run("state", "list", timeout=OUTPUT_SECONDS, capture=True).stdout
        return [address for address in listed.splitlines() if not address.startswith("data.")]


def stop(process: subprocess.Popen[str]) -> str:
    """Interrupt Terraform (or the cdktf CLI) and the rest of its session's process group; kill them if they
    do not stop in time, and return the output."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=INTERRUPT_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output or ""
