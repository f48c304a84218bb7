from typing import Any

from cdktf import S3Backend, TerraformOutput, TerraformStack
from cdktf_cdktf_provider_aws.provider import AwsProvider, AwsProviderDefaultTags, AwsProviderEndpoints
from constructs import Construct

from iot_constructs.kms import EncryptionKey, EncryptionKeyProps
from iot_constructs.network import Network, NetworkProps
from stacks.config import OWNER, PROJECT, EnvironmentConfig

# Every AWS service the platform calls; in the local environment each one goes to the emulator.
# Spelled as AwsProviderEndpoints' arguments ("lambda_" is the provider's "lambda").
EMULATED_SERVICES = (
    "apigateway",
    "applicationautoscaling",
    "cloudwatch",
    "dynamodb",
    "ec2",
    "ecr",
    "ecs",
    "efs",
    "elasticache",
    "iam",
    "kinesis",
    "kms",
    "lambda_",
    "logs",
    "rds",
    "s3",
    "secretsmanager",
    "sns",
    "sqs",
    "ssm",
    "sts",
    "wafv2",
)
# moto accepts any credentials; these fixed ones are its documented test values, not secrets.
EMULATOR_CREDENTIALS = {"access_key": "testing", "secret_key": "testing"}


class PlatformStack(TerraformStack):
    """The whole platform for one environment, named `iot-platform-<environment>`."""

    def __init__(self, scope: Construct, config: EnvironmentConfig) -> None:
        super().__init__(scope, config.stack_name)
        self._terraform_settings(config)
        naming = config.naming

        logs_key = EncryptionKey(
            self,
            "logs-key",
            EncryptionKeyProps(
                alias=naming.name("logs"),
                description=f"Encrypts the log groups of {config.stack_name}",
                deletion_window_days=config.kms_deletion_window_days,
                cloudwatch_logs=True,
            ),
        )
        network = Network(
            self,
            "network",
            NetworkProps(
                naming=naming,
                cidr=config.network.cidr,
                availability_zones=config.availability_zones,
                nat_mode=config.network.nat_mode,
                interface_endpoints=config.network.interface_endpoints,
                flow_log_key=logs_key,
                flow_log_retention_days=config.log_retention_days,
            ),
        )

        TerraformOutput(self, "vpc_id", value=network.vpc_id, description="The platform's VPC")
        TerraformOutput(
            self,
            "private_subnet_ids",
            value=network.private_subnet_ids,
            description="Subnets with NAT egress, for compute",
        )
        TerraformOutput(
            self,
            "isolated_subnet_ids",
            value=network.isolated_subnet_ids,
            description="Subnets without internet routes, for data stores",
        )

    def _terraform_settings(self, config: EnvironmentConfig) -> None:
        """Provider, state backend and Terraform version: the only place the emulator is mentioned."""
        emulator = config.emulator_endpoint
        emulator_settings: dict[str, Any] = (
            {
                **EMULATOR_CREDENTIALS,
                "skip_credentials_validation": True,
                "skip_requesting_account_id": True,
                "skip_metadata_api_check": "true",
                "s3_use_path_style": True,
                "endpoints": [AwsProviderEndpoints(**{service: emulator for service in EMULATED_SERVICES})],
            }
            if emulator
            else {}
        )
        AwsProvider(
            self,
            "aws",
            region=config.region,
            default_tags=[
                AwsProviderDefaultTags(
                    tags={
                        "project": PROJECT,
                        "environment": config.name,
                        "owner": OWNER,
                        "managed-by": "cdktf",
                    }
                )
            ],
            **emulator_settings,
        )

        backend = config.backend
        emulator_backend: dict[str, Any] = (
            {
                **EMULATOR_CREDENTIALS,
                "endpoints": {"s3": emulator, "sts": emulator},
                "use_path_style": True,
                "skip_credentials_validation": True,
                "skip_requesting_account_id": True,
                "skip_metadata_api_check": True,
                "skip_s3_checksum": True,
            }
            if emulator
            else {}
        )
        S3Backend(
            self,
            bucket=backend.bucket,
            region=backend.region,
            key=f"{backend.key_prefix}/{config.name}/terraform.tfstate",
            encrypt=True,
            kms_key_id=backend.kms_key_id,
            **emulator_backend,
        )
        # Native S3 state locking (Terraform >= 1.10); cdktf 0.21's S3Backend predates the argument.
        self.add_override("terraform.backend.s3.use_lockfile", True)
        self.add_override("terraform.required_version", ">= 1.10")
