"""Azure credentials: a static bearer token, the default credential chain, and bearer tokens over plain HTTP."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from azure.core.credentials import AccessToken
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline import PipelineRequest

_TOKEN_LIFETIME_SECONDS = 10 * 365 * 86400


class StaticTokenCredential:
    """A bearer token used as it is (``AZURE_ACCESS_TOKEN``): for emulators and short runs.

    Implements ``azure.core.credentials.TokenCredential``; the token never refreshes.
    """

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + _TOKEN_LIFETIME_SECONDS)


def default_credential() -> TokenCredential:
    """``DefaultAzureCredential``: environment (service principal), workload identity, managed identity, ..."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class PlainHttpAuthenticationPolicy(ARMChallengeAuthenticationPolicy):
    """ARM's bearer-token policy, allowed to send the token over plain HTTP.

    azure-core's ``BearerTokenCredentialPolicy`` refuses non-https URLs unless the
    request context says ``enforce_https: False``; this policy says so for every
    request. It is installed only when the configured ARM endpoint itself is
    ``http://`` (an emulator), so a real endpoint keeps the check.
    """

    def on_request(self, request: PipelineRequest) -> None:
        request.context["enforce_https"] = False
        super().on_request(request)
