"""Each Lambda package holds what its code imports, beyond what the runtime and the Powertools layer give."""

import ast
import sys
import zipfile
from typing import Any

from stacks.config import PROJECT
from tests.conftest import Synth
from tests.synth_json import resources

# The Python 3.11 Lambda runtime's boto3, and the AWS-managed Powertools layer with its dependencies.
PROVIDED = {"boto3", "botocore", "aws_lambda_powertools", "fastjsonschema", "aws_xray_sdk"}


def imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_every_function_package_holds_the_modules_it_imports(synth: Synth) -> None:
    stack_name = f"{PROJECT}-dev"
    stack: dict[str, Any] = synth.stacks[stack_name]
    functions = resources(stack, "aws_lambda_function")
    assert len(functions) == 4
    for function in functions.values():
        with zipfile.ZipFile(synth.stack_dir(stack_name) / function["filename"]) as package:
            names = package.namelist()
            assert "handler.py" in names, function["function_name"]
            packaged = {name.split("/")[0].removesuffix(".py") for name in names}
            # Bundled distributions' own modules (six.py keeps its Python 2 imports) are theirs to check.
            bundled = {
                line.split(",")[0]
                for name in names
                if name.endswith(".dist-info/RECORD")
                for line in package.read(name).decode().splitlines()
            }
            for name in names:
                if name.endswith(".py") and "/" not in name and name not in bundled:
                    missing = (
                        imported_modules(package.read(name).decode()) - sys.stdlib_module_names - PROVIDED
                    )
                    assert missing <= packaged, (
                        f"{function['function_name']} {name} imports {missing - packaged}"
                    )
            assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_packages_are_reproducible(synth: Synth) -> None:
    """Equal code gives equal bytes in every environment, so Terraform sees only real changes."""
    hashes: dict[str, set[str]] = {}
    for stack in synth.stacks.values():
        for function in resources(stack, "aws_lambda_function").values():
            package = function["filename"].rsplit("/", 1)[1]  # functions/<name>/ -> <name>.zip
            hashes.setdefault(package, set()).add(function["source_code_hash"])
    assert hashes and all(len(values) == 1 for values in hashes.values()), hashes
