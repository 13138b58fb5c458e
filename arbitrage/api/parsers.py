"""How a request body is read: JSON only, named exactly by its Content-Type."""

from __future__ import annotations

from django.utils.http import parse_header_parameters
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.utils.mediatypes import media_type_matches


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, with absurdly deep nesting answered as a 400, not a crash."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json`` (parameters such as charset aside)."""
    media_type, _ = parse_header_parameters(content_type or "")
    main, _, sub = media_type.strip().lower().partition("/")
    return main == "application" and (sub == "json" or (sub.endswith("+json") and len(sub) > len("+json")))


class StrictContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, except for which parser reads a body.

    DRF matches a request's Content-Type like an Accept header, so ``*/*`` or
    ``application/*`` would be read as JSON. Here a JSON parser takes only a JSON
    media type, and a wildcard names no parser: the request is a 415.
    """

    def select_parser(self, request, parsers):
        content_type = request.content_type or ""
        if "*" in parse_header_parameters(content_type)[0]:
            return None
        for parser in parsers:
            if isinstance(parser, JSONParser):
                if is_json_media_type(content_type):
                    return parser
            elif media_type_matches(parser.media_type, content_type):
                return parser
        return None
