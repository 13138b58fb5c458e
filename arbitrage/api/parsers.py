import io

from django.conf import settings
from rest_framework.exceptions import APIException
from rest_framework.parsers import JSONParser


class RequestTooLarge(APIException):
    status_code = 413
    default_code = "request_too_large"
    default_detail = "Request body is too large."


class BoundedJSONParser(JSONParser):
    """JSON only, and refuse bodies over ``API_MAX_BODY_BYTES`` before reading them."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        limit = settings.API_MAX_BODY_BYTES
        if request is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                raise RequestTooLarge(f"Request body is {length} bytes; the limit is {limit} bytes.")
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise RequestTooLarge(f"Request body is over the limit of {limit} bytes.")
        return super().parse(io.BytesIO(data), media_type, parser_context)
