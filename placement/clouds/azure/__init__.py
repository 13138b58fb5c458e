"""Azure: spot prices from the public Retail Prices API, and Spot or Regular VMs through Azure Resource Manager.

* ``adapter``: ``AzureCloud`` (backend ``azure``), one VM per instance (Spot, or Regular on demand), its network
  declared inline, created without waiting and followed one status request at a time.
* ``resources``: the VM body the adapter PUTs and the reading of ARM's JSON answers.
* ``polling``: ``OneStepPolling``, ARM's long-running-operation polling, one request per check.
* ``credentials``: ``StaticTokenCredential`` (``AZURE_ACCESS_TOKEN``), the default
  credential chain, and bearer tokens over plain HTTP for an emulator.
* ``errors``: ARM's and the SDK's errors as our error kinds (``classify``, ``cloud_error``).
* ``prices``: ``AzurePriceSource``, spot and pay-as-you-go meters from the Retail Prices API.

Importing the package registers the ``azure`` backend (``CLOUD_BACKENDS``).
"""

from placement.clouds.azure.adapter import AzureCloud
from placement.clouds.azure.credentials import StaticTokenCredential
from placement.clouds.azure.errors import PROVIDER, classify, cloud_error, operation_error
from placement.clouds.azure.prices import AzurePriceSource

__all__ = [
    "PROVIDER",
    "AzureCloud",
    "AzurePriceSource",
    "StaticTokenCredential",
    "classify",
    "cloud_error",
    "operation_error",
]
