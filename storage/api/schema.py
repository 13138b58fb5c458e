"""OpenAPI description of the agent token, so the storage views' schema names both ways in."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class AgentTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.AgentTokenAuthentication"
    name = "AgentToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A workload's agent token (wat_...)."}
