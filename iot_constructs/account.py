from dataclasses import dataclass

from cdktf_cdktf_provider_aws.data_aws_caller_identity import DataAwsCallerIdentity
from cdktf_cdktf_provider_aws.data_aws_partition import DataAwsPartition
from cdktf_cdktf_provider_aws.data_aws_region import DataAwsRegion
from constructs import Construct


@dataclass(frozen=True)
class Account:
    """The AWS account, partition and region a stack deploys to, as Terraform resolves them."""

    id: str
    partition: str
    region: str

    @classmethod
    def of(cls, stack: Construct) -> "Account":
        """Read them with one data source each, which every construct of `stack` then shares."""
        return cls(
            id=DataAwsCallerIdentity(stack, "account").account_id,
            partition=DataAwsPartition(stack, "partition").partition,
            region=DataAwsRegion(stack, "region").name,
        )

    def arn(self, service: str, resource: str) -> str:
        """The ARN of `resource` (for example "subnet/subnet-0abc") of regional `service` in this account."""
        return f"arn:{self.partition}:{service}:{self.region}:{self.id}:{resource}"
