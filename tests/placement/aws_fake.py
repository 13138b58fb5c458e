"""A fake AWS reachable over HTTP on loopback: moto in server mode, for end-to-end tests.

``start_fake_aws()`` starts moto's threaded server on 127.0.0.1 (a free port)
and gives its endpoint URL, for ``AwsCloud(endpoint_url=...)`` or
``AWS_EC2_ENDPOINT_URL``; ``loopback_subnet()`` makes a VPC and a subnet whose
CIDR is a loopback range, so instances launched in it get 127.0.0.x private
addresses and a control plane with ``CLOUD_INSTANCE_ADDRESS=private`` reaches a
test server listening there (Linux routes all of 127.0.0.0/8 to ``lo``).

The server shares moto's in-process state with ``mock_aws``: it is reset when
started and when stopped, and should not run while a ``mock_aws`` test does.
Clients need credentials, any will do: set ``FAKE_ENV`` with ``monkeypatch.setenv``
(it also keeps moto from loading its ~1,300 sample AMIs into every fresh region,
which takes seconds; without AMI validation, moto launches any ``ami-...`` id).
"""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Callable, Iterator, Mapping

import boto3
from moto.server import ThreadedMotoServer

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
FAKE_ENV = {**FAKE_CREDENTIALS, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}


def _reset(endpoint_url: str) -> None:
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def start_fake_aws() -> tuple[str, Callable[[], None]]:
    """Start moto's server on 127.0.0.1 (a free port): its endpoint URL, and the function that stops it.

    Every AWS service moto fakes answers at that one URL (EC2, SQS, ...): queue
    URLs it hands out point there too.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    _reset(endpoint_url)  # a fresh cloud: moto's state is per process, not per server

    def stop() -> None:
        try:
            _reset(endpoint_url)
        finally:
            server.stop()

    return endpoint_url, stop


def loopback_subnet(
    endpoint_url: str,
    *,
    region: str = "us-east-1",
    availability_zone: str = "us-east-1a",
    cidr: str = "127.0.0.0/24",
) -> str:
    """Create a VPC (127.0.0.0/16) and in it a subnet of ``cidr`` in ``availability_zone``; the subnet id.

    Moto hands out the subnet's addresses in order, skipping the four AWS
    reserves: with the default CIDR the first instance gets 127.0.0.4, the next
    127.0.0.5, and so on. Instances in the subnet get no public address. Pass
    ``{availability_zone: subnet_id}`` as ``AwsCloud(subnet_ids=...)`` (or
    ``AWS_SUBNET_IDS``) with ``address="private"``.
    """
    ec2 = boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    vpc_id = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=availability_zone)
    return subnet["Subnet"]["SubnetId"]


@contextlib.contextmanager
def spot_placement_scores(
    scores: Mapping[tuple[str, str], int], *, error: tuple[str, str] | None = None
) -> Iterator[None]:
    """moto answers EC2 ``GetSpotPlacementScores``, which it lacks, with ``scores`` (or AWS's ``error``).

    ``scores`` maps (instance type, zone name) to a score 1-10; the answer names each zone by its
    id, as AWS does, with ``Region``, ``AvailabilityZoneId`` and ``Score`` per zone of the regions
    asked about, for requests of one instance type with ``SingleAvailabilityZone``. ``error``:
    (code, message) of the error every request gets instead, e.g. ``UnauthorizedOperation``.
    """
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import ec2_backends
    from moto.ec2.responses import EC2Response

    def get_spot_placement_scores(self) -> ActionResult:
        if error is not None:
            raise EC2ClientError(*error)
        instance_types = self._get_param("InstanceTypes", [])
        answer = []
        for region in self._get_param("RegionNames", []):
            for zone in ec2_backends[self.current_account][region].describe_availability_zones():
                score = next((scores[(t, zone.name)] for t in instance_types if (t, zone.name) in scores), None)
                if score is not None:
                    answer.append({"Region": region, "AvailabilityZoneId": zone.zone_id, "Score": score})
        return ActionResult({"SpotPlacementScores": answer})

    EC2Response.get_spot_placement_scores = get_spot_placement_scores
    try:
        yield
    finally:
        del EC2Response.get_spot_placement_scores
