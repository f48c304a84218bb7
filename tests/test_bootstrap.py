"""`make bootstrap` (tools/bootstrap.py) against a moto server: the state bucket it makes, keeps and repairs.

The local environment reaches the server through LOCAL_AWS_ENDPOINT, as it does in use; the others through
boto3's AWS_ENDPOINT_URL, so that they run exactly as they would against AWS.
"""

import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from stacks.config import StateBackend, environment
from tools.bootstrap import INCOMPLETE_UPLOAD_DAYS, LIFECYCLE_RULE_ID, NONCURRENT_VERSION_DAYS, main
from tools.local.emulator import CREDENTIALS, Emulator, start

BUCKET_NUMBERS = itertools.count()
OUR_RULE = {
    "ID": LIFECYCLE_RULE_ID,
    "Status": "Enabled",
    "Filter": {},
    "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_VERSION_DAYS},
    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": INCOMPLETE_UPLOAD_DAYS},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = start(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(autouse=True)
def aws(server: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The server, with every environment pointed at it, and a state bucket name of the test's own (the
    tests share the server: resetting moto takes seconds)."""
    monkeypatch.setenv("LOCAL_AWS_ENDPOINT", server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("TF_STATE_REGION", raising=False)
    monkeypatch.setenv("TF_STATE_BUCKET", f"iot-state-{next(BUCKET_NUMBERS)}")
    return server


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every AWS operation called from now on, by the command or by the test."""
    session = boto3.Session()
    called: list[str] = []
    session.events.register("before-call", lambda model, **_: called.append(model.name))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    return called


def bootstrap(capsys: pytest.CaptureFixture[str], name: str) -> str:
    """Run `python -m tools.bootstrap <name>`; what it prints."""
    main([name])
    return capsys.readouterr().out


def backend(name: str) -> StateBackend:
    return environment(name, os.environ).backend


def outcomes(output: str) -> dict[str, str]:
    """Each step's subject and what the command did to it."""
    steps = re.findall(r"^  (created|changed|as is|left out) +([^:]+):", output, re.MULTILINE)
    return {subject: outcome for outcome, subject in steps}


def printed_settings(output: str) -> dict[str, Any]:
    return {name: json.loads(value) for name, value in re.findall(r"^  (\w+) += (.+)$", output, re.MULTILINE)}


def state_bucket(aws: Emulator, backend: StateBackend) -> dict[str, Any]:
    """Everything the command sets, as the emulator answers for it."""
    s3, kms, bucket = aws.client("s3", backend.region), aws.client("kms", backend.region), backend.bucket
    key = kms.describe_key(KeyId=f"alias/{bucket}")["KeyMetadata"]
    return {
        "region": s3.head_bucket(Bucket=bucket)["BucketRegion"],
        "key": key["Arn"],
        "key state": key["KeyState"],
        "key rotation": kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"],
        "versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status"),
        "encryption": s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"],
        "public access block": s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
        "ownership": s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"],
        "policy": json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]),
        "lifecycle": s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
    }


def tls_only(bucket: str) -> dict[str, Any]:
    """The statement that makes a bucket TLS-only."""
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def test_a_first_run_creates_the_bucket_and_key_with_every_property(
    aws: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    output = bootstrap(capsys, "dev")

    state = backend("dev")
    key = aws.client("kms", state.region).describe_key(KeyId=f"alias/{state.bucket}")["KeyMetadata"]["Arn"]
    assert state_bucket(aws, state) == {
        "region": "us-east-1",
        "key": key,
        "key state": "Enabled",
        "key rotation": True,
        "versioning": "Enabled",
        "encryption": [
            {
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
                "BucketKeyEnabled": True,
            }
        ],
        "public access block": {
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
        "ownership": [{"ObjectOwnership": "BucketOwnerEnforced"}],
        "policy": {"Version": "2012-10-17", "Statement": [tls_only(state.bucket)]},
        "lifecycle": [OUR_RULE],
    }
    assert outcomes(output) == {
        "bucket": "created",
        "KMS key": "created",
        "key rotation": "changed",
        "versioning": "changed",
        "default encryption": "changed",
        "public access block": "changed",
        "object ownership": "changed",
        "bucket policy": "changed",
        "lifecycle": "changed",
    }
    assert "9 created or changed." in output


def test_a_second_run_changes_nothing(
    aws: Emulator, capsys: pytest.CaptureFixture[str], calls: list[str]
) -> None:
    bootstrap(capsys, "dev")
    kms = aws.client("kms", "us-east-1")
    before = state_bucket(aws, backend("dev")), kms.list_keys()["Keys"]
    calls.clear()

    output = bootstrap(capsys, "dev")

    writes = [call for call in calls if not call.startswith(("Get", "Head", "Describe"))]
    assert writes == []
    assert set(outcomes(output).values()) == {"as is"}
    assert "Nothing changed." in output
    assert (state_bucket(aws, backend("dev")), kms.list_keys()["Keys"]) == before


def _key_id(kms: Any, bucket: str) -> str:
    key_id: str = kms.describe_key(KeyId=f"alias/{bucket}")["KeyMetadata"]["KeyId"]
    return key_id


# One property lost after the first run, by the subject of the step that restores it.
DAMAGE: dict[str, Callable[[Any, Any, str], object]] = {
    "key rotation": lambda s3, kms, bucket: kms.disable_key_rotation(KeyId=_key_id(kms, bucket)),
    "versioning": lambda s3, kms, bucket: s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}
    ),
    "default encryption": lambda s3, kms, bucket: s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    ),
    "public access block": lambda s3, kms, bucket: s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": True,
        },
    ),
    "object ownership": lambda s3, kms, bucket: s3.put_bucket_ownership_controls(
        Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "ObjectWriter"}]}
    ),
    "bucket policy": lambda s3, kms, bucket: s3.delete_bucket_policy(Bucket=bucket),
    "lifecycle": lambda s3, kms, bucket: s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [{**OUR_RULE, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]
        },
    ),
}


@pytest.mark.parametrize("subject", DAMAGE)
def test_a_lost_property_is_restored_and_reported(
    subject: str, aws: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    state = backend("dev")
    bootstrap(capsys, "dev")
    before = state_bucket(aws, state)
    DAMAGE[subject](aws.client("s3", state.region), aws.client("kms", state.region), state.bucket)

    output = bootstrap(capsys, "dev")

    assert {step: outcome for step, outcome in outcomes(output).items() if outcome != "as is"} == {
        subject: "changed"
    }
    assert "1 created or changed." in output
    assert state_bucket(aws, state) == before


def test_the_policy_statements_and_lifecycle_rules_of_others_are_kept(
    aws: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    state = backend("dev")
    s3 = aws.client("s3", state.region)
    s3.create_bucket(Bucket=state.bucket)
    plan_role_reads = {
        "Sid": "PlanRoleReads",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:role/plan"},
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{state.bucket}/*",
    }
    s3.put_bucket_policy(
        Bucket=state.bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [plan_role_reads]})
    )
    old_plans = {
        "ID": "old-plans",
        "Status": "Enabled",
        "Filter": {"Prefix": "plans/"},
        "Expiration": {"Days": 7},
    }
    s3.put_bucket_lifecycle_configuration(Bucket=state.bucket, LifecycleConfiguration={"Rules": [old_plans]})

    first = bootstrap(capsys, "dev")
    second = bootstrap(capsys, "dev")

    assert outcomes(first)["bucket"] == "as is"
    assert json.loads(s3.get_bucket_policy(Bucket=state.bucket)["Policy"])["Statement"] == [
        plan_role_reads,
        tls_only(state.bucket),
    ]
    assert s3.get_bucket_lifecycle_configuration(Bucket=state.bucket)["Rules"] == [old_plans, OUR_RULE]
    assert "Nothing changed." in second


def test_the_local_bucket_is_completed_on_the_emulator_without_the_tls_only_policy(
    aws: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    state = backend("local")
    aws.create_state_bucket(state)  # as `python -m tools.local emulator` and `make deploy` do

    output = bootstrap(capsys, "local")

    assert outcomes(output) == {
        "bucket": "as is",
        "KMS key": "created",
        "key rotation": "changed",
        "versioning": "changed",
        "default encryption": "changed",
        "public access block": "changed",
        "object ownership": "changed",
        "bucket policy": "left out",
        "lifecycle": "changed",
    }
    s3 = aws.client("s3", state.region)
    with pytest.raises(ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=state.bucket)
    # Terraform can still write its state, which the bucket encrypts with its key.
    s3.put_object(Bucket=state.bucket, Key="iot-platform/local/terraform.tfstate", Body=b"{}")
    written = s3.head_object(Bucket=state.bucket, Key="iot-platform/local/terraform.tfstate")
    assert (written["ServerSideEncryption"], written["SSEKMSKeyId"]) == (
        "aws:kms",
        printed_settings(output)["kms_key_id"],
    )


def test_the_emulator_still_refuses_object_requests_under_a_tls_only_policy(aws: Emulator) -> None:
    """Why the local bucket has no TLS-only policy. When this fails, moto evaluates the condition: give the
    local bucket the policy too (drop EMULATOR_DENIES_UNDER_TLS_ONLY_POLICY)."""
    s3, bucket = aws.client("s3", "us-east-1"), backend("dev").bucket
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [tls_only(bucket)]})
    )
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="state", Body=b"{}")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_the_printed_backend_settings_are_the_configured_ones(
    aws: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_STATE_BUCKET", "acme-iot-state")
    monkeypatch.setenv("TF_STATE_REGION", "eu-west-1")
    state = backend("staging")

    output = bootstrap(capsys, "staging")

    key = aws.client("kms", "eu-west-1").describe_key(KeyId="alias/acme-iot-state")["KeyMetadata"]["Arn"]
    assert (state.bucket, state.region) == ("acme-iot-state", "eu-west-1")
    assert printed_settings(output) == {
        "bucket": state.bucket,
        "region": state.region,
        "key": f"{state.key_prefix}/staging/terraform.tfstate",
        "encrypt": True,
        "kms_key_id": key,
        "use_lockfile": True,
    }
    assert "export TF_STATE_BUCKET=acme-iot-state TF_STATE_REGION=eu-west-1" in output
    # Outside us-east-1 the bucket needs its location: created without it, it would not be in eu-west-1.
    assert aws.client("s3", "eu-west-1").head_bucket(Bucket=state.bucket)["BucketRegion"] == "eu-west-1"
    assert key.startswith("arn:aws:kms:eu-west-1:")


def test_a_bucket_in_another_region_is_an_error_before_a_key_is_created(
    aws: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = backend("dev").bucket
    aws.client("s3", "us-east-1").create_bucket(Bucket=bucket)
    monkeypatch.setenv("TF_STATE_REGION", "eu-west-1")

    with pytest.raises(SystemExit) as error:
        main(["dev"])

    assert "is in us-east-1, not in eu-west-1 as configured" in str(error.value)
    with pytest.raises(ClientError, match="NotFoundException"):
        aws.client("kms", "eu-west-1").describe_key(KeyId=f"alias/{bucket}")


def test_a_disabled_key_is_an_error(aws: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = backend("dev").bucket
    bootstrap(capsys, "dev")
    kms = aws.client("kms", "us-east-1")
    kms.disable_key(KeyId=_key_id(kms, bucket))

    with pytest.raises(SystemExit) as error:
        main(["dev"])

    assert f"the KMS key alias/{bucket}" in str(error.value)
    assert "is Disabled" in str(error.value)


def test_an_unknown_environment_is_refused_before_any_aws_call(
    capsys: pytest.CaptureFixture[str], calls: list[str]
) -> None:
    with pytest.raises(SystemExit) as error:
        main(["qa"])

    assert error.value.code == 2
    assert "invalid choice: 'qa' (choose from 'dev', 'staging', 'prod', 'local')" in capsys.readouterr().err
    assert calls == []
