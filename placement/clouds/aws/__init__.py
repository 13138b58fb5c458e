"""AWS: the EC2 adapter (``AwsCloud``, spot and on demand) and the spot price source (``AwsPriceSource``).

Both use boto3 and take credentials the standard boto3 way (environment, profile,
instance role); every botocore error they meet is normalised by ``normalise_error``
into the ``CloudError`` family of ``placement.clouds.base``.

* ``adapter``: ``AwsCloud``, one-time spot or on-demand instances through ``RunInstances``,
  ``DescribeInstances`` and ``TerminateInstances``, and the interruption warnings of
  the region's SQS queue (``AWS_INTERRUPTION_QUEUE_URLS``).
* ``interruptions``: the "EC2 Spot Instance Interruption Warning" events in that queue.
* ``prices``: ``AwsPriceSource``, spot prices from ``DescribeSpotPriceHistory``.
* ``errors``: botocore's errors as our error kinds.

Importing the package registers the ``aws`` backend (``CLOUD_BACKENDS``).
"""

from placement.clouds.aws.adapter import IDEMPOTENCY_TAG, AwsCloud, instance_state
from placement.clouds.aws.errors import PROVIDER, normalise_error
from placement.clouds.aws.prices import AwsPriceSource

__all__ = ["IDEMPOTENCY_TAG", "PROVIDER", "AwsCloud", "AwsPriceSource", "instance_state", "normalise_error"]
