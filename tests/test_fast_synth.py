"""Fast synth (fast_synth) changes how the provider bindings load, never what is synthesized."""

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import fast_synth
from fast_synth.build import KERNEL_PRELUDE
from fast_synth.postponed import PostponedAnnotationsFinder, PostponedAnnotationsLoader
from tests.conftest import STACK_NAMES, SYNTH_ENVIRON, Synth, require

# The stock synth runs in a fresh interpreter, as a process imports the provider bindings only one way. It
# collects no garbage: the stock bindings' import makes the most, and the collector's passes over it took a
# quarter of the synth's time, to free nothing this short-lived process misses.
STOCK_SYNTH = """
import gc, json, sys
gc.disable()
from pathlib import Path
import fast_synth
from stacks.app import synth_all

stacks = synth_all(Path(sys.argv[1]), json.loads(sys.argv[2]))
print(json.dumps({"stacks": stacks, "lazy": fast_synth.active()}))
"""


def start_stock_synth(outdir: Path) -> subprocess.Popen[str]:
    """A synth into `outdir` with fast synth off."""
    return subprocess.Popen(
        [sys.executable, "-c", STOCK_SYNTH, str(outdir), json.dumps(SYNTH_ENVIRON)],
        cwd=fast_synth.PROJECT_ROOT,
        env={**os.environ, fast_synth.ENV_VAR: "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(synth: subprocess.Popen[str]) -> list[str]:
    """The stack names the stock synth wrote, once it has finished."""
    stdout, stderr = synth.communicate()
    assert synth.returncode == 0, stderr
    report = json.loads(stdout.splitlines()[-1])
    assert report["lazy"] is False, f"fast synth was on; stderr: {stderr}"
    return list(report["stacks"])


def run_python_with_fast_synth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=fast_synth.PROJECT_ROOT,
        env={**os.environ, fast_synth.ENV_VAR: "1"},
        capture_output=True,
        text=True,
        check=True,
    )


def files(outdir: Path) -> dict[str, bytes]:
    return {
        path.relative_to(outdir).as_posix(): path.read_bytes() for path in outdir.rglob("*") if path.is_file()
    }


def test_fast_synth_writes_the_same_bytes_as_stock_synth(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The stock synth against the run's, which fast synth made. The stock synth starts first, so that it
    runs while another test process makes the run's synth."""
    reason = fast_synth.unavailable_reason()
    require(reason is None, f"fast synth is unavailable: {reason}")
    stock_synth = start_stock_synth(tmp_path / "stock")
    synth: Synth = request.getfixturevalue("synth")
    assert synth.fast, "the run's synth did not use fast synth"
    assert finish(stock_synth) == STACK_NAMES
    stock_files, fast_files = files(tmp_path / "stock"), files(synth.outdir)
    assert {f"stacks/{name}/cdk.tf.json" for name in STACK_NAMES} <= stock_files.keys()
    assert sorted(fast_files) == sorted(stock_files)
    assert [path for path in sorted(stock_files) if fast_files[path] != stock_files[path]] == []


def test_what_the_direct_kernel_prints_stays_out_of_its_answers() -> None:
    """The kernel answers on stdout, so what its JavaScript prints goes to stderr, as jsii's relay has it."""
    require(shutil.which("node") is not None, "node is not on PATH")
    prelude = json.dumps(str(KERNEL_PRELUDE))
    script = f"require({prelude}); console.log('printed'); console.error('warned');"
    completed = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True)
    assert completed.stdout == ""
    assert [json.loads(line) for line in completed.stderr.splitlines()] == [
        {"stdout": base64.b64encode(b"printed\n").decode()},
        {"stderr": base64.b64encode(b"warned\n").decode()},
    ]


def load_postponed(finder: PostponedAnnotationsFinder, name: str, path: Path) -> ModuleType:
    spec = finder.find_spec(name, [str(path)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_submodules_load_with_postponed_annotations_from_bytecode_cached_like_python_caches_it(
    tmp_path: Path,
) -> None:
    source = tmp_path / "package" / "submodule" / "__init__.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f(x: Undefined) -> None: ...\nVALUE = 1\n")
    finder = PostponedAnnotationsFinder("package", tmp_path / "cache")
    assert finder.find_spec("package._private", [str(source.parents[1])]) is None
    assert finder.find_spec("other.submodule", [str(source.parents[1])]) is None

    module = load_postponed(finder, "package.submodule", source.parents[1])
    assert module.f.__annotations__ == {"x": "Undefined", "return": "None"}  # eagerly: a NameError
    assert (tmp_path / "cache" / "package.submodule.bytecode").is_file()

    written = source.stat().st_mtime_ns
    source.write_text("def f(x: Undefined) -> None: ...\nVALUE = 2\n")  # same size and time: cached
    os.utime(source, ns=(written, written))
    assert load_postponed(finder, "package.submodule", source.parents[1]).VALUE == 1
    source.write_text("def f(x: Undefined) -> None: ...\nVALUE = 22\n")
    assert load_postponed(finder, "package.submodule", source.parents[1]).VALUE == 22


def test_a_bytecode_cache_that_cannot_be_written_leaves_the_import_working(tmp_path: Path) -> None:
    source = tmp_path / "package" / "submodule" / "__init__.py"
    source.parent.mkdir(parents=True)
    source.write_text("VALUE = 1\n")
    (tmp_path / "cache").write_text("a file where the cache directory would be\n")
    finder = PostponedAnnotationsFinder("package", tmp_path / "cache")
    assert load_postponed(finder, "package.submodule", source.parents[1]).VALUE == 1


def test_fast_synth_loads_the_provider_submodules_with_postponed_annotations() -> None:
    from cdktf_cdktf_provider_aws import sqs_queue

    require(fast_synth.active(), f"fast synth is off: {fast_synth.unavailable_reason()}")
    assert isinstance(sqs_queue.__spec__.loader, PostponedAnnotationsLoader)
    assert sqs_queue.SqsQueue.__init__.__annotations__["scope"] == "_constructs_77d1e7e8.Construct"


# Sends a struct that holds a list of structs as jsii does and as fast synth does, printing both.
STRUCTS = """
import json
from jsii import _kernel
import fast_synth

stock = _kernel._make_reference_for_native
fast_synth.enable()
from cdktf_cdktf_provider_aws.data_aws_iam_policy_document import (
    DataAwsIamPolicyDocumentConfig as Document,
    DataAwsIamPolicyDocumentStatement as Statement,
    DataAwsIamPolicyDocumentStatementPrincipals as Principals,
)

document = Document(
    statement=[
        Statement(actions=["s3:GetObject"], principals=[Principals(type="Service", identifiers=["a"])]),
        Statement(effect="Deny", not_actions=["*"], resources=["*"]),
    ],
    version="2012-10-17",
    provider=None,
)
fast = _kernel._make_reference_for_native
print(json.dumps({"stock": stock(None, document), "fast": fast(None, document)}))
"""


def without_nulls(value: object) -> object:
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def test_fast_synth_sends_structs_without_their_unset_fields_which_the_kernel_drops() -> None:
    reason = fast_synth.unavailable_reason()
    require(reason is None, f"fast synth is unavailable: {reason}")
    completed = run_python_with_fast_synth("-c", STRUCTS)
    sent = json.loads(completed.stdout)
    assert sent["stock"]["$jsii.struct"]["data"]["provider"] is None  # jsii sends what is unset as null
    assert sent["fast"] == without_nulls(sent["stock"])
    assert sent["fast"]["$jsii.struct"]["data"]["statement"][1] == {
        "$jsii.struct": {
            "fqn": "@cdktf/provider-aws.dataAwsIamPolicyDocument.DataAwsIamPolicyDocumentStatement",
            "data": {"effect": "Deny", "notActions": ["*"], "resources": ["*"]},
        }
    }


# Runs in node from the project root: its node_modules holds the cdktf that cdktf-cli 0.21.0 pins, the
# release the Python package's kernel loads. Prints which stack traces were captured, as JSON.
CAPTURES = """
const { captureStackTrace: cdktfTrace } = require("cdktf/lib/tokens/private/stack-trace");
const other = {};
Error.captureStackTrace(other);
const thrown = new Error("failed");
console.log(JSON.stringify({
  cdktf: cdktfTrace().length > 0,
  other: other.stack.split("\\n").length > 1,
  error: thrown.stack.split("\\n").length > 1,
}));
"""


def captured_traces(*, prelude: bool) -> dict[str, bool]:
    require(shutil.which("node") is not None, "node is not on PATH")
    script = (f"require({json.dumps(str(KERNEL_PRELUDE))});" if prelude else "") + CAPTURES
    completed = subprocess.run(
        ["node", "-e", script], cwd=fast_synth.PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    # With the prelude, what the kernel prints arrives on stderr, as the relay would send it.
    printed = base64.b64decode(json.loads(completed.stderr)["stdout"]) if prelude else completed.stdout
    traces: dict[str, bool] = json.loads(printed)
    return traces


def test_the_direct_kernel_skips_only_the_creation_traces_of_cdktf_tokens() -> None:
    assert captured_traces(prelude=False) == {"cdktf": True, "other": True, "error": True}
    assert captured_traces(prelude=True) == {"cdktf": False, "other": True, "error": True}


def test_the_local_tooling_enables_fast_synth_before_it_loads_the_kernel() -> None:
    """tools.local imports cdktf as it loads, so it has to turn fast synth on before anything else."""
    reason = fast_synth.unavailable_reason()
    require(reason is None, f"fast synth is unavailable: {reason}")
    completed = run_python_with_fast_synth("-m", "tools.local", "--help")
    assert "fast synth is off" not in completed.stderr, completed.stderr


@pytest.mark.parametrize("module", ["stacks.platform_stack", "stacks.app", "iot_constructs.api"])
def test_every_entry_into_the_platform_turns_fast_synth_on_before_the_bindings_load(module: str) -> None:
    reason = fast_synth.unavailable_reason()
    require(reason is None, f"fast synth is unavailable: {reason}")
    result = run_python_with_fast_synth("-c", f"import {module}, fast_synth; print(fast_synth.active())")
    assert result.stdout.strip() == "True", result.stderr
