"""What AWS services do with a role on its behalf, and the documentation that requires each permission.

The one table of permissions no code of ours calls: Lambda creating network interfaces and reading an event
source, ECS pulling images and secrets, services using a customer managed key when the code calls them.
Everything else a role needs is recorded from the code (recording.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Need:
    when: str
    actions: tuple[str, ...]
    on: str
    url: str


NEEDS: dict[str, Need] = {
    "lambda-vpc-interfaces": Need(
        "a function with vpc_config",
        (
            "ec2:CreateNetworkInterface",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        ),
        "its network interfaces (network-interface/*)",
        "https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions",
    ),
    "lambda-vpc-placement": Need(
        "a function with vpc_config",
        ("ec2:CreateNetworkInterface",),
        "its subnets and security groups",
        "https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions",
    ),
    "lambda-vpc-describe": Need(
        "a function with vpc_config",
        ("ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"),
        "*",
        "https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions",
    ),
    "lambda-tracing": Need(
        "a function with active tracing",
        ("xray:PutTraceSegments", "xray:PutTelemetryRecords"),
        "*",
        "https://docs.aws.amazon.com/lambda/latest/dg/services-xray.html",
    ),
    "lambda-logs": Need(
        "every function",
        ("logs:CreateLogStream", "logs:PutLogEvents"),
        "its log group (logging_config, else /aws/lambda/<name>)",
        "https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs.html",
    ),
    "lambda-environment-key": Need(
        "a function with kms_key_arn",
        ("kms:Decrypt",),
        "that key",
        "https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars-encryption.html",
    ),
    "lambda-dead-letter-queue": Need(
        "a function with dead_letter_config on a queue",
        ("sqs:SendMessage",),
        "that queue",
        "https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html",
    ),
    "kinesis-event-source": Need(
        "an event source mapping on a Kinesis stream",
        (
            "kinesis:DescribeStream",
            "kinesis:DescribeStreamSummary",
            "kinesis:GetRecords",
            "kinesis:GetShardIterator",
            "kinesis:ListShards",
        ),
        "the stream",
        "https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-create.html",
    ),
    "kinesis-event-source-fan-out": Need(
        "an event source mapping on an enhanced fan-out consumer",
        ("kinesis:SubscribeToShard", "kinesis:DescribeStreamConsumer"),
        "the consumer",
        "https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-create.html",
    ),
    "event-source-on-failure": Need(
        "an event source mapping with an on-failure destination queue",
        ("sqs:SendMessage",),
        "that queue",
        "https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html",
    ),
    "ecs-registry-login": Need(
        "a task whose image is in ECR (execution role)",
        ("ecr:GetAuthorizationToken",),
        "*",
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_execution_IAM_role.html",
    ),
    "ecs-image-pull": Need(
        "a task whose image is in ECR (execution role)",
        ("ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"),
        "the repository",
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_execution_IAM_role.html",
    ),
    "ecs-awslogs": Need(
        "a container with the awslogs log driver (execution role)",
        ("logs:CreateLogStream", "logs:PutLogEvents"),
        "its log group",
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_execution_IAM_role.html",
    ),
    "ecs-secrets": Need(
        "a container secret from Secrets Manager (execution role)",
        ("secretsmanager:GetSecretValue",),
        "the secret",
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/secrets-envvar-secrets-manager.html",
    ),
    "rds-iam-auth": Need(
        "a DATABASE_USER on the stack's PostgreSQL in its settings (IAM authentication: the token is signed "
        "locally, so no call shows in the recording)",
        ("rds-db:connect",),
        "that database user (dbuser:<resource id>/<user>)",
        "https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.IAMPolicy.html",
    ),
    "efs-mount": Need(
        "an EFS volume with IAM authorization (task role)",
        ("elasticfilesystem:ClientMount",),
        "the file system, through its access point",
        "https://docs.aws.amazon.com/efs/latest/ug/iam-access-control-nfs-efs.html",
    ),
    "efs-write": Need(
        "a writable mount of such a volume (task role)",
        ("elasticfilesystem:ClientWrite",),
        "the file system, through its access point",
        "https://docs.aws.amazon.com/efs/latest/ug/iam-access-control-nfs-efs.html",
    ),
    "kinesis-key-write": Need(
        "PutRecord(s) to a stream encrypted with a customer managed key",
        ("kms:GenerateDataKey",),
        "the stream's key",
        "https://docs.aws.amazon.com/streams/latest/dev/permissions-user-key-KMS.html",
    ),
    "kinesis-key-read": Need(
        "GetRecords from such a stream (also by an event source mapping)",
        ("kms:Decrypt",),
        "the stream's key",
        "https://docs.aws.amazon.com/streams/latest/dev/permissions-user-key-KMS.html",
    ),
    "dynamodb-key": Need(
        "reading or writing items of a table encrypted with a customer managed key",
        ("kms:Decrypt",),
        "the table's key",
        "https://docs.aws.amazon.com/kms/latest/developerguide/services-dynamodb.html",
    ),
    "sns-key": Need(
        "publishing to a topic encrypted with a customer managed key",
        ("kms:GenerateDataKey", "kms:Decrypt"),
        "the topic's key",
        "https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html",
    ),
    "sqs-key": Need(
        "sending to a queue encrypted with a customer managed key",
        ("kms:GenerateDataKey", "kms:Decrypt"),
        "the queue's key",
        "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-key-management.html",
    ),
    "secret-key-read": Need(
        "reading a secret encrypted with a customer managed key",
        ("kms:Decrypt",),
        "the secret's key",
        "https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html",
    ),
    "secret-key-write": Need(
        "writing a version of such a secret",
        ("kms:GenerateDataKey",),
        "the secret's key",
        "https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html",
    ),
}

# Which calls make a service use the resource's key: (resource type, IAM action) -> NEEDS key.
KEY_USE: dict[tuple[str, str], str] = {
    ("aws_kinesis_stream", "kinesis:PutRecord"): "kinesis-key-write",
    ("aws_kinesis_stream", "kinesis:PutRecords"): "kinesis-key-write",
    ("aws_kinesis_stream", "kinesis:GetRecords"): "kinesis-key-read",
    ("aws_sns_topic", "sns:Publish"): "sns-key",
    ("aws_sqs_queue", "sqs:SendMessage"): "sqs-key",
    ("aws_secretsmanager_secret", "secretsmanager:GetSecretValue"): "secret-key-read",
    ("aws_secretsmanager_secret", "secretsmanager:PutSecretValue"): "secret-key-write",
    # The master user's secret that RDS manages, named by its database.
    ("aws_db_instance", "secretsmanager:GetSecretValue"): "secret-key-read",
    ("aws_rds_cluster", "secretsmanager:GetSecretValue"): "secret-key-read",
    **{
        ("aws_dynamodb_table", f"dynamodb:{action}"): "dynamodb-key"
        for action in (
            "BatchGetItem",
            "BatchWriteItem",
            "ConditionCheckItem",
            "DeleteItem",
            "GetItem",
            "PutItem",
            "Query",
            "Scan",
            "UpdateItem",
        )
    },
}
# Where each resource type names its key.
KEY_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "aws_kinesis_stream": ("kms_key_id",),
    "aws_dynamodb_table": ("server_side_encryption", "kms_key_arn"),
    "aws_sns_topic": ("kms_master_key_id",),
    "aws_sqs_queue": ("kms_master_key_id",),
    "aws_secretsmanager_secret": ("kms_key_id",),
    # For reading the master user's secret, which is all the principals here do with a database's key.
    "aws_db_instance": ("master_user_secret_kms_key_id",),
    "aws_rds_cluster": ("master_user_secret_kms_key_id",),
}
