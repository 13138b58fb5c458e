"""Revoking an API key: refused by the API at once, announced to the gateway through the routing KV."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.selectors import api_key_revocations_marker
from accounts.services import api_key_revoke
from tests.factories import customer_with_key
from tests.workloads.test_admin import operator  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db


def api_for(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def test_a_revocation_is_refused_at_once_and_changes_the_kv_marker_once_committed(
    django_capture_on_commit_callbacks,
):
    customer, raw_key = customer_with_key()
    api_key = ApiKey.objects.get(customer=customer)
    assert api_for(raw_key).get("/api/v1/workloads").status_code == 200
    before = api_key_revocations_marker()

    with django_capture_on_commit_callbacks(execute=False) as pending:
        assert api_key_revoke(api_key=api_key) is True
    assert api_key_revocations_marker() == before  # not before the revocation is committed
    for callback in pending:
        callback()
    first = api_key_revocations_marker()
    assert first is not None and first != before

    answer = api_for(raw_key).get("/api/v1/workloads")
    assert answer.status_code == 401 and answer.json()["error"]["message"] == "Invalid or revoked API key."
    revoked_at = ApiKey.objects.get(pk=api_key.pk).revoked_at
    assert revoked_at is not None

    # Revoking again changes nothing.
    with django_capture_on_commit_callbacks(execute=True):
        assert api_key_revoke(api_key=api_key) is False
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at == revoked_at
    assert api_key_revocations_marker() == first

    # Another key's revocation changes the marker again.
    other, _ = customer_with_key()
    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(api_key=ApiKey.objects.get(customer=other))
    assert api_key_revocations_marker() not in (None, first)


def test_the_admin_revokes_through_the_service_and_never_deletes_a_key(
    operator,  # noqa: F811 (the fixture imported above)
    django_capture_on_commit_callbacks,
):
    customer, raw_key = customer_with_key()
    api_key = ApiKey.objects.get(customer=customer)

    with django_capture_on_commit_callbacks(execute=True):
        answer = operator.post(
            reverse("admin:accounts_apikey_changelist"),
            {"action": "revoke", "_selected_action": [str(api_key.pk)]},
            follow=True,
        )
    assert answer.status_code == 200 and "Revoked 1 key(s)." in answer.content.decode()
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None
    assert api_key_revocations_marker() is not None
    assert api_for(raw_key).get("/api/v1/workloads").status_code == 401

    # No other way around the service: revoked_at is shown, not edited, and keys are not deleted.
    assert operator.get(reverse("admin:accounts_apikey_delete", args=[api_key.pk])).status_code == 403
    page = operator.get(reverse("admin:accounts_customer_change", args=[customer.pk])).content.decode()
    assert 'name="api_keys-0-revoked_at' not in page and 'name="api_keys-0-DELETE"' not in page
    key_page = operator.get(reverse("admin:accounts_apikey_change", args=[api_key.pk])).content.decode()
    assert 'name="revoked_at' not in key_page
    assert ApiKey.objects.filter(pk=api_key.pk).exists()
