"""Strict JSON fields and a serializer base that refuses unknown keys.

DRF's stock fields coerce ("4" is a fine integer, 4 a fine string); an API
that validates at the edge should say the type is wrong instead.
"""

from __future__ import annotations

import re
from decimal import Decimal

from rest_framework import serializers


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        is_whole_number = isinstance(data, int) or (isinstance(data, float) and data.is_integer())
        if isinstance(data, bool) or not is_whole_number:
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


# ASCII digits with at most one dot. Python's Decimal() alone would also take "1_0", other
# scripts' digits ("\u0661\u0660"), exponents, "NaN" and surrounding spaces.
DECIMAL_STRING_PATTERN = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


class StrictDecimalField(serializers.DecimalField):
    """A decimal given as a JSON number or a numeric string ("0.42").

    A string is ASCII digits with at most one dot; a leading minus only when the field
    allows negative values (no ``min_value``, or a negative one).
    """

    default_error_messages = {
        "not_a_decimal_string": 'Must be a decimal number: ASCII digits with at most one dot, like "0.42".',
        "negative_not_allowed": "Must not be negative.",
    }

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float, str, Decimal)):
            self.fail("invalid")
        if isinstance(data, str):
            negative = data.startswith("-")
            if not DECIMAL_STRING_PATTERN.fullmatch(data[1:] if negative else data):
                self.fail("not_a_decimal_string")
            if negative and not self._negatives_allowed():
                self.fail("negative_not_allowed")
        return super().to_internal_value(data)

    def _negatives_allowed(self) -> bool:
        return self.min_value is None or self.min_value < 0


class StrictCharField(serializers.CharField):
    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not know, naming each one."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)
