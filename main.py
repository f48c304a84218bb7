"""Synthesizes every environment of the IoT platform into cdktf.out/ (or $CDKTF_OUTDIR).

Run through the cdktf CLI (`npx cdktf synth`) or directly (`pipenv run python main.py`).
"""

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from stacks.config import ConfigError, load_environments
from tools import lazy_provider

# Node 20 works with jsii; its end-of-life banner on every synth would drown real errors.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def synth_all(outdir: Path, environ: Mapping[str, str]) -> list[str]:
    """Synthesize every environment into `outdir` and return the stack names.

    The configuration is validated before anything is built, so a bad ENVIRONMENT_SUFFIX leaves no output.
    """
    environments = load_environments(environ)

    from cdktf import App

    from stacks.platform_stack import PlatformStack

    app = App(outdir=str(outdir))
    for config in environments:
        PlatformStack(app, config)
    app.synth()
    return [config.stack_name for config in environments]


if __name__ == "__main__":
    lazy_provider.enable()  # fast synth; IOT_FAST_SYNTH=0 turns it off
    try:
        stacks = synth_all(Path(os.environ.get("CDKTF_OUTDIR", "cdktf.out")), os.environ)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    print(f"synthesized {', '.join(stacks)}")
