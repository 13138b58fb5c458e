"""Customer API keys (``Authorization: Bearer ca_...``) and workload agent tokens (``Bearer wat_...``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts import tokens
from accounts.models import ApiKey, Customer
from accounts.selectors import api_key_get_active
from accounts.services import api_key_mark_used


@dataclass(frozen=True)
class WorkloadAgent:
    """The authenticated caller is a workload's own instance (agent token): it may reach only that workload.

    ``read_only_until`` is set once the workload is terminated: until then the token may
    only read (``accounts.permissions.AgentTokenWrites`` refuses the rest).
    """

    workload_id: uuid.UUID
    read_only_until: datetime | None = None
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def read_only(self) -> bool:
        return self.read_only_until is not None


@dataclass(frozen=True)
class ApiClient:
    """The authenticated caller of the API: a customer, through one of its keys."""

    customer: Customer
    api_key: ApiKey
    is_authenticated: bool = True
    is_anonymous: bool = False


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw_key = header.partition(" ")
        raw_key = raw_key.strip()
        if scheme.lower() != self.keyword.lower() or not raw_key or " " in raw_key:
            raise exceptions.AuthenticationFailed("Use the header 'Authorization: Bearer <api key>'.")
        api_key = api_key_get_active(raw_key=raw_key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        api_key_mark_used(api_key=api_key)
        return ApiClient(customer=api_key.customer, api_key=api_key), api_key

    def authenticate_header(self, request) -> str:
        return self.keyword


class AgentTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer wat_...``: a workload's agent token. Views that accept it list it explicitly.

    Its standing is read from the database on every request (``tokens.agent_token_standing``):
    a token whose workload is gone, or terminated with its storage retention over, is a 401.
    """

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(tokens.PREFIX):
            return None  # not ours: let the API key authentication look at it
        workload_id = tokens.agent_token_workload_id(token)
        if workload_id is None:
            raise exceptions.AuthenticationFailed("Invalid agent token.")
        standing = tokens.agent_token_standing(workload_id)
        if standing.state == tokens.DEAD:
            raise exceptions.AuthenticationFailed(
                "This agent token no longer works: its workload is terminated and its storage retention is over.",
                code="agent_token_expired",
            )
        read_only_until = standing.read_only_until if standing.state == tokens.READ_ONLY else None
        return WorkloadAgent(workload_id=workload_id, read_only_until=read_only_until), token

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A customer API key."}
