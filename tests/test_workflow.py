"""The GitHub workflows (README, "Workflows"): valid for GitHub Actions, and doing what they promise.

Every property is asserted on the parsed YAML. The conditions that decide whether a pull request's environment
is deployed or destroyed are evaluated on sample events (`Expression`, as much of GitHub's expression language
as they use), and the shell steps that pick environments to destroy run against stand-ins for `aws` and `gh`.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from stacks.config import PROJECT, STANDING_ENVIRONMENTS, environment, short_lived_environment
from tests.conftest import LONGEST_SUFFIX, Synth, require

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = PROJECT_ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml"))
PULL_REQUEST = WORKFLOWS_DIR / "pull-request.yml"
REAL_ENVIRONMENTS = [name for name in STANDING_ENVIRONMENTS if name != "local"]
LABEL = "deploy-preview"
PREVIEW_DESTROY = "./.github/workflows/preview-destroy.yml"
DEPLOY_ENVIRONMENT = "./.github/workflows/deploy-environment.yml"
# A step that changes an environment: cdktf's deploy or destroy, or Terraform's apply.
CHANGES_AN_ENVIRONMENT = re.compile(r"\bcdktf (deploy|destroy)\b|\bterraform\b.*\bapply\b")
PR_NUMBER = "github.event.pull_request.number"
SHA = "${{ github.sha }}"

Job = dict[str, Any]


@cache
def load(name: str) -> dict[str, Any]:
    """A workflow file, parsed (shared between tests: never modify it)."""
    loaded: dict[str, Any] = YAML(typ="safe").load((WORKFLOWS_DIR / name).read_text())
    return loaded


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load(PULL_REQUEST.name)


def steps_using(job: Job, action: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if step.get("uses", "").startswith(f"{action}@")]


def runs(job: Job) -> list[str]:
    return [step.get("run", "") for step in job["steps"]]


def index(job: Job, description: str, matches: Callable[[dict[str, Any]], bool]) -> int:
    """The position of the one step of `job` that `matches`."""
    found = [position for position, step in enumerate(job["steps"]) if matches(step)]
    assert len(found) == 1, f"expected one step that {description}, found {len(found)}"
    return found[0]


def running(command: str) -> Callable[[dict[str, Any]], bool]:
    return lambda step: command in step.get("run", "")


def called(job: Job) -> dict[str, Any] | None:
    """The workflow a job calls (`uses: ./.github/workflows/...`), if it calls one."""
    uses: str = job.get("uses", "")
    return load(Path(uses).name) if uses.startswith("./.github/workflows/") else None


def only_job(workflow: dict[str, Any]) -> Job:
    job: Job
    (job,) = workflow["jobs"].values()
    return job


def jobs_with_steps() -> Iterator[tuple[str, dict[str, Any], Job]]:
    """Every job that runs steps, in every workflow, as ("file:job", workflow, job)."""
    for path in WORKFLOWS:
        workflow = load(path.name)
        for job_id, job in workflow["jobs"].items():
            if "steps" in job:
                yield f"{path.name}:{job_id}", workflow, job


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with each `${{ expression }}` replaced by values[expression] (a KeyError if not given)."""
    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", lambda match: values[match.group(1)], template)


def strings(node: object) -> Iterator[str]:
    """Every key and string value in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


class Expression:
    """GitHub Actions' expression language, as much of it as the workflows' conditions use: literals, property
    paths (with `.*` filters), `!`, `==`, `!=`, `&&`, `||`, parentheses, contains() and fromJSON().

    As GitHub does, `&&` and `||` yield one of their operands, strings compare without case, and a property
    of a missing value is null.
    """

    TOKEN = re.compile(
        r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>\d+)"
        r"|(?P<operator>==|!=|&&|\|\||[!().,*\[\]])|(?P<name>[A-Za-z_][\w-]*))"
    )
    LITERALS: Mapping[str, object] = {"true": True, "false": False, "null": None}

    def __init__(self, source: str) -> None:
        source = source.strip()
        if source.startswith("${{") and source.endswith("}}"):
            source = source[3:-2].strip()
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(source):
            match = self.TOKEN.match(source, position)
            if not match:
                raise ValueError(f"cannot read {source[position:]!r}")
            kind = match.lastgroup
            assert kind
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.position = 0
        self.context: Mapping[str, Any] = {}

    def evaluate(self, context: Mapping[str, Any]) -> object:
        self.context, self.position = context, 0
        value = self.either()
        if self.position != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.position][1]!r}")
        return value

    @staticmethod
    def truthy(value: object) -> bool:
        return not (value is None or value is False or value == "" or (type(value) is int and value == 0))

    @staticmethod
    def equal(left: object, right: object) -> bool:
        if isinstance(left, str) and isinstance(right, str):
            return left.casefold() == right.casefold()
        return left == right

    def accept(self, operator: str) -> bool:
        if self.position < len(self.tokens) and self.tokens[self.position] == ("operator", operator):
            self.position += 1
            return True
        return False

    def expect(self, operator: str) -> None:
        if not self.accept(operator):
            raise ValueError(f"expected {operator!r} at token {self.position}")

    def either(self) -> object:
        value = self.both()
        while self.accept("||"):
            right = self.both()
            value = value if self.truthy(value) else right
        return value

    def both(self) -> object:
        value = self.comparison()
        while self.accept("&&"):
            right = self.comparison()
            value = right if self.truthy(value) else value
        return value

    def comparison(self) -> object:
        left = self.unary()
        if self.accept("=="):
            return self.equal(left, self.unary())
        if self.accept("!="):
            return not self.equal(left, self.unary())
        return left

    def unary(self) -> object:
        if self.accept("!"):
            return not self.truthy(self.unary())
        return self.primary()

    def primary(self) -> object:
        if self.accept("("):
            value = self.either()
            self.expect(")")
            return value
        kind, text = self.tokens[self.position]
        self.position += 1
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "number":
            return int(text)
        if kind != "name":
            raise ValueError(f"unexpected {text!r}")
        if text in self.LITERALS:
            return self.LITERALS[text]
        if self.accept("("):
            arguments = [] if self.accept(")") else self.arguments()
            return self.call(text, arguments)
        return self.path(self.context.get(text))

    def arguments(self) -> list[object]:
        arguments = [self.either()]
        while self.accept(","):
            arguments.append(self.either())
        self.expect(")")
        return arguments

    def path(self, value: object) -> object:
        filtered = False  # after `.*`, each further property applies to every element
        while True:
            if self.accept("."):
                if self.accept("*"):
                    value = self.elements(value)
                    filtered = True
                    continue
                kind, name = self.tokens[self.position]
                self.position += 1
                assert kind == "name", f"expected a property name, got {name!r}"
                if filtered:
                    value = [self.property(item, name) for item in self.elements(value)]
                else:
                    value = self.property(value, name)
            elif self.accept("["):
                key = self.either()
                self.expect("]")
                value = self.property(value, key)
            else:
                return value

    @staticmethod
    def elements(value: object) -> list[object]:
        if isinstance(value, dict):
            return list(value.values())
        return list(value) if isinstance(value, list) else []

    @staticmethod
    def property(value: object, name: object) -> object:
        return value.get(name) if isinstance(value, dict) else None

    def call(self, function: str, arguments: list[object]) -> object:
        name = function.casefold()
        if name == "contains":
            haystack, needle = arguments
            if isinstance(haystack, list):
                return any(self.equal(item, needle) for item in haystack)
            return isinstance(haystack, str) and str(needle).casefold() in haystack.casefold()
        if name == "fromjson":
            (text,) = arguments
            return json.loads(str(text))
        raise ValueError(f"the evaluator does not know {function}()")


def test_the_expression_evaluator_follows_github() -> None:
    context = {"github": {"event": {"labels": [{"name": "A"}, {"name": "b"}], "action": "closed"}}}
    assert Expression("contains(github.event.labels.*.name, 'a')").evaluate(context) is True
    assert Expression("contains(github.event.labels.*.name, 'c')").evaluate(context) is False
    assert Expression("${{ !contains(github.event.labels.*.name, 'c') }}").evaluate(context) is True
    assert Expression("github.event.action == 'closed' && 'yes' || 'no'").evaluate(context) == "yes"
    assert Expression("github.event.action != 'closed' && 'yes' || 'no'").evaluate(context) == "no"
    assert Expression("!github.event.action == false").evaluate(context) is True  # `!` binds tighter
    assert Expression("github.event.missing.name == null").evaluate(context) is True
    assert Expression("fromJSON('[1, 2]')").evaluate(context) == [1, 2]
    with pytest.raises(ValueError):
        Expression("startsWith(github.event.action, 'c')").evaluate(context)


# --- every workflow ---


def test_every_workflow_is_valid_for_github_actions() -> None:
    # check-jsonschema's vendored copy of SchemaStore's workflow schema: no network needed.
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            *("--builtin-schema", "vendor.github-workflows"),
            *map(str, WORKFLOWS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_workflow_sets_up_the_same_tools() -> None:
    required = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())["requires"]["python_version"]
    terraform_versions = {load(path.name).get("env", {}).get("TERRAFORM_VERSION") for path in WORKFLOWS}
    assert len(terraform_versions - {None}) == 1, terraform_versions
    for label, workflow, job in jobs_with_steps():
        for python in steps_using(job, "actions/setup-python"):
            assert python["with"]["python-version"] == required, label
        for node in steps_using(job, "actions/setup-node"):
            assert node["with"] == {"node-version": "20", "cache": "npm"}, label  # package.json: node >= 20
        for terraform in steps_using(job, "hashicorp/setup-terraform"):
            assert terraform["with"]["terraform_version"] == "${{ env.TERRAFORM_VERSION }}", label
            assert "TERRAFORM_VERSION" in workflow["env"], label


def test_no_workflow_holds_or_reads_long_lived_aws_keys() -> None:
    # Neither keys in the environment nor the action's key inputs, nor any secret at all.
    forbidden = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    forbidden += ["aws-access-key-id", "aws-secret-access-key", "aws-session-token", "secrets."]
    for path in WORKFLOWS:
        workflow = load(path.name)
        for text in strings(workflow):
            for word in forbidden:
                assert word.casefold() not in text.casefold(), f"{path.name}: {text!r}"
        for job_id, job in workflow["jobs"].items():
            assert "secrets" not in job, f"{path.name}:{job_id} passes secrets to the workflow it calls"
    for label, _, job in jobs_with_steps():
        for credentials in steps_using(job, "aws-actions/configure-aws-credentials"):
            # A role, assumed with the job's OIDC token, named by a variable (an ARN is no secret).
            assert re.fullmatch(r"\$\{\{ vars\.[A-Z_]+ \}\}", credentials["with"]["role-to-assume"]), label
            assert set(credentials["with"]) <= {
                "role-to-assume",
                "role-session-name",
                "aws-region",
                "role-duration-seconds",
            }, label


def needs_permission(job: Job, permission: str, needed: Callable[[Job], bool]) -> bool:
    """Whether `job` (or, for a job that calls a workflow, any job of that workflow) needs `permission`."""
    workflow = called(job)
    if workflow is None:
        return needed(job)
    return any(inner.get("permissions", {}).get(permission) == "write" for inner in workflow["jobs"].values())


def assumes_a_role(job: Job) -> bool:
    return bool(steps_using(job, "aws-actions/configure-aws-credentials"))


def comments(job: Job) -> bool:
    scripts = [step["with"]["script"] for step in steps_using(job, "actions/github-script")]
    return any("createComment" in script for script in scripts)


def test_only_jobs_that_assume_a_role_get_an_oidc_token() -> None:
    for path in WORKFLOWS:
        workflow = load(path.name)
        assert workflow["permissions"] == {"contents": "read"}, path.name  # the default for every job
        for job_id, job in workflow["jobs"].items():
            granted = job.get("permissions", {}).get("id-token") == "write"
            assert granted == needs_permission(job, "id-token", assumes_a_role), f"{path.name}:{job_id}"


def test_only_jobs_that_post_a_comment_may_write_to_pull_requests() -> None:
    for path in WORKFLOWS:
        for job_id, job in load(path.name)["jobs"].items():
            granted = job.get("permissions", {}).get("pull-requests") == "write"
            assert granted == needs_permission(job, "pull-requests", comments), f"{path.name}:{job_id}"


def test_each_github_environment_names_its_own_deploy_role() -> None:
    # The role is the GitHub environment's variable DEPLOY_ROLE_ARN, and its trust policy admits the OIDC
    # subject repo:<owner>/<repository>:environment:<name>: only that environment's jobs can assume it.
    deploying = [
        (label, job)
        for label, _, job in jobs_with_steps()
        for credentials in steps_using(job, "aws-actions/configure-aws-credentials")
        if credentials["with"]["role-to-assume"] == "${{ vars.DEPLOY_ROLE_ARN }}"
    ]
    assert {label for label, _ in deploying} == {
        "preview.yml:deploy",
        "preview-destroy.yml:destroy",
        "preview-sweep.yml:find",
        "deploy-environment.yml:deploy",
    }
    for label, job in deploying:
        assert job["environment"] in ("preview", "${{ inputs.environment }}"), label
    # Pull requests plan with a read-only role of their own, in no environment.
    (plan,) = steps_using(load(PULL_REQUEST.name)["jobs"]["plan"], "aws-actions/configure-aws-credentials")
    assert plan["with"]["role-to-assume"] == "${{ vars.PLAN_ROLE_ARN }}"


def test_nothing_cancels_an_apply_or_a_destroy_in_progress() -> None:
    changing = {
        label: job
        for label, _, job in jobs_with_steps()
        if any(map(CHANGES_AN_ENVIRONMENT.search, runs(job)))
    }
    assert set(changing) == {
        "preview.yml:deploy",
        "preview-destroy.yml:destroy",
        "deploy-environment.yml:deploy",
    }
    for label, job in changing.items():
        assert job["concurrency"]["cancel-in-progress"] is False, label
    # Nor can another workflow or job cancel them: no group that cancels in progress can take their names.
    cancelling = [
        concurrency["group"]
        for path in WORKFLOWS
        for concurrency in (
            load(path.name).get("concurrency"),
            *(job.get("concurrency") for job in load(path.name)["jobs"].values()),
        )
        if concurrency and concurrency.get("cancel-in-progress") is not False
    ]
    assert cancelling  # pull-request.yml's tests do cancel: the check below is not vacuous
    for group in cancelling:
        for label, job in changing.items():
            fixed, theirs = group.split("${{")[0], job["concurrency"]["group"].split("${{")[0]
            assert not (fixed.startswith(theirs) or theirs.startswith(fixed)), f"{group} vs {label}"


# --- pull request environments ---


def pull_request_event(
    action: str,
    *,
    labels: tuple[str, ...] = (LABEL,),
    label: str | None = None,
    state: str = "open",
    merged: bool = False,
    fork: bool = False,
) -> dict[str, Any]:
    """The `github` context of a pull_request event in acme/iot-platform, for pull request #7."""
    pull_request = {
        "number": 7,
        "state": state,
        "merged": merged,
        "labels": [{"name": name} for name in labels],
        "head": {"repo": {"full_name": f"{'someone' if fork else 'acme'}/iot-platform"}},
    }
    event = {"action": action, "pull_request": pull_request, **({"label": {"name": label}} if label else {})}
    return {"github": {"repository": "acme/iot-platform", "event_name": "pull_request", "event": event}}


# (event, deployed, destroyed)
EVENTS = {
    "label added": (pull_request_event("labeled", label=LABEL), True, False),
    "pushed to, with the label": (pull_request_event("synchronize"), True, False),
    "reopened, with the label": (pull_request_event("reopened"), True, False),
    "pushed to, without the label": (pull_request_event("synchronize", labels=()), False, False),
    "another label added": (pull_request_event("labeled", labels=(LABEL, "bug"), label="bug"), False, False),
    "another label removed": (pull_request_event("unlabeled", label="bug"), False, False),
    "label removed": (pull_request_event("unlabeled", labels=(), label=LABEL), False, True),
    "merged, with the label": (pull_request_event("closed", state="closed", merged=True), False, True),
    "closed unmerged, with the label": (pull_request_event("closed", state="closed"), False, True),
    "closed without the label": (pull_request_event("closed", labels=(), state="closed"), False, False),
    "label added once closed": (pull_request_event("labeled", label=LABEL, state="closed"), False, False),
    "fork, label added": (pull_request_event("labeled", label=LABEL, fork=True), False, False),
    "fork, pushed to": (pull_request_event("synchronize", fork=True), False, False),
    "fork, closed with the label": (pull_request_event("closed", state="closed", fork=True), False, False),
}


def test_preview_runs_on_every_pull_request_event_it_acts_on() -> None:
    triggers = set(load("preview.yml")["on"]["pull_request"]["types"])
    acted_on = {context["github"]["event"]["action"] for context, *_ in EVENTS.values()}
    assert triggers == acted_on


@pytest.mark.parametrize(("context", "deployed", "destroyed"), EVENTS.values(), ids=EVENTS.keys())
def test_a_pull_request_environment_follows_the_label_and_this_repository_only(
    context: dict[str, Any], deployed: bool, destroyed: bool
) -> None:
    jobs = load("preview.yml")["jobs"]
    assert Expression.truthy(Expression(jobs["deploy"]["if"]).evaluate(context)) is deployed
    assert Expression.truthy(Expression(jobs["destroy"]["if"]).evaluate(context)) is destroyed


def test_a_labelled_pull_request_is_deployed_with_its_image_then_smoke_tested_and_reported() -> None:
    deploy = load("preview.yml")["jobs"]["deploy"]
    assert deploy["env"]["ENVIRONMENT_SUFFIX"] == "pr-${{ github.event.pull_request.number }}"
    assert "make setup" in runs(deploy)
    command = (
        "npx cdktf deploy iot-platform-pr-${{ github.event.pull_request.number }} --auto-approve "
        "--outputs-file outputs/pr-${{ github.event.pull_request.number }}.json"
    )
    stack = short_lived_environment("pr-7", {}).stack_name
    assert render(command, {PR_NUMBER: "7"}).split()[3] == stack
    build = index(deploy, "builds the worker image", running("docker build"))
    push = index(deploy, "pushes into an existing repository", lambda step: step.get("id") == "push")
    deployed = index(deploy, "deploys", lambda step: step.get("run") == command)
    # The first deploy creates the repository: the image follows it, and the service is started again.
    first = index(deploy, "pushes after a first deploy", running("--force-new-deployment"))
    assert deploy["steps"][first]["if"] == "steps.push.outputs.repository == 'new'"
    assert "docker push" in deploy["steps"][first]["run"]
    verify = index(
        deploy, "runs the smoke test", running("make verify ENV=pr-${{ github.event.pull_request.number }}")
    )
    (comment,) = steps_using(deploy, "actions/github-script")
    assert build < push < deployed < first < verify < deploy["steps"].index(comment)
    # One comment, updated: found by its marker. Posted whichever step failed, unless cancelled.
    assert comment["if"] == "${{ !cancelled() }}"
    assert comment["env"]["OUTPUTS"] == command.split("--outputs-file ")[1]
    assert comment["env"]["VERIFY"] == "${{ steps.verify.outcome }}"
    script = comment["with"]["script"]
    assert "comment.body.startsWith(env.MARKER)" in script
    assert "updateComment" in script
    assert "createComment" in script


def test_a_closed_or_unlabelled_pull_request_has_its_environment_destroyed() -> None:
    destroy = load("preview.yml")["jobs"]["destroy"]
    assert destroy["uses"] == PREVIEW_DESTROY
    assert destroy["with"]["pull-request"] == "${{ github.event.pull_request.number }}"
    job = only_job(load("preview-destroy.yml"))
    assert job["env"]["ENVIRONMENT_SUFFIX"] == "pr-${{ inputs.pull-request }}"
    check = index(job, "checks the pull request again", lambda step: step.get("id") == "check")
    destroyed = index(
        job,
        "destroys",
        lambda step: (
            step.get("run") == "npx cdktf destroy iot-platform-pr-${{ inputs.pull-request }} --auto-approve"
        ),
    )
    emptied = index(job, "empties the image repository", running("aws ecr batch-delete-image"))
    forgotten = index(job, "deletes the state", running("aws s3 rm"))
    assert check < emptied < destroyed < forgotten
    for position in (emptied, destroyed, forgotten):
        assert job["steps"][position]["if"] == "steps.check.outputs.destroy == 'true'"


def test_the_deploy_and_destroy_of_a_pull_request_share_one_concurrency_group() -> None:
    deploy = load("preview.yml")["jobs"]["deploy"]["concurrency"]["group"]
    destroy = only_job(load("preview-destroy.yml"))["concurrency"]["group"]
    assert render(deploy, {PR_NUMBER: "7"}) == render(destroy, {"inputs.pull-request": "7"})
    assert render(deploy, {PR_NUMBER: "7"}) != render(deploy, {PR_NUMBER: "8"})
    sweep = load("preview-sweep.yml")["jobs"]["destroy"]
    assert sweep["uses"] == PREVIEW_DESTROY  # and so the sweep's destroys join the same groups
    assert sweep["with"]["pull-request"] == "${{ matrix.number }}"
    assert sweep["strategy"]["matrix"]["number"] == "${{ fromJSON(needs.find.outputs.stale) }}"


def test_the_sweep_runs_daily_and_by_hand() -> None:
    triggers = load("preview-sweep.yml")["on"]
    (schedule,) = triggers["schedule"]
    minute, hour, *every = schedule["cron"].split()
    assert every == ["*", "*", "*"]
    assert minute.isdigit()
    assert hour.isdigit()
    assert "workflow_dispatch" in triggers


def fake_commands(directory: Path, pull_requests: Mapping[int, dict[str, Any]], keys: list[str]) -> Path:
    """`aws` and `gh` stand-ins in directory/bin: `aws s3api list-objects-v2` lists `keys` under --prefix,
    `gh api .../pulls/<n> --jq <filter>` applies the filter to pull_requests[n] with jq (404 if absent). Both
    append their arguments to directory/calls."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    calls = directory / "calls"
    (directory / "pulls.json").write_text(json.dumps({str(n): pr for n, pr in pull_requests.items()}))
    (directory / "keys.json").write_text(json.dumps(keys))
    script = f"""#!{sys.executable}
import json, subprocess, sys
from pathlib import Path
directory = Path({str(directory)!r})
with (directory / "calls").open("a") as calls:
    calls.write(json.dumps(sys.argv) + "\\n")
arguments = sys.argv[1:]
if Path(sys.argv[0]).name == "aws":
    if arguments[:2] == ["s3api", "list-objects-v2"]:
        prefix = arguments[arguments.index("--prefix") + 1]
        keys = json.loads((directory / "keys.json").read_text())
        print(json.dumps([key for key in keys if key.startswith(prefix)] or None))
    sys.exit(0)
pulls = json.loads((directory / "pulls.json").read_text())
number = arguments[1].rsplit("/", 1)[1]
if number not in pulls:
    sys.exit("gh: Not Found (HTTP 404)")
jq = arguments[arguments.index("--jq") + 1]
sys.exit(subprocess.run(["jq", "-r", jq], input=json.dumps(pulls[number]), text=True).returncode)
"""
    for name in ("aws", "gh"):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    calls.touch()
    return bin_dir


def run_step(step: dict[str, Any], environ: Mapping[str, str], directory: Path) -> dict[str, str]:
    """Run a step's script as GitHub's `shell: bash` does; return what it wrote to GITHUB_OUTPUT."""
    output = directory / "github_output"
    output.touch()
    subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        env={**os.environ, **environ, "GITHUB_OUTPUT": str(output), "GITHUB_REPOSITORY": "acme/iot-platform"},
        cwd=directory,
        check=True,
    )
    return dict(line.split("=", 1) for line in output.read_text().splitlines())


def pull_request(state: str, *labels: str) -> dict[str, Any]:
    return {"state": state, "labels": [{"name": name} for name in labels]}


def test_the_sweep_picks_the_environments_whose_pull_request_is_not_open_with_the_label(
    tmp_path: Path,
) -> None:
    require(shutil.which("jq") is not None, "jq is not installed")
    sweep = load("preview-sweep.yml")
    backend = short_lived_environment("pr-1", {}).backend
    assert sweep["env"]["STATE_BUCKET"] == backend.bucket
    assert sweep["env"]["STATE_PREFIX"] == backend.key_prefix
    prefix = backend.key_prefix
    keys = [f"{prefix}/pr-{n}/terraform.tfstate" for n in (1, 2, 3, 4, 5)]
    keys += [f"{prefix}/pr-6/terraform.tfstate.tflock", f"{prefix}/pr-demo/terraform.tfstate"]
    keys += [f"{prefix}/dev/terraform.tfstate"]
    pulls = {
        1: pull_request("open", LABEL, "bug"),  # kept
        2: pull_request("closed", LABEL),  # merged or closed while labelled: destroyed
        3: pull_request("open", "bug"),  # label removed: destroyed
        4: pull_request("closed"),  # destroyed
        6: pull_request("closed", LABEL),  # a lock file alone, no state: nothing deployed
    }  # 5: no such pull request: left alone, with a warning
    bin_dir = fake_commands(tmp_path, pulls, keys)
    find = sweep["jobs"]["find"]
    (step,) = [step for step in find["steps"] if step.get("id") == "find"]
    environ = {**sweep["env"], "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    assert json.loads(run_step(step, environ, tmp_path)["stale"]) == [2, 3, 4]
    (listing, *asked) = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
    assert listing[listing.index("--bucket") + 1] == backend.bucket
    # Only the pr-<number> environments with a state are looked up: not a lone lock file, not pr-demo.
    assert [call[2] for call in asked] == [f"repos/acme/iot-platform/pulls/{n}" for n in (1, 2, 3, 4, 5)]
    assert find["outputs"]["stale"] == "${{ steps.find.outputs.stale }}"


@pytest.mark.parametrize(
    ("state", "destroy"),
    [
        (pull_request("open", LABEL), "false"),
        (pull_request("open"), "true"),
        (pull_request("closed", LABEL), "true"),
    ],
)
def test_a_destroy_checks_again_that_the_environment_is_not_wanted(
    tmp_path: Path, state: dict[str, Any], destroy: str
) -> None:
    require(shutil.which("jq") is not None, "jq is not installed")
    job = only_job(load("preview-destroy.yml"))
    (check,) = [step for step in job["steps"] if step.get("id") == "check"]
    bin_dir = fake_commands(tmp_path, {7: state}, [])
    environ = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "NUMBER": "7"}
    assert check["env"]["NUMBER"] == "${{ inputs.pull-request }}"
    assert run_step(check, environ, tmp_path) == {"destroy": destroy}


def test_a_destroy_deletes_the_state_the_sweep_finds(tmp_path: Path, synth: Synth) -> None:
    require(shutil.which("jq") is not None, "jq is not installed")
    job = only_job(load("preview-destroy.yml"))
    (step,) = [step for step in job["steps"] if "aws s3 rm" in step.get("run", "")]
    number = LONGEST_SUFFIX.removeprefix("pr-")
    bin_dir = fake_commands(tmp_path, {}, [])
    (tmp_path / "cdktf.out").symlink_to(synth.outdir)
    environ = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STACK_JSON": render(step["env"]["STACK_JSON"], {"inputs.pull-request": number}),
    }
    run_step(step, environ, tmp_path)
    (removal,) = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
    backend = short_lived_environment(LONGEST_SUFFIX, {}).backend
    sweep = load("preview-sweep.yml")["env"]
    assert removal[1:3] == ["s3", "rm"]
    assert (
        removal[3]
        == f"s3://{sweep['STATE_BUCKET']}/{sweep['STATE_PREFIX']}/{LONGEST_SUFFIX}/terraform.tfstate"
    )
    assert removal[4:] == ["--region", backend.region]


# --- promotion: dev, staging, prod ---


def test_main_is_promoted_to_dev_then_staging_then_prod() -> None:
    promote = load("promote.yml")
    assert promote["on"]["push"]["branches"] == ["main"]
    stages = {job_id: job for job_id, job in promote["jobs"].items() if job.get("uses") == DEPLOY_ENVIRONMENT}
    order: list[str] = []
    while len(order) < len(stages):
        after = order[-1] if order else "image"
        (next_stage,) = [job_id for job_id, job in stages.items() if job["needs"] == after]
        order.append(next_stage)
    assert [stages[job_id]["with"]["environment"] for job_id in order] == REAL_ENVIRONMENTS
    # Each stage runs in the GitHub environment of its name: its approvals, its role.
    deploy = only_job(load("deploy-environment.yml"))
    assert deploy["environment"] == "${{ inputs.environment }}"
    assert load("deploy-environment.yml")["on"]["workflow_call"]["inputs"]["environment"]["required"] is True
    group = deploy["concurrency"]["group"]
    assert len({render(group, {"inputs.environment": name}) for name in REAL_ENVIRONMENTS}) == 3


def test_each_stage_summarizes_its_plan_before_applying_that_plan() -> None:
    deploy = only_job(load("deploy-environment.yml"))
    plan = index(deploy, "plans", lambda step: step.get("run") == "make plan ENV=${{ inputs.environment }}")
    summary = index(deploy, "writes the summary", running('>> "$GITHUB_STEP_SUMMARY"'))
    apply = index(deploy, "applies", lambda step: bool(CHANGES_AN_ENVIRONMENT.search(step.get("run", ""))))
    push = index(deploy, "pushes into an existing repository", lambda step: step.get("id") == "push")
    assert plan < summary < push < apply
    path = deploy["steps"][summary]["env"]["SUMMARY"]
    command = deploy["steps"][apply]["run"]
    for name in REAL_ENVIRONMENTS:
        stack_dir = f"cdktf.out/stacks/{environment(name, {}).stack_name}"
        assert render(path, {"inputs.environment": name}) == f"{stack_dir}/plan.md"
        # tools/local/plan_review.py saves the plan as plan.tfplan beside plan.md: that plan is applied.
        rendered = shlex.split(render(command, {"inputs.environment": name}))
        assert rendered == ["terraform", f"-chdir={stack_dir}", "apply", "-input=false", "plan.tfplan"]


def test_every_stage_pushes_the_one_image_built_for_the_commit() -> None:
    promote = load("promote.yml")
    image = promote["jobs"]["image"]
    (upload,) = steps_using(image, "actions/upload-artifact")
    (download,) = steps_using(only_job(load("deploy-environment.yml")), "actions/download-artifact")
    assert download["with"]["name"] == upload["with"]["name"]
    # dev, the first stage, waits for it (test_main_is_promoted_to_dev_then_staging_then_prod).
    assert promote["jobs"]["dev"]["needs"] == "image"


# --- the worker image ---


def test_the_worker_image_is_built_from_its_dockerfile_and_tagged_by_the_commit() -> None:
    builds = 0
    for label, _, job in jobs_with_steps():
        commands = [
            shlex.split(line) for run in runs(job) for line in run.splitlines() if "docker build" in line
        ]
        for command in commands:
            builds += 1
            assert command[command.index("-f") + 1] == "functions/stream_worker/Dockerfile", label
            assert command[-1] == "functions/", label  # the build context
            assert command[command.index("-t") + 1].endswith(":$WORKER_IMAGE_TAG"), label
        pushes = any("docker push" in run for run in runs(job))
        if commands or pushes:
            assert job["env"]["WORKER_IMAGE_TAG"] == SHA, label
        if pushes:
            assert 'echo "IMAGE=$REGISTRY/$WORKER:$WORKER_IMAGE_TAG" >> "$GITHUB_ENV"' in "\n".join(
                runs(job)
            ), label
    assert builds == 2  # the pull request's environment, and promote.yml's one image


def test_every_plan_and_deploy_asks_for_the_commits_worker_image() -> None:
    # stacks/config.py reads WORKER_IMAGE_TAG: the worker's task definition names the image this commit built.
    planning = [
        label
        for label, _, job in jobs_with_steps()
        if any("make plan" in run or "cdktf deploy" in run for run in runs(job))
    ]
    assert set(planning) == {"pull-request.yml:plan", "preview.yml:deploy", "deploy-environment.yml:deploy"}
    for label, _, job in jobs_with_steps():
        if label in planning:
            assert job["env"]["WORKER_IMAGE_TAG"] == SHA, label


def test_the_worker_repository_is_the_environments() -> None:
    # iot_constructs/worker.py names the repository, cluster and service <project>-worker-<environment>.
    preview = {"preview.yml:deploy": PR_NUMBER, "preview-destroy.yml:destroy": "inputs.pull-request"}
    for label, _, job in jobs_with_steps():
        if label in preview:
            worker = render(job["env"]["WORKER"], {preview[label]: "7"})
            assert (
                worker
                == short_lived_environment("pr-7", {}).naming.name("worker")
                == f"{PROJECT}-worker-pr-7"
            )
    deploy = only_job(load("deploy-environment.yml"))
    for name in REAL_ENVIRONMENTS:
        worker = render(deploy["env"]["WORKER"], {"inputs.environment": name})
        assert worker == environment(name, {}).naming.name("worker")


# --- pull requests: tests and plans ---


def test_pull_requests_run_the_whole_suite_with_the_locked_environment(workflow: dict[str, Any]) -> None:
    assert "pull_request" in workflow["on"]
    test = workflow["jobs"]["test"]
    assert ".ci/run" in [step.get("run") for step in test["steps"]]  # `make setup`, then `make test`
    (python,) = steps_using(test, "actions/setup-python")
    required = tomllib.loads((PROJECT_ROOT / "Pipfile").read_text())["requires"]["python_version"]
    assert python["with"]["python-version"] == required


def test_every_real_environment_is_planned_and_summarized(workflow: dict[str, Any]) -> None:
    plan = workflow["jobs"]["plan"]
    assert plan["needs"] == "test"
    assert plan["strategy"]["matrix"]["environment"] == REAL_ENVIRONMENTS
    runs = [step.get("run", "") for step in plan["steps"]]
    assert "make plan ENV=${{ matrix.environment }}" in runs
    (comment,) = steps_using(plan, "actions/github-script")
    assert comment["env"]["SUMMARY"] == "cdktf.out/stacks/iot-platform-${{ matrix.environment }}/plan.md"


def test_plans_run_with_an_assumed_role_and_no_stored_keys(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    plan = workflow["jobs"]["plan"]
    assert plan["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    (credentials,) = steps_using(plan, "aws-actions/configure-aws-credentials")
    assert set(credentials["with"]) == {"role-to-assume", "role-session-name", "aws-region"}
    assert "secrets." not in PULL_REQUEST.read_text()


def test_every_workflow_works_in_the_environments_region() -> None:
    regions = {environment(name, {}).region for name in REAL_ENVIRONMENTS}
    regions.add(short_lived_environment("pr-1", {}).region)
    for label, workflow, job in jobs_with_steps():
        for credentials in steps_using(job, "aws-actions/configure-aws-credentials"):
            region = render(
                credentials["with"]["aws-region"],
                {"env.AWS_REGION": workflow.get("env", {}).get("AWS_REGION", "")},
            )
            assert {region} == regions, label
