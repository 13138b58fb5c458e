"""The EC2 adapter, ``AwsCloud``: one-time spot instances, or on-demand ones, through boto3.

Instances are launched with ``RunInstances`` (a spot one with one-time market options, so it
is terminated, not stopped, when AWS reclaims the capacity; an on-demand one without any market
options, which is how EC2 buys on demand), found again by their idempotency token, read with
``DescribeInstances`` (``InstanceLifecycle: spot`` marks a spot instance), terminated with
``TerminateInstances``. The two-minute interruption warnings come from
an SQS queue per region that an EventBridge rule feeds (``AWS_INTERRUPTION_QUEUE_URLS``).
``AWS_EC2_ENDPOINT_URL`` points EC2 at another endpoint (a VPC endpoint, or moto in tests).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import botocore.loaders
import botocore.session
from botocore.config import Config
from django.conf import settings

from arbitrage.env import ConfigError
from placement.clouds import base, config
from placement.clouds.aws.errors import PROVIDER, normalised
from placement.clouds.aws.interruptions import interruption_warning
from placement.clouds.base import (
    CloudAdapter,
    InstanceInfo,
    InstanceNotFound,
    InstanceRequest,
    InstanceState,
    InterruptionWarning,
    Market,
    PermanentCloudError,
)

logger = logging.getLogger("placement.clouds.aws")

#: Tag holding the create's idempotency token: a retried create finds its instance by it.
IDEMPOTENCY_TAG = "arbitrage-idempotency-token"
#: The token is sent as ``ClientToken``, which EC2 limits to 64 ASCII characters.
MAX_CLIENT_TOKEN_LENGTH = 64
#: Every state but ``terminated``: what ``list_managed_instances`` asks for.
LIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
DESCRIBE_BATCH = 1000  # the most instance ids DescribeInstances takes in one call

_STATES = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "shutting-down": InstanceState.STOPPING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPING,
    "terminated": InstanceState.TERMINATED,
}
# Why an instance ended without anybody asking: it ended of an error, not by request.
_FAILURE_REASONS = frozenset(
    {
        "Server.InternalError",
        "Server.InsufficientInstanceCapacity",
        "Client.InternalError",
        "Client.VolumeLimitExceeded",
        "Client.InvalidSnapshot.NotFound",
    }
)


def instance_state(state_name: str, reason_code: str, reason_message: str = "") -> InstanceState:
    """Our state for an EC2 instance state and its ``StateReason``.

    * ``pending``/``running`` are PENDING/RUNNING.
    * Any instance on its way out (``shutting-down``, ``stopping``, ``stopped``,
      ``terminated``) because AWS reclaimed the spot capacity
      (``Server.SpotInstanceTermination``, ``Server.SpotInstanceShutdown``, ...)
      is PREEMPTED.
    * ``shutting-down`` and ``stopping`` are STOPPING. So is ``stopped``: a
      one-time spot instance cannot be stopped (ours are interrupted by
      termination), so a stopped one was stopped by hand; it still exists, is not
      serving, and ``list_managed_instances`` keeps reporting it until terminated.
    * ``terminated`` is TERMINATED, or FAILED when it ended of an error
      (``Server.InternalError``, ``Client.VolumeLimitExceeded``, ...).
    """
    state = _STATES.get(state_name, InstanceState.PENDING)
    if state in (InstanceState.STOPPING, InstanceState.TERMINATED):
        if reason_code.startswith("Server.Spot") or (not reason_code and "spot" in reason_message.lower()):
            return InstanceState.PREEMPTED
        if state is InstanceState.TERMINATED and reason_code in _FAILURE_REASONS:
            return InstanceState.FAILED
    return state


# Every adapter's session reads AWS's service models through this one loader, which caches
# them once parsed (the EC2 model takes a second or more to load).
_loader_lock = threading.Lock()
_loaders: list[botocore.loaders.Loader] = []


def _new_session() -> botocore.session.Session:
    """A botocore session of its own (credentials resolved at first use) sharing the model cache."""
    with _loader_lock:
        if not _loaders:
            _loaders.append(botocore.loaders.create_loader())
        session = botocore.session.get_session()
        session.register_component("data_loader", _loaders[0])
    return session


class AwsCloud(CloudAdapter):
    """EC2 one-time spot or on-demand instances, one EC2 client per region (created on first use, then reused).

    ``ami_ids`` and ``security_group_ids`` are per region, ``subnet_ids`` per
    availability zone, ``interruption_queue_urls`` per region (the SQS queue of
    interruption warnings). ``address`` says which address ``InstanceInfo.public_ip``
    holds: the instance's ``public`` one, or its ``private`` one (for a control
    plane inside the same network). ``timeout`` bounds connecting and each read,
    in seconds; botocore retries a failed call up to ``max_attempts`` in all.
    """

    provider = PROVIDER
    #: How long one ``ReceiveMessage`` waits for interruption warnings (SQS long polling).
    interruption_wait_seconds = 1

    def __init__(
        self,
        *,
        endpoint_url: str = "",
        ami_ids: Mapping[str, str] | None = None,
        security_group_ids: Mapping[str, str] | None = None,
        subnet_ids: Mapping[str, str] | None = None,
        key_name: str = "",
        instance_profile: str = "",
        interruption_queue_urls: Mapping[str, str] | None = None,
        address: str = "public",
        timeout: float = 30,
        max_attempts: int = 3,
    ) -> None:
        if address not in ("public", "private"):
            raise ValueError(f"address must be 'public' or 'private', not {address!r}")
        self.endpoint_url = endpoint_url or None
        self.ami_ids = dict(ami_ids or {})
        self.security_group_ids = dict(security_group_ids or {})
        self.subnet_ids = dict(subnet_ids or {})
        self.key_name = key_name
        self.instance_profile = instance_profile
        self.interruption_queue_urls = dict(interruption_queue_urls or {})
        self.address = address
        self.timeout = timeout
        self.config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},  # the first attempt included
        )
        # Sessions are not safe to create clients from in parallel: clients are made under the lock.
        self._session = _new_session()
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, provider: str) -> AwsCloud:
        """The adapter configured by the ``AWS_*`` settings; the ``aws`` backend runs only provider ``aws``."""
        if provider != PROVIDER:
            raise ConfigError("CLOUD_BACKENDS", f"the 'aws' backend can only run provider aws, not {provider!r}")
        return cls(
            endpoint_url=settings.AWS_EC2_ENDPOINT_URL,
            ami_ids=settings.AWS_AMI_IDS,
            security_group_ids=settings.AWS_SECURITY_GROUP_IDS,
            subnet_ids=settings.AWS_SUBNET_IDS,
            key_name=settings.AWS_KEY_NAME,
            instance_profile=settings.AWS_IAM_INSTANCE_PROFILE,
            interruption_queue_urls=settings.AWS_INTERRUPTION_QUEUE_URLS,
            **config.adapter_options(),
        )

    # --- clients ---

    def client(self, region: str) -> Any:
        """The EC2 client of ``region`` (thread-safe, shared by every call in that region)."""
        return self._client("ec2", region, endpoint_url=self.endpoint_url, config=self.config)

    def sqs_client(self, region: str, queue_url: str) -> Any:
        """The SQS client for ``queue_url``.

        SQS is called at the endpoint of the queue URL when that is not an AWS
        host (moto, a local SQS), at the region's standard endpoint otherwise.
        Reads may last the long-polling wait on top of the timeout.
        """
        parts = urlsplit(queue_url)
        host = parts.hostname or ""
        endpoint = None
        if host and not (host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")):
            endpoint = f"{parts.scheme}://{parts.netloc}"
        config = self.config.merge(Config(read_timeout=self.timeout + self.interruption_wait_seconds))
        return self._client("sqs", region, endpoint_url=endpoint, config=config)

    def _client(self, service: str, region: str, *, endpoint_url: str | None, config: Config) -> Any:
        key = (service, region if endpoint_url is None else f"{region}@{endpoint_url}")
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._session.create_client(
                    service, region_name=region, endpoint_url=endpoint_url, config=config
                )
                self._clients[key] = client
            return client

    # --- CloudAdapter ---

    def create_instance(self, request: InstanceRequest) -> InstanceInfo:
        """Launch one instance in ``request.market``, or return the one this token already launched.

        EC2 itself makes ``RunInstances`` idempotent by ``ClientToken``; the
        instance also carries the token as a tag, looked up first, so fakes that
        ignore ``ClientToken`` (moto) behave the same way.
        """
        token = request.idempotency_token
        if not token or len(token) > MAX_CLIENT_TOKEN_LENGTH or not token.isascii():
            raise PermanentCloudError(
                f"the idempotency token must be 1 to {MAX_CLIENT_TOKEN_LENGTH} ASCII characters, got {token!r}",
                provider=self.provider,
            )
        image_id = request.image_id or self.ami_ids.get(request.region, "")
        if not image_id:
            raise PermanentCloudError(
                f"no AMI for region {request.region!r}: set AWS_AMI_IDS (region=ami-...) or the workload's image_id",
                provider=self.provider,
            )
        existing = self._find_by_token(request.region, token)
        if existing is not None:
            logger.info("aws: create %s found instance %s", token, existing.instance_id)
            return existing
        params = self._run_instances_params(request, image_id)
        with normalised():
            answer = self.client(request.region).run_instances(**params)
        info = self._info(answer["Instances"][0], request.region)
        if request.market is Market.SPOT:
            logger.info(
                "aws: created spot instance %s (%s in %s, max %s/h)",
                info.instance_id,
                request.instance_type,
                request.availability_zone,
                params["InstanceMarketOptions"]["SpotOptions"]["MaxPrice"],
            )
        else:
            logger.info(
                "aws: created on-demand instance %s (%s in %s)",
                info.instance_id,
                request.instance_type,
                request.availability_zone,
            )
        return info

    def _run_instances_params(self, request: InstanceRequest, image_id: str) -> dict[str, Any]:
        name = request.tags.get("Name") or f"arbitrage-{request.tags.get('workload-id') or request.idempotency_token}"
        tags = {**request.tags, "Name": name, IDEMPOTENCY_TAG: request.idempotency_token}
        params: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": request.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": request.idempotency_token,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "UserData": base.startup_script(request),  # botocore base64-encodes it
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": key, "Value": value} for key, value in tags.items()]}
            ],
        }
        # EC2 has no "on-demand" market type: leaving the market options out is what buys on demand.
        if request.market is Market.SPOT:
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "MaxPrice": format(request.max_price_per_hour, "f"),  # never exponent notation
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        subnet_id = self.subnet_ids.get(request.availability_zone)
        if subnet_id:
            params["SubnetId"] = subnet_id  # the subnet decides the zone
        else:
            params["Placement"] = {"AvailabilityZone": request.availability_zone}
        security_group_id = self.security_group_ids.get(request.region)
        if security_group_id:
            params["SecurityGroupIds"] = [security_group_id]
        if self.key_name:
            params["KeyName"] = self.key_name
        if self.instance_profile:
            key = "Arn" if self.instance_profile.startswith("arn:") else "Name"
            params["IamInstanceProfile"] = {key: self.instance_profile}
        return params

    def _find_by_token(self, region: str, token: str) -> InstanceInfo | None:
        """The instance a create with ``token`` already launched (the newest, should there be several)."""
        found = self._describe(region, Filters=[{"Name": f"tag:{IDEMPOTENCY_TAG}", "Values": [token]}])
        if not found:
            return None
        return max(found, key=lambda info: info.launched_at or datetime.min.replace(tzinfo=UTC))

    def get_instance_status(self, instance_id: str, region: str, *, operation: str = "") -> InstanceInfo:
        # RunInstances answers with the instance at once: there is never an operation to follow.
        found = self._describe(region, InstanceIds=[instance_id])
        if not found:
            raise InstanceNotFound(
                f"The instance ID '{instance_id}' does not exist in {region}",
                provider=self.provider,
                code="InvalidInstanceID.NotFound",
            )
        return found[0]

    describes_in_batches = True

    def get_instance_statuses(self, instance_ids: Sequence[str], region: str) -> dict[str, InstanceInfo]:
        """DescribeInstances with up to 1,000 ids a call. One unknown id fails the whole call
        (``InvalidInstanceID.NotFound``): then the batch is split in halves until the unknown ids are alone."""
        found: dict[str, InstanceInfo] = {}
        unique = list(dict.fromkeys(instance_ids))
        for start in range(0, len(unique), DESCRIBE_BATCH):
            self._describe_batch(unique[start : start + DESCRIBE_BATCH], region, found)
        return found

    def _describe_batch(self, instance_ids: list[str], region: str, found: dict[str, InstanceInfo]) -> None:
        try:
            infos = self._describe(region, InstanceIds=instance_ids)
        except InstanceNotFound:
            if len(instance_ids) == 1:
                return
            middle = len(instance_ids) // 2
            self._describe_batch(instance_ids[:middle], region, found)
            self._describe_batch(instance_ids[middle:], region, found)
            return
        found.update((info.instance_id, info) for info in infos)

    def console_output(self, instance_id: str, region: str, *, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Not read from EC2 yet: returns nothing.

        GetConsoleOutput answers only the newest 64 KiB (base64), refreshed with a delay of
        minutes and not addressable by offset, so following it by offset needs care to be right.
        """
        return b""

    def terminate_instance(self, instance_id: str, region: str) -> None:
        try:
            with normalised():
                self.client(region).terminate_instances(InstanceIds=[instance_id])
        except InstanceNotFound:
            logger.info("aws: terminate of unknown instance %s in %s", instance_id, region)
            return
        logger.info("aws: terminating instance %s in %s", instance_id, region)

    def list_managed_instances(self, region: str) -> list[InstanceInfo]:
        return self._describe(
            region,
            Filters=[
                {"Name": f"tag:{base.MANAGED_BY_TAG}", "Values": [base.MANAGED_BY_VALUE]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ],
        )

    def interruption_warnings(self, region: str) -> list[InterruptionWarning]:
        """Read and delete the interruption warnings waiting in the region's SQS queue.

        Every message received is deleted once read, including ones that are not
        interruption warnings (the queue is ours alone) and unreadable ones, which
        are logged. A full batch of 10 is followed by another read, up to 10 batches.
        """
        queue_url = self.interruption_queue_urls.get(region)
        if not queue_url:
            return []
        sqs = self.sqs_client(region, queue_url)
        warnings: list[InterruptionWarning] = []
        wait = self.interruption_wait_seconds
        with normalised(f"SQS {queue_url}"):
            for _ in range(10):
                messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait).get(
                    "Messages", []
                )
                for message in messages:
                    warning = interruption_warning(message.get("Body", ""), region)
                    if warning is not None:
                        warnings.append(warning)
                if messages:
                    self._delete_messages(sqs, queue_url, messages)
                if len(messages) < 10:
                    break
                wait = 0  # the queue is busy: no need to wait for more
        return warnings

    @staticmethod
    def _delete_messages(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
        entries = [{"Id": str(n), "ReceiptHandle": message["ReceiptHandle"]} for n, message in enumerate(messages)]
        failed = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
        for failure in failed:  # the message comes back after its visibility timeout: read twice, harmless
            logger.warning("aws: could not delete interruption message from %s: %s", queue_url, failure)

    # --- reading instances ---

    def _describe(self, region: str, **params: Any) -> list[InstanceInfo]:
        infos = []
        with normalised():
            for page in self.client(region).get_paginator("describe_instances").paginate(**params):
                for reservation in page.get("Reservations", []):
                    infos.extend(self._info(instance, region) for instance in reservation.get("Instances", []))
        return infos

    def _info(self, instance: dict[str, Any], region: str) -> InstanceInfo:
        reason = instance.get("StateReason") or {}
        reason_code = reason.get("Code") or ""
        reason_message = reason.get("Message") or instance.get("StateTransitionReason") or ""
        launched_at = instance.get("LaunchTime")
        address_key = "PrivateIpAddress" if self.address == "private" else "PublicIpAddress"
        return InstanceInfo(
            instance_id=instance["InstanceId"],
            state=instance_state(instance.get("State", {}).get("Name", ""), reason_code, reason_message),
            region=region,
            availability_zone=instance.get("Placement", {}).get("AvailabilityZone", ""),
            instance_type=instance.get("InstanceType", ""),
            public_ip=instance.get(address_key) or "",
            tags={tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])},
            launched_at=launched_at.astimezone(UTC) if isinstance(launched_at, datetime) else None,
            state_reason=reason_message,
            # EC2 marks only spot instances ("spot"; others have no lifecycle, or "scheduled"/"capacity-block").
            market=Market.SPOT if instance.get("InstanceLifecycle") == "spot" else Market.ON_DEMAND,
        )


base.register_cloud_factory("aws", AwsCloud.from_settings)
