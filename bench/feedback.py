"""How long the feedback loops take: the tests without and with the local end to end, and a synth.

    pipenv run python -m bench.feedback

Each figure is the wall time of one run, as a user gets it, from the project root: `make test-fast` (every
test but the local end to end's deployment), `make test` (every test), `python main.py`, and
`npx cdktf synth` in this process's environment (`make bench` exports CHECKPOINT_DISABLE=1 and
DISABLE_VERSION_CHECK=1). Set up first (`make setup`), so that no figure includes an installation.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TESTS_WITHOUT_E2E_SECONDS = 60
ALL_TESTS_SECONDS = 240
CLI_OVERHEAD_SECONDS = 3
"""What `npx cdktf synth` may add to `python main.py`."""
CLI_SWITCHES = ("CHECKPOINT_DISABLE", "DISABLE_VERSION_CHECK")


def timed(*command: str) -> float:
    """Wall seconds of the command; exits with its output if it fails."""
    start = time.monotonic()
    completed = subprocess.run(
        command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    seconds = time.monotonic() - start
    if completed.returncode != 0:
        sys.exit(f"`{' '.join(command)}` exited with {completed.returncode}:\n{completed.stdout[-4000:]}")
    return seconds


def row(label: str, seconds: float, target: str) -> str:
    return f"{label:<30} {seconds:>7.1f}   {target}"


def main() -> None:
    switches = " ".join(f"{name}={os.environ.get(name, '(unset)')}" for name in CLI_SWITCHES)
    print(f"on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {switches}")
    print(f"{'':<30} {'wall s':>7}   target")
    without_e2e = timed("make", "--no-print-directory", "test-fast")
    print(row("make test-fast (no e2e)", without_e2e, f"<= {TESTS_WITHOUT_E2E_SECONDS} s"), flush=True)
    every_test = timed("make", "--no-print-directory", "test")
    print(row("make test", every_test, f"<= {ALL_TESTS_SECONDS} s"), flush=True)
    synth = timed(sys.executable, "main.py")
    print(row("python main.py", synth, ""), flush=True)
    cli = timed("npx", "cdktf", "synth")
    print(row("npx cdktf synth", cli, f"<= python main.py + {CLI_OVERHEAD_SECONDS} s ({cli - synth:+.1f} s)"))


if __name__ == "__main__":
    main()
