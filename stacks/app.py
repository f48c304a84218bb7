"""The cdktf app: every environment's stack, synthesized into one output directory."""

from collections.abc import Mapping
from pathlib import Path

from stacks.config import load_environments


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
