"""Strict API fields: decimals are ASCII digits with at most one dot."""

from decimal import Decimal

import pytest

from arbitrage.api.fields import StrictDecimalField, StrictSerializer
from tests.errors import assert_error

QUOTE = "/api/v1/placement/quote"


class PriceSerializer(StrictSerializer):
    price = StrictDecimalField(max_digits=12, decimal_places=6, min_value=Decimal("0"))
    delta = StrictDecimalField(max_digits=12, decimal_places=6, required=False)


def errors_for(**body) -> dict:
    serializer = PriceSerializer(data=body)
    assert not serializer.is_valid()
    return serializer.errors


@pytest.mark.parametrize(
    "text",
    [
        "1_0",
        "\u0661\u0660",
        "\uff11",
        "1e3",
        "1.2.3",
        " 1",
        "1 ",
        "NaN",
        "Infinity",
        "+1",
        "1.",
        ".5",
        "",
        "0x10",
        "\u0661.\u0665",
    ],
)
def test_a_decimal_string_that_is_not_ascii_digits_with_one_dot_is_refused(text):
    assert "ASCII digits" in str(errors_for(price=text)["price"][0])


def test_a_minus_is_refused_where_negatives_are_not_allowed_and_kept_where_they_are():
    assert str(errors_for(price="-1")["price"][0]) == "Must not be negative."

    serializer = PriceSerializer(data={"price": "0.42", "delta": "-1.5"})
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data == {"price": Decimal("0.42"), "delta": Decimal("-1.5")}


@pytest.mark.parametrize(("value", "expected"), [("10", "10"), ("0.420000", "0.42"), (3, "3"), (0.5, "0.5")])
def test_plain_decimals_and_json_numbers_are_taken(value, expected):
    serializer = PriceSerializer(data={"price": value})
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["price"] == Decimal(expected)


@pytest.mark.parametrize("text", ["1_0", "\u0661\u0660", "-0.5"])
def test_the_api_answers_a_bad_decimal_with_a_400_naming_the_field(api, text):
    body = {"requirements": {"vcpu": 4, "memory_gb": 16, "max_price_per_hour": text}}
    error = assert_error(api.post(QUOTE, body, format="json"), 400, "invalid")
    assert list(error["fields"]) == ["requirements.max_price_per_hour"]
