"""Following ARM's long-running operations one status request at a time, never waiting on them."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.core.polling.base_polling import BadResponse, BadStatus, OperationFailed
from azure.mgmt.core.polling.arm_polling import ARMPolling

from placement.clouds.azure.errors import PROVIDER, cloud_error
from placement.clouds.base import TransientCloudError


class OneStepPolling(ARMPolling):
    """ARM's long-running-operation polling, one status request at a time and never in the background.

    ``LROPoller`` runs its polling method's ``run()`` in a thread that sleeps and polls
    until the operation ends; here ``run()`` does nothing, so a ``begin_*`` call returns
    as soon as the initial request is answered, and its ``continuation_token()`` (a JSON
    snapshot of that answer: the ``Azure-AsyncOperation`` URL among its headers) is what
    the workflow keeps.

    To check on the operation later, ``begin_create_or_update(..., continuation_token=token,
    polling=OneStepPolling())`` rebuilds the poller from the token (no request), and
    ``check()`` calls ``update_status()`` once: one GET of the Azure-AsyncOperation URL
    (``{"status": "InProgress" | "Succeeded" | "Failed" | "Canceled", "error": {...}}``)
    through the client's own pipeline (authentication, timeouts). The status answer
    itself is kept (``last_response``) for a failure's error. This relies only on
    azure-core's documented polling interface (``from_continuation_token``,
    ``initialize``, ``update_status``, ``status``, ``finished``), the same one
    ``LROPoller`` drives; tokens are azure-core's versioned JSON tokens, so they stay
    valid across worker restarts.
    """

    def __init__(self) -> None:
        super().__init__(timeout=0)
        self.last_response: Any = None

    def run(self) -> None:
        """Never wait: the caller checks again later, one request per check."""

    def request_status(self, status_link: str) -> Any:
        pipeline_response = super().request_status(status_link)
        self.last_response = pipeline_response.http_response
        return pipeline_response

    def check(self) -> str:
        """One status request (if the operation is not already known to be over); its status."""
        if self.finished():
            return self.status()
        try:
            self.update_status()
        except (BadStatus, BadResponse, OperationFailed) as exc:
            response = self.last_response
            if response is not None and response.status_code >= 400:
                if response.status_code == 404:
                    return "Unknown"  # the operation record expired: the VM itself tells
                raise cloud_error(HttpResponseError(response=response)) from exc
            raise TransientCloudError(f"unreadable operation status: {exc}", provider=PROVIDER) from exc
        return self.status()
