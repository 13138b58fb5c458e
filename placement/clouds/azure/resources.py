"""The VM resource the adapter PUTs (Spot, or Regular on demand), as ARM's REST API spells it, network inline."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from placement.clouds import base
from placement.clouds.azure.errors import PROVIDER
from placement.clouds.base import InstanceRequest, Market, PermanentCloudError

#: ``networkProfile.networkApiVersion`` that lets a VM declare its NICs inline.
NETWORK_API_VERSION = "2020-11-01"
_NIC_CONFIG, _IP_CONFIG, _PUBLIC_IP_CONFIG = "nic", "ipconfig", "pip"


def vm_body(
    *,
    name: str,
    request: InstanceRequest,
    subnet_id: str,
    image: str,
    admin_username: str,
    ssh_public_key: str,
) -> dict[str, Any]:
    """The VM resource to PUT, as ARM's REST API spells it: a Spot or Regular VM with its network declared inline."""
    if not subnet_id:
        raise PermanentCloudError(
            f"no subnet configured for Azure region {request.region!r} (AZURE_SUBNET_IDS)",
            provider=PROVIDER,
            code="SubnetNotConfigured",
        )
    if not ssh_public_key:
        raise PermanentCloudError(
            "no SSH public key configured for Azure VMs (AZURE_SSH_PUBLIC_KEY)",
            provider=PROVIDER,
            code="SshKeyNotConfigured",
        )
    custom_data = base64.b64encode(base.startup_script(request).encode()).decode("ascii")
    body: dict[str, Any] = {
        "location": request.region,
        "tags": dict(request.tags),
        "properties": {
            **_priority(request),
            "hardwareProfile": {"vmSize": request.instance_type},
            "storageProfile": {
                "imageReference": image_reference(request.image_id or image),
                "osDisk": {
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "managedDisk": {"storageAccountType": "StandardSSD_LRS"},
                },
            },
            "osProfile": {
                "computerName": name,
                "adminUsername": admin_username,
                "customData": custom_data,
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {
                        "publicKeys": [
                            {
                                "path": f"/home/{admin_username}/.ssh/authorized_keys",
                                "keyData": ssh_public_key,
                            }
                        ]
                    },
                },
            },
            "networkProfile": {
                "networkApiVersion": NETWORK_API_VERSION,
                "networkInterfaceConfigurations": [
                    {
                        "name": _NIC_CONFIG,
                        "properties": {
                            "primary": True,
                            "deleteOption": "Delete",
                            "ipConfigurations": [
                                {
                                    "name": _IP_CONFIG,
                                    "properties": {
                                        "primary": True,
                                        "subnet": {"id": subnet_id},
                                        "publicIPAddressConfiguration": {
                                            "name": _PUBLIC_IP_CONFIG,
                                            "sku": {"name": "Standard", "tier": "Regional"},
                                            "properties": {
                                                "deleteOption": "Delete",
                                                "publicIPAllocationMethod": "Static",
                                            },
                                        },
                                    },
                                }
                            ],
                        },
                    }
                ],
            },
        },
    }
    zone = zone_number(request.region, request.availability_zone)
    if zone:
        body["zones"] = [zone]
    return body


def _priority(request: InstanceRequest) -> dict[str, Any]:
    """How the VM is bought: a Spot VM deleted on eviction, with our bid; or a Regular (pay-as-you-go) one.

    A Regular VM carries neither eviction policy nor max price: ARM refuses both on anything but Spot
    (EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines, MaxPriceIsSupportedOnlyForAzureSpotVirtualMachines).
    """
    if request.market is Market.SPOT:
        return {
            "priority": "Spot",
            "evictionPolicy": "Delete",
            "billingProfile": {"maxPrice": float(request.max_price_per_hour)},
        }
    return {"priority": "Regular"}


def market_of(vm_properties: Mapping[str, Any]) -> Market:
    """The market of a VM as ARM describes it: Spot (and the older Low priority) can be evicted; Regular cannot.

    ARM may leave ``priority`` out for a VM created without one, which is Regular.
    """
    priority = str(vm_properties.get("priority") or "Regular")
    return Market.SPOT if priority.casefold() in ("spot", "low") else Market.ON_DEMAND


def zone_number(region: str, availability_zone: str) -> str:
    """``"1"`` for ``eastus-1``; "" for a regional pool (``eastus`` or "")."""
    prefix = f"{region}-"
    if availability_zone.startswith(prefix) and availability_zone[len(prefix) :].isdigit():
        return availability_zone[len(prefix) :]
    return ""


def image_reference(image: str) -> dict[str, str]:
    """``publisher:offer:sku:version`` (a marketplace image) or an image's resource id."""
    if image.startswith("/"):
        return {"id": image}
    parts = image.split(":")
    if len(parts) != 4 or not all(parts):
        raise PermanentCloudError(
            f"Azure image {image!r} is neither publisher:offer:sku:version nor an image resource id",
            provider=PROVIDER,
            code="InvalidParameter",
        )
    publisher, offer, sku, version = parts
    return {"publisher": publisher, "offer": offer, "sku": sku, "version": version}
