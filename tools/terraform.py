"""How the project runs Terraform: with the provider mirror when this machine has one."""

import os
from collections.abc import Mapping
from pathlib import Path

PROVIDER_MIRROR = Path("/opt/tf-plugins")
MIRROR_CLI_CONFIG = Path(__file__).with_name("terraform.tfrc")


def terraform_environ(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`environ` for a Terraform process: on machines with the provider mirror (and no registry access)
    `terraform init` installs from the mirror; elsewhere the user's own CLI configuration applies."""
    if PROVIDER_MIRROR.is_dir():
        return {**environ, "TF_CLI_CONFIG_FILE": str(MIRROR_CLI_CONFIG)}
    return dict(environ)
