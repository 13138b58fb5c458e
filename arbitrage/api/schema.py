"""The OpenAPI schema says every status and body the API really answers.

``ApiAutoSchema`` (REST_FRAMEWORK ``DEFAULT_SCHEMA_CLASS``) adds to each operation the
errors every view can give, each with the one error body (``ErrorSerializer``):

* 400 a bad query or body; 401 a missing, wrong or revoked credential; 406 an Accept
  header that JSON does not satisfy; 429 a rate limit (with ``Retry-After``);
* 404 where the path names something (or the list is paginated: "Invalid page.");
* 413 and 415 where a request body is read;
* 414 from the web server (gunicorn), before the application: an over-long request line.

A view's own ``extend_schema(responses=...)`` adds its particular ones (402, 409, 422...);
any 4xx it lists without a body gets the error body too. Request bodies of a
``StrictSerializer`` say ``additionalProperties: false``: unknown keys are refused.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import permissions, serializers


class ErrorDetailSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status, again.")
    code = serializers.CharField(help_text='What went wrong, for programs: "invalid", "not_found", "throttled"...')
    message = serializers.CharField(help_text="What went wrong, for people.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors only: each bad field by its dotted path in the request, with its messages.",
    )


class ErrorSerializer(serializers.Serializer):
    """Every error the API answers. Some add their own figures beside ``message`` (``current_state``...)."""

    error = ErrorDetailSerializer()


COMMON_ERRORS = {
    "400": "Bad request: a query parameter or the body is invalid (fields names each bad one).",
    "406": "The Accept header asks for something other than JSON.",
    "429": "Too many requests: this API key's rate, or failed authentication from this address. "
    "Retry-After says when to try again.",
}
AUTHENTICATION_ERROR = "No, a wrong, or a revoked API key (or agent token)."
NOT_FOUND_ERROR = "Not found: no such object for this caller, or a page past the end of a list."
BODY_ERRORS = {
    "413": "The request body is over API_MAX_BODY_BYTES (or a storage quota is used up).",
    "415": "The body is not sent as JSON (Content-Type: application/json or application/*+json).",
}
URI_TOO_LONG = "The request line is too long for the web server (answered before the application, as HTML)."
BODY_METHODS = {"POST", "PUT", "PATCH"}


class ApiAutoSchema(AutoSchema):
    def _error(self, code: str, description: str, direction) -> dict:
        response = self._get_response_for_code(
            OpenApiResponse(response=ErrorSerializer, description=description), code, direction=direction
        )
        if code == "429":
            response["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds until the limit resets."}
            }
        return response

    def _error_statuses(self) -> dict[str, str]:
        statuses = dict(COMMON_ERRORS)
        if any(not isinstance(p, permissions.AllowAny) for p in self.view.get_permissions()):
            statuses["401"] = AUTHENTICATION_ERROR
        if "{" in self.path or (self.method == "GET" and self._get_paginator() is not None):
            statuses["404"] = NOT_FOUND_ERROR
        if self.method in BODY_METHODS:
            statuses.update(BODY_ERRORS)
        return statuses

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, description in self._error_statuses().items():
            responses.setdefault(code, {"description": description})
        for code, response in list(responses.items()):
            if code.startswith("4") and not response.get("content"):
                responses[code] = self._error(code, response.get("description") or "Error.", direction)
        responses["414"] = {
            "description": URI_TOO_LONG,
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
        return dict(sorted(responses.items()))


class StrictSerializerExtension(OpenApiSerializerExtension):
    """A StrictSerializer refuses keys it does not know: its request body says so."""

    target_class = "arbitrage.api.fields.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_basic_serializer(self.target, direction)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema
