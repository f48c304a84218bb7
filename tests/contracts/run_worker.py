"""Runs the stream worker (its own main) with every AWS call it makes recorded, one JSON line per call.

    python -m tests.contracts.run_worker <calls.jsonl>

The recorder is added to botocore's built-in handlers, so every session the process creates has it: boto3's
for the processor's writes and async-kinesis's aiobotocore sessions for the stream.
"""

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import IO

import botocore.handlers

from tests.contracts.recorder import Call, Recorder


def main(path: str) -> None:
    out: IO[str] = open(path, "a")  # noqa: SIM115  (open for the whole run; the process ends with it)

    def write(principal: str, call: Call) -> None:
        out.write(json.dumps(asdict(call)) + "\n")
        out.flush()

    botocore.handlers.BUILTIN_HANDLERS.extend(Recorder(write).handlers())
    # As the image runs it: from a directory holding stream_worker/, processor/ and readings/.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functions"))
    from stream_worker import worker

    worker.main()


if __name__ == "__main__":
    main(sys.argv[1])
