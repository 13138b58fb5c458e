"""The operator's view of the catalog, price history and blocks."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from placement.models import Offer, PoolBlock
from placement.services import catalog_load_snapshot, pool_block
from tests.placement.factories import aws_price_refreshed

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw-not-used-1234"))
    return client


def test_the_catalog_lists_with_filters(operator):
    catalog_load_snapshot()

    page = operator.get("/admin/placement/offer/", {"instance_type__provider__exact": "gcp", "risk_bucket__exact": "1"})

    assert page.status_code == 200
    html = page.content.decode()
    assert "n2-standard-4" in html or "e2-standard-4" in html
    assert "Standard_D4s_v5" not in html


def test_an_offer_page_shows_its_price_history(operator):
    catalog_load_snapshot()
    offer = Offer.objects.get(instance_type__name="m6i.large", availability_zone="us-east-1a")
    aws_price_refreshed(instance_type="m6i.large", spot_price="0.031")

    html = operator.get(f"/admin/placement/offer/{offer.id}/change/").content.decode()

    assert "0.035520" in html and "0.031000" in html  # the snapshot's price, then the refreshed one


def test_blocks_are_visible_and_clearable(operator):
    pool = {"provider": "aws", "region": "us-east-1", "availability_zone": "us-east-1a", "instance_type": "m6i.large"}
    block = pool_block(**pool, reason="spot interruption", seconds=600)

    listing = operator.get("/admin/placement/poolblock/", {"state": "active"}).content.decode()
    assert "aws/us-east-1/us-east-1a/m6i.large" in listing and "spot interruption" in listing

    operator.post("/admin/placement/poolblock/", {"action": "clear", "_selected_action": [block.pk]})

    block.refresh_from_db()
    assert not block.is_active


def test_an_operator_can_block_a_pool(operator):
    until = timezone.now() + timedelta(minutes=30)
    response = operator.post(
        "/admin/placement/poolblock/add/",
        {
            "provider": "gcp",
            "region": "us-central1",
            "availability_zone": "us-central1-a",
            "instance_type": "n2-standard-4",
            "until_0": until.strftime("%Y-%m-%d"),
            "until_1": until.strftime("%H:%M:%S"),
            "reason": "maintenance",
        },
    )

    assert response.status_code == 302, response.content
    block = PoolBlock.objects.get()
    assert block.is_active and block.reason == "maintenance"


def test_the_refresh_log_and_instance_types_render(operator):
    catalog_load_snapshot()
    assert operator.get("/admin/placement/pricerefresh/").status_code == 200
    assert operator.get("/admin/placement/instancetype/", {"architecture__exact": "arm64"}).status_code == 200
    assert operator.get("/admin/placement/pricehistory/").status_code == 200
