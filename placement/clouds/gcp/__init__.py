"""GCP: Spot (or on-demand) VMs through the Compute Engine API, and Spot VM prices from the Cloud Billing Catalog API.

* ``adapter``: ``GcpCloud`` (backend ``gcp``), instances ``"<zone>/<name>"`` created,
  followed, terminated and listed with google-cloud-compute over its REST transport.
* ``names``: instance names, insert request ids, labels and zones as Compute Engine spells them.
* ``errors``: Compute Engine's and the SDK's errors as our error kinds.
* ``prices``: ``GcpPriceSource``, machine prices built from the billing catalog's core,
  memory and GPU SKUs.

Importing the package registers the ``gcp`` backend (``CLOUD_BACKENDS``); the
Compute Engine SDK itself loads when a ``GcpCloud`` first calls the API.
"""

from placement.clouds.gcp.adapter import GcpCloud
from placement.clouds.gcp.errors import cloud_error, error_from_exception, operation_error
from placement.clouds.gcp.names import instance_name, label, region_of, request_id
from placement.clouds.gcp.prices import GcpPriceSource

__all__ = [
    "GcpCloud",
    "GcpPriceSource",
    "cloud_error",
    "error_from_exception",
    "instance_name",
    "label",
    "operation_error",
    "region_of",
    "request_id",
]
