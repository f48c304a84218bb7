"""`python -m tools.bootstrap ENV` (`make bootstrap ENV=...`): the S3 bucket ENV's Terraform state lives in.

Creates the bucket and its KMS key, or checks them: versioned, encrypted with the key (rotated, bucket keys
on), public access blocked, objects owned by the bucket owner, TLS-only, noncurrent versions expired. Then
prints the backend settings that use it. The bucket must exist before any Terraform state can, so this is
boto3, not Terraform. Every step reads first and writes only what differs: a second run changes nothing.
The local environment's bucket is in the emulator its configuration names (LOCAL_AWS_ENDPOINT).
"""

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from stacks.config import STANDING_ENVIRONMENTS, EnvironmentConfig, environment
from tools.local.emulator import CREDENTIALS

# An overwritten or deleted state stays restorable this long; then S3 deletes that version.
NONCURRENT_VERSION_DAYS = 90
# Parts of an upload that never completed (a Terraform run killed mid-write) are deleted after this.
INCOMPLETE_UPLOAD_DAYS = 7
LIFECYCLE_RULE_ID = "expire-noncurrent-state"
TLS_ONLY_SID = "DenyInsecureTransport"
# moto denies every object request under a bucket policy with a conditional Deny (it cannot evaluate
# aws:SecureTransport, and treats the unmet condition as a denial): Terraform could not write its state.
EMULATOR_DENIES_UNDER_TLS_ONLY_POLICY = (
    f"{TLS_ONLY_SID}, but not on the emulator: moto would refuse every object request, Terraform's included"
)

Outcome = Literal["created", "changed", "as is", "left out"]


class BootstrapError(RuntimeError):
    """A bucket or key that exists but cannot hold the state, and that this command will not change."""


@dataclass(frozen=True)
class Step:
    subject: str
    setting: str
    """What the subject is (or, when left out, why)."""
    outcome: Outcome


@dataclass(frozen=True)
class Bootstrapped:
    steps: tuple[Step, ...]
    key_arn: str


def bootstrap(config: EnvironmentConfig) -> Bootstrapped:
    """Create or check the environment's state bucket and key, step by step."""
    backend = config.backend
    kms, s3 = _client("kms", config), _client("s3", config)
    # The bucket first: a name another account holds stops the command before anything is created.
    bucket_step = _bucket(s3, backend.bucket, backend.region)
    key, key_step = _key(kms, alias=f"alias/{backend.bucket}", bucket=backend.bucket)
    steps = (
        bucket_step,
        key_step,
        _key_rotation(kms, key["KeyId"]),
        _versioning(s3, backend.bucket),
        _encryption(s3, backend.bucket, key["Arn"]),
        _public_access_block(s3, backend.bucket),
        _ownership(s3, backend.bucket),
        Step("bucket policy", EMULATOR_DENIES_UNDER_TLS_ONLY_POLICY, "left out")
        if config.emulator_endpoint
        else _policy(s3, backend.bucket),
        _lifecycle(s3, backend.bucket),
    )
    return Bootstrapped(steps, key["Arn"])


def _client(service: str, config: EnvironmentConfig) -> Any:
    """A client in the state's region: the emulator's for the local environment, else AWS's."""
    emulator = (
        {
            "endpoint_url": config.emulator_endpoint,
            "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }
        if config.emulator_endpoint
        else {}
    )
    return boto3.client(service, region_name=config.backend.region, **emulator)


def _key(kms: Any, alias: str, bucket: str) -> tuple[dict[str, Any], Step]:
    """The bucket's KMS key, found by its alias; created with it when there is none."""
    key: dict[str, Any] | None = _read(kms.describe_key, "NotFoundException", KeyId=alias).get("KeyMetadata")
    if key is None:
        key = kms.create_key(Description=f"Encrypts the Terraform state in s3://{bucket}")["KeyMetadata"]
        kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
        return key, Step("KMS key", alias, "created")
    if key["KeyState"] != "Enabled":
        raise BootstrapError(
            f"the KMS key {alias} ({key['Arn']}) is {key['KeyState']}, so it cannot encrypt the state: "
            "enable it (or cancel its deletion), then run this again"
        )
    return key, Step("KMS key", alias, "as is")


def _key_rotation(kms: Any, key_id: str) -> Step:
    return _setting(
        "key rotation",
        "on",
        kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"],
        True,
        lambda: kms.enable_key_rotation(KeyId=key_id),
    )


def _bucket(s3: Any, name: str, region: str) -> Step:
    try:
        actual_region = s3.head_bucket(Bucket=name)["BucketRegion"]
    except ClientError as error:
        if error.response["Error"]["Code"] == "403":
            raise BootstrapError(
                f"the bucket {name} exists, but these credentials cannot reach it: bucket names are "
                "global, so another account may own it; choose another name with TF_STATE_BUCKET"
            ) from error
        if error.response["Error"]["Code"] != "404":
            raise
        location = (
            {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        )
        s3.create_bucket(Bucket=name, **location)
        return Step("bucket", f"{name} in {region}", "created")
    if actual_region != region:
        raise BootstrapError(
            f"the bucket {name} is in {actual_region}, not in {region} as configured: set "
            f"TF_STATE_REGION={actual_region}, or choose another bucket with TF_STATE_BUCKET"
        )
    return Step("bucket", f"{name} in {region}", "as is")


def _versioning(s3: Any, bucket: str) -> Step:
    return _setting(
        "versioning",
        "Enabled",
        s3.get_bucket_versioning(Bucket=bucket).get("Status"),
        "Enabled",
        lambda: s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}),
    )


def _encryption(s3: Any, bucket: str, key_arn: str) -> Step:
    rules = [
        {
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
            "BucketKeyEnabled": True,
        }
    ]
    current = _read(s3.get_bucket_encryption, "ServerSideEncryptionConfigurationNotFoundError", Bucket=bucket)
    return _setting(
        "default encryption",
        "SSE-KMS with the key, bucket keys on",
        current.get("ServerSideEncryptionConfiguration", {}).get("Rules"),
        rules,
        lambda: s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules}),
    )


def _public_access_block(s3: Any, bucket: str) -> Step:
    blocked = dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )
    current = _read(s3.get_public_access_block, "NoSuchPublicAccessBlockConfiguration", Bucket=bucket)
    return _setting(
        "public access block",
        "all four settings on",
        current.get("PublicAccessBlockConfiguration"),
        blocked,
        lambda: s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=blocked),
    )


def _ownership(s3: Any, bucket: str) -> Step:
    """Bucket owner enforced: ACLs are off, and the bucket's account owns every object in it."""
    rules = [{"ObjectOwnership": "BucketOwnerEnforced"}]
    current = _read(s3.get_bucket_ownership_controls, "OwnershipControlsNotFoundError", Bucket=bucket)
    return _setting(
        "object ownership",
        "BucketOwnerEnforced",
        current.get("OwnershipControls", {}).get("Rules"),
        rules,
        lambda: s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={"Rules": rules}),
    )


def _policy(s3: Any, bucket: str) -> Step:
    """The bucket policy with the TLS-only statement; the other statements in it are kept."""
    policy = json.loads(_read(s3.get_bucket_policy, "NoSuchBucketPolicy", Bucket=bucket).get("Policy", "{}"))
    statement = tls_only_statement(f"arn:{s3.meta.partition}:s3:::{bucket}")
    desired = {
        "Version": "2012-10-17",
        **policy,
        "Statement": _with(policy.get("Statement", []), "Sid", statement),
    }
    return _setting(
        "bucket policy",
        f"{TLS_ONLY_SID}: requests without TLS refused",
        policy,
        desired,
        lambda: s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(desired)),
    )


def _lifecycle(s3: Any, bucket: str) -> Step:
    """The lifecycle configuration with the rule for old state versions; the other rules in it are kept."""
    current = _read(s3.get_bucket_lifecycle_configuration, "NoSuchLifecycleConfiguration", Bucket=bucket)
    rules = current.get("Rules", [])
    desired = _with(rules, "ID", lifecycle_rule())
    return _setting(
        "lifecycle",
        f"noncurrent versions expire after {NONCURRENT_VERSION_DAYS} days, "
        f"incomplete uploads are aborted after {INCOMPLETE_UPLOAD_DAYS}",
        rules,
        desired,
        lambda: s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": desired}
        ),
    )


def tls_only_statement(bucket_arn: str) -> dict[str, Any]:
    """The bucket policy statement that refuses every request to the bucket or its objects without TLS."""
    return {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def lifecycle_rule() -> dict[str, Any]:
    """Old state versions (every apply leaves one, and so does each lock file) are kept for a while, not
    forever."""
    return {
        "ID": LIFECYCLE_RULE_ID,
        "Status": "Enabled",
        "Filter": {},
        "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_VERSION_DAYS},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": INCOMPLETE_UPLOAD_DAYS},
    }


def _setting(
    subject: str, setting: str, current: object, desired: object, write: Callable[[], object]
) -> Step:
    """Write `desired` unless it is `current` already."""
    if current == desired:
        return Step(subject, setting, "as is")
    write()
    return Step(subject, setting, "changed")


def _read(call: Callable[..., dict[str, Any]], absent: str, **arguments: str) -> dict[str, Any]:
    """What a Get or Describe call answers, or {} when AWS answers that there is nothing (error `absent`)."""
    try:
        return call(**arguments)
    except ClientError as error:
        if error.response["Error"]["Code"] != absent:
            raise
        return {}


def _with(items: list[dict[str, Any]], field: str, item: dict[str, Any]) -> list[dict[str, Any]]:
    """`items` with `item` in place of the one with the same `field`, or added: others' items are kept."""
    replaced = [item if other.get(field) == item[field] else other for other in items]
    return replaced if item in replaced else [*replaced, item]


def report(config: EnvironmentConfig, bootstrapped: Bootstrapped) -> str:
    """What each step did, then the backend settings that use the bucket and how to point the stack at it."""
    backend = config.backend
    changes = sum(step.outcome in ("created", "changed") for step in bootstrapped.steps)
    settings = {
        "bucket": backend.bucket,
        "region": backend.region,
        # As stacks/platform_stack.py composes it.
        "key": f"{backend.key_prefix}/{config.name}/terraform.tfstate",
        "encrypt": True,
        "kms_key_id": bootstrapped.key_arn,
        "use_lockfile": True,
    }
    lines = [
        f"The state bucket of {config.name}:",
        *(f"  {step.outcome:<9} {step.subject}: {step.setting}" for step in bootstrapped.steps),
        f"{changes} created or changed." if changes else "Nothing changed.",
        "",
        f"The S3 backend settings of {config.stack_name}:",
        *(f"  {name:<12} = {json.dumps(value)}" for name, value in settings.items()),
        "",
        "stacks/config.py takes them from these, when set (without the key, Terraform writes the state",
        "with SSE-S3, not with it):",
        f"  export TF_STATE_BUCKET={backend.bucket} TF_STATE_REGION={backend.region} "
        f"TF_STATE_KMS_KEY_ID={bootstrapped.key_arn}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bootstrap", description=__doc__.split("\n")[0])
    parser.add_argument(
        "environment",
        choices=STANDING_ENVIRONMENTS,
        help="whose state bucket (a short-lived environment keeps its state in dev's)",
    )
    args = parser.parse_args(argv)
    config = environment(args.environment, os.environ)
    try:
        print(report(config, bootstrap(config)))
    except (BootstrapError, BotoCoreError, ClientError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
