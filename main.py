"""Synthesizes every environment of the IoT platform into cdktf.out/ (or $CDKTF_OUTDIR).

Run through the cdktf CLI (`npx cdktf synth`) or directly (`pipenv run python main.py`).
"""

import os
import sys
from pathlib import Path

# Node 20 works with jsii; its end-of-life banner on every synth would drown real errors.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from stacks.app import synth_all
from stacks.config import ConfigError

if __name__ == "__main__":
    try:
        stacks = synth_all(Path(os.environ.get("CDKTF_OUTDIR", "cdktf.out")), os.environ)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    print(f"synthesized {', '.join(stacks)}")
