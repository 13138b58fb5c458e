"""Customer API keys: ``Authorization: Bearer <key>``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from accounts import tokens
from accounts.models import ApiKey, Customer
from accounts.selectors import api_key_get_active
from accounts.services import api_key_mark_used


@dataclass(frozen=True)
class WorkloadAgent:
    """The authenticated caller is a workload's own instance (agent token): it may reach only that workload."""

    workload_id: uuid.UUID
    is_authenticated: bool = True
    is_anonymous: bool = False


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
    """``Authorization: Bearer wat_...``: a workload's agent token. Views that accept it list it explicitly."""

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
        return WorkloadAgent(workload_id=workload_id), token

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A customer API key."}
