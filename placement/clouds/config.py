"""What the real cloud adapters (aws, gcp, azure) read from the settings alike."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def adapter_options() -> dict[str, Any]:
    """The keyword arguments every adapter's ``from_settings`` passes the same way.

    ``address``: which address of an instance ``InstanceInfo.public_ip`` holds, its
    ``public`` or its ``private`` one (``CLOUD_INSTANCE_ADDRESS``); ``timeout``: the
    seconds one cloud API call may take (``CLOUD_API_TIMEOUT_SECONDS``).
    """
    return {"address": settings.CLOUD_INSTANCE_ADDRESS, "timeout": settings.CLOUD_API_TIMEOUT_SECONDS}
