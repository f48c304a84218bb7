"""Stock versus fast synth: wall time and peak memory of Python and of its Node child, in one run.

    pipenv run python -m bench.synth [--runs N]

Each measurement is a fresh interpreter, as users run it: `synth` synthesizes every environment through
main.synth_all, `import` only imports the stacks and with them every binding the synth uses. Runs of
the four measurements alternate; wall time is the median of N runs and includes interpreter start and
exit; peak memory is the largest seen.
Run `make setup` first, so that the lazy view is built and the jsii package cache is warm.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import fast_synth

SCENARIOS = ("synth", "import")
# A short-lived environment besides the standing ones, so that every environment is synthesized.
BENCH_ENVIRON = {"ENVIRONMENT_SUFFIX": "bench"}
TARGET_SECONDS = 2.5
TARGET_TIME_RATIO = 1 / 5
TARGET_MEMORY_RATIO = 1 / 3


@dataclass(frozen=True)
class Sample:
    wall_seconds: float
    python_mib: float
    node_mib: float
    lazy: bool


@dataclass(frozen=True)
class Result:
    label: str
    wall_seconds: float
    python_mib: float
    node_mib: float

    @property
    def total_mib(self) -> float:
        return self.python_mib + self.node_mib

    def row(self) -> str:
        return (
            f"{self.label:<18} {self.wall_seconds:>7.2f} {self.python_mib:>10.0f} {self.node_mib:>8.0f} "
            f"{self.total_mib:>9.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.synth", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (default: 3)")
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "OUTDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if reason := fast_synth.unavailable_reason():
        sys.exit(f"cannot measure fast synth: {reason}")

    print(f"{args.runs} runs each, on {os.cpu_count()} CPUs with a load average of {os.getloadavg()[0]:.1f}")
    samples: dict[tuple[str, bool], list[Sample]] = {
        (scenario, on): [] for scenario in SCENARIOS for on in (False, True)
    }
    for _ in range(args.runs):  # interleaved, so that the machine's drift touches every measurement alike
        for (scenario, on), taken in samples.items():
            taken.append(sample(scenario, on))
    results = {key: summarize(*key, taken) for key, taken in samples.items()}
    print(f"{'':<18} {'wall s':>7} {'python MiB':>10} {'node MiB':>8} {'total MiB':>9}")
    for result in results.values():
        print(result.row())
    stock, fast = results["synth", False], results["synth", True]
    time_ratio = fast.wall_seconds / stock.wall_seconds
    memory_ratio = fast.total_mib / stock.total_mib
    time_met = fast.wall_seconds <= TARGET_SECONDS or time_ratio <= TARGET_TIME_RATIO
    print(
        f"fast synth takes {time_ratio:.2f}x the wall time of stock synth: target {verdict(time_met)} "
        f"(at most {TARGET_SECONDS} s or {TARGET_TIME_RATIO:.2f}x)"
    )
    print(
        f"fast synth takes {memory_ratio:.2f}x the peak memory of stock synth: target "
        f"{verdict(memory_ratio <= TARGET_MEMORY_RATIO)} (at most {TARGET_MEMORY_RATIO:.2f}x)"
    )


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def sample(scenario: str, fast: bool) -> Sample:
    """One run of `scenario` in a fresh interpreter, with fast synth on or off."""
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as outdir:
        start = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-m", "bench.synth", "--child", scenario, outdir],
            cwd=fast_synth.PROJECT_ROOT,
            env={**os.environ, fast_synth.ENV_VAR: "1" if fast else "0"},
            capture_output=True,
            text=True,
            check=False,
        )
        wall_seconds = time.perf_counter() - start
    if completed.returncode != 0:
        sys.exit(f"{scenario} (fast={fast}) failed:\n{completed.stderr}")
    taken = Sample(wall_seconds=wall_seconds, **json.loads(completed.stdout.splitlines()[-1]))
    if taken.lazy != fast:
        sys.exit(f"{scenario} (fast={fast}) ran with fast synth {'on' if taken.lazy else 'off'}")
    if taken.node_mib == 0:
        sys.exit(f"{scenario} (fast={fast}): Node's peak is unknown: jsii did not wait for Node to exit")
    return taken


def summarize(scenario: str, fast: bool, samples: list[Sample]) -> Result:
    return Result(
        label=f"{'fast' if fast else 'stock'} {scenario}",
        wall_seconds=statistics.median(sample.wall_seconds for sample in samples),
        python_mib=max(sample.python_mib for sample in samples),
        node_mib=max(sample.node_mib for sample in samples),
    )


def child(scenario: str, outdir: str) -> None:
    """One measured run; prints its Sample fields (but wall time) as JSON on the last line of stdout."""
    # Registered before jsii starts Node and registers its own exit handler, so this one runs after
    # that handler has stopped and reaped Node. RUSAGE_CHILDREN then holds the peak of the largest
    # process below this one: the jsii kernel's Node process.
    atexit.register(report_peaks)
    if scenario == "synth":
        from stacks.app import synth_all  # importing the constructs turns fast synth on

        synth_all(Path(outdir), BENCH_ENVIRON)
    else:
        import stacks.platform_stack  # noqa: F401


def report_peaks() -> None:
    kib = 1024  # ru_maxrss is in KiB on Linux
    print(
        json.dumps(
            {
                "python_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
                "node_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
                "lazy": fast_synth.active(),
            }
        )
    )


if __name__ == "__main__":
    main()
