"""The platform's stack: its wiring diagram, one environment at a time."""

from typing import Any

from cdktf import S3Backend, TerraformStack
from cdktf_cdktf_provider_aws.provider import (
    AwsProvider,
    AwsProviderAssumeRole,
    AwsProviderDefaultTags,
    AwsProviderEndpoints,
)
from constructs import Construct

from iot_constructs.account import Account
from iot_constructs.alert_topic import AlertTopic
from iot_constructs.context import Context
from iot_constructs.data import Data
from iot_constructs.ingestion import Ingestion
from iot_constructs.kms import Keys
from iot_constructs.network import Network
from iot_constructs.observability import Observability, Watched
from iot_constructs.processing import Processing
from stacks.config import OWNER, PROJECT, EnvironmentConfig
from stacks.emulator import apply_workarounds

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
        account = Account.of(self)
        keys = Keys(self, config.keys, naming=naming, account=account)
        context = Context(naming, account, keys.logs, config.log_retention_days)

        network = Network(self, "network", config.network, context=context)
        data = Data(
            self,
            config.data,
            context=context,
            network=network,
            key=keys.data,
            protected=not config.destroyable,
        )
        ingestion = Ingestion(self, config.ingestion, context=context, network=network, keys=keys, data=data)
        # In the stream's scope, where the topic was first defined, so that its Terraform address stays.
        alerts = AlertTopic(ingestion.stream, config.alerts, context=context, key=keys.alerts)
        processing = Processing(
            self,
            config.processing,
            context=context,
            network=network,
            keys=keys,
            stream=ingestion.stream,
            data=data,
            alerts=alerts,
        )
        ingestion.ingest.deploy_after(*processing.consumers)
        watched = Watched(
            api=ingestion.api,
            stream=ingestion.stream,
            processor=processing.processor,
            functions=[
                ingestion.ingest,
                processing.processor,
                ingestion.query,
                *([data.cache.token_rotator] if data.cache else []),
            ],
            tables=[data.readings, data.aggregates],
            database=data.database,
            worker=processing.worker,
            cache=data.cache,
        )
        Observability(self, "observability", config.alarms, context=context, alerts=alerts, watched=watched)
        if config.emulator_endpoint:
            apply_workarounds(self)

    def _terraform_settings(self, config: EnvironmentConfig) -> None:
        """Provider, state backend and Terraform version; the local environment's point at the emulator."""
        emulator = config.emulator_endpoint
        access: dict[str, Any] = (
            {
                **EMULATOR_CREDENTIALS,
                "skip_credentials_validation": True,
                "skip_requesting_account_id": True,
                "skip_metadata_api_check": "true",
                "s3_use_path_style": True,
                "endpoints": [AwsProviderEndpoints(**{service: emulator for service in EMULATED_SERVICES})],
            }
            if emulator
            # Real accounts: only this environment's, and through its deploy role where it has one.
            else {
                "allowed_account_ids": [config.account_id],
                "assume_role": [
                    AwsProviderAssumeRole(
                        role_arn=config.deploy_role_arn, session_name=f"{PROJECT}-{config.name}"
                    )
                ]
                if config.deploy_role_arn
                else None,
            }
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
            **access,
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
