"""Refreshing prices from the clouds' price APIs, offline: moto for AWS, local servers for Azure and GCP."""

import io
from decimal import Decimal
from importlib import import_module

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask
from moto import mock_aws

from placement import tasks
from placement.clouds import base
from placement.clouds.aws import AwsPriceSource
from placement.clouds.azure import AzurePriceSource
from placement.clouds.gcp import GcpPriceSource
from placement.models import Offer, PriceHistory, PriceRefresh
from placement.selectors import pool_estimates
from placement.services import catalog_load_snapshot, catalog_refresh
from tests.placement.aws_fake import spot_placement_scores
from tests.placement.fakes import FakeAzureRetailPrices, FakeCloudBilling, azure_item, gcp_sku

pytestmark = pytest.mark.django_db

AMERICAS = ["us-central1", "us-east1", "us-west1"]


@pytest.fixture
def snapshot(db):
    catalog_load_snapshot()


def offer(name: str, zone: str) -> Offer:
    return Offer.objects.select_related("instance_type").get(instance_type__name=name, availability_zone=zone)


def catalog_state() -> list[tuple]:
    return list(
        Offer.objects.order_by("id").values_list("id", "spot_price", "on_demand_price", "observed_at", "source")
    )


# --- Azure Retail Prices ------------------------------------------------------------------

AZURE_ITEMS = [
    azure_item("Standard_D2s_v5", "eastus", "0.096"),
    azure_item("Standard_D4s_v5", "eastus", "0.0100", spot=True, windows=True),  # Windows: not ours
    azure_item("Standard_D4s_v5", "eastus", "0.0050", low=True),  # Low Priority: not spot
    azure_item("Standard_D2s_v5", "eastus", "0.0192", spot=True),
    azure_item("Standard_HB120rs_v3", "eastus", "0.7200", spot=True),  # a size the catalog does not hold
    azure_item("Standard_D4s_v5", "eastus", "0.192"),
    azure_item("Standard_D4s_v5", "westeurope", "0.0550", spot=True),
    azure_item("Standard_D4s_v5", "eastus", "0.0384", spot=True),  # on the last page
]


@pytest.fixture
def azure_api():
    server = FakeAzureRetailPrices(list(AZURE_ITEMS), page_size=3)
    yield server
    server.close()


def test_azure_spot_meters_are_read_across_pages_into_every_zone_of_the_region(snapshot, azure_api):
    refresh = catalog_refresh(
        provider="azure", regions=["eastus"], source=AzurePriceSource(base_url=azure_api.base_url)
    )

    assert refresh.status == PriceRefresh.Status.SUCCEEDED, refresh.error
    assert sum("$skip=" in path for path in azure_api.requests) == 2  # three pages of eastus
    for zone in ("eastus-1", "eastus-2"):
        d4 = offer("Standard_D4s_v5", zone)
        assert (d4.spot_price, d4.on_demand_price, d4.source) == (Decimal("0.038400"), Decimal("0.192000"), "azure-api")
        assert offer("Standard_D2s_v5", zone).spot_price == Decimal("0.019200")
    assert offer("Standard_D4s_v5", "westeurope-1").source == "snapshot"  # not asked for
    assert (refresh.prices_changed, refresh.unknown_pools) == (4, 1)
    moved = PriceHistory.objects.filter(offer=offer("Standard_D4s_v5", "eastus-1")).order_by("observed_at")
    assert [h.spot_price for h in moved] == [Decimal("0.042240"), Decimal("0.038400")]


def test_a_refresh_that_changes_no_price_adds_no_history(snapshot, azure_api):
    source = AzurePriceSource(base_url=azure_api.base_url)
    catalog_refresh(provider="azure", regions=["eastus"], source=source)
    history = PriceHistory.objects.count()

    again = catalog_refresh(provider="azure", regions=["eastus"], source=source)

    assert again.status == PriceRefresh.Status.SUCCEEDED
    assert (again.prices_changed, PriceHistory.objects.count()) == (0, history)
    assert again.offers_updated == 4


def test_refreshed_prices_move_the_ranking(snapshot, azure_api):
    from placement.selectors import placement_candidates

    requirements = {"vcpu": 4, "memory_gb": 16, "providers": ["azure"], "regions": ["eastus", "westeurope"]}
    assert placement_candidates(requirements=requirements)[0].spot_price == Decimal("0.042240")

    catalog_refresh(provider="azure", regions=["eastus"], source=AzurePriceSource(base_url=azure_api.base_url))

    assert placement_candidates(requirements=requirements)[0].spot_price == Decimal("0.038400")


# --- failures keep the last good prices ---------------------------------------------------


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        ({"fail_with": 503}, "HTTP 503"),
        ({"fail_with": 500, "fail_after_pages": 1}, "HTTP 500"),  # half-way through the pages
        ({"fail_with": 403}, "HTTP 403"),
        ({"garbage": b"<html>maintenance</html>"}, "not JSON"),
        (
            {"garbage": b'{"Items": [{"armRegionName": "eastus", "unitOfMeasure": "1 Hour", "armSkuName": "x"}]}'},
            "unexpected",
        ),
        ({"garbage": b'{"Items": [], "NextPageLink": null}'}, "no prices"),
    ],
)
def test_a_failed_azure_refresh_keeps_the_last_good_prices_and_says_so(snapshot, azure_api, breakage, error):
    for name, value in breakage.items():
        setattr(azure_api, name, value)
    before, offers = catalog_state(), Offer.objects.count()

    refresh = catalog_refresh(
        provider="azure", regions=["eastus"], source=AzurePriceSource(base_url=azure_api.base_url)
    )

    assert refresh.status == PriceRefresh.Status.FAILED
    assert error in refresh.error and "kept the last good prices" in refresh.error
    assert catalog_state() == before and Offer.objects.count() == offers
    assert PriceRefresh.objects.get() == refresh


def test_an_unreachable_price_api_keeps_the_last_good_prices(snapshot, azure_api):
    url = azure_api.base_url
    azure_api.close()
    before = catalog_state()

    refresh = catalog_refresh(provider="azure", regions=["eastus"], source=AzurePriceSource(base_url=url, timeout=5))

    assert refresh.status == PriceRefresh.Status.FAILED and "TransientCloudError" in refresh.error
    assert catalog_state() == before


# --- GCP Cloud Billing Catalog ------------------------------------------------------------

GCP_SKUS = [
    gcp_sku("Spot Preemptible N2 Instance Core running in Americas", "0.007654", usage="Preemptible",
            regions=AMERICAS, group="CPU"),
    gcp_sku("N2 Instance Core running in Americas", "0.031611", usage="OnDemand", regions=AMERICAS, group="CPU"),
    gcp_sku("Commitment v1: N2 Cpu in Americas for 1 Year", "0.019915", usage="Commit1Yr", regions=AMERICAS,
            group="CPU"),
    gcp_sku("N2 Instance Ram running in Americas", "0.004237", usage="OnDemand", regions=AMERICAS, group="RAM",
            unit="GiBy.h"),
    gcp_sku("Spot Preemptible N2 Instance Core running in Belgium", "0.008100", usage="Preemptible",
            regions=["europe-west1"], group="CPU"),
    gcp_sku("Spot Preemptible G2 Instance Core running in Americas", "0.008800", usage="Preemptible",
            regions=AMERICAS, group="CPU"),
    gcp_sku("Spot Preemptible G2 Instance Ram running in Americas", "0.001030", usage="Preemptible",
            regions=AMERICAS, group="RAM", unit="GiBy.h"),
    gcp_sku("Nvidia L4 GPU attached to Spot Preemptible VMs running in Americas", "0.223600", usage="Preemptible",
            regions=AMERICAS, group="GPU"),
    gcp_sku("Spot Preemptible N2 Instance Ram running in Americas", "0.001026", usage="Preemptible",
            regions=AMERICAS, group="RAM", unit="GiBy.h"),
]  # fmt: skip


@pytest.fixture
def gcp_api():
    server = FakeCloudBilling(list(GCP_SKUS), page_size=2)
    yield server
    server.close()


def test_gcp_machine_prices_are_built_from_core_memory_and_gpu_skus_across_pages(snapshot, gcp_api):
    source = GcpPriceSource(base_url=gcp_api.base_url, api_key="test-key")

    refresh = catalog_refresh(provider="gcp", regions=["us-central1"], source=source)

    assert refresh.status == PriceRefresh.Status.SUCCEEDED, refresh.error
    assert len(gcp_api.requests) == 5  # nine SKUs, two a page
    n2 = offer("n2-standard-4", "us-central1-a")
    assert n2.spot_price == Decimal("0.047032")  # 4 x 0.007654 + 16 x 0.001026
    assert n2.on_demand_price == Decimal("0.194236")  # 4 x 0.031611 + 16 x 0.004237
    assert offer("n2-standard-4", "us-central1-b").spot_price == n2.spot_price
    g2 = offer("g2-standard-4", "us-central1-b")
    assert g2.spot_price == Decimal("0.275280")  # 4 x 0.0088 + 16 x 0.00103 + 1 L4 x 0.2236
    assert g2.on_demand_price == Decimal("0.706832")  # no on-demand G2 SKUs here: unchanged
    assert offer("e2-standard-4", "us-central1-a").source == "snapshot"  # no E2 SKUs: unchanged
    assert offer("n2-standard-4", "europe-west4-a").source == "snapshot"


def test_a_gcp_answer_missing_its_prices_fails_and_keeps_the_last_good_prices(snapshot, gcp_api):
    broken = dict(GCP_SKUS[0])
    del broken["pricingInfo"]
    gcp_api.skus = [broken, *GCP_SKUS[1:]]
    before = catalog_state()

    refresh = catalog_refresh(
        provider="gcp", regions=["us-central1"], source=GcpPriceSource(base_url=gcp_api.base_url, api_key="test-key")
    )

    assert refresh.status == PriceRefresh.Status.FAILED and "unexpected Cloud Billing answer" in refresh.error
    assert catalog_state() == before


def test_a_refused_gcp_api_key_is_reported_without_the_key(snapshot, gcp_api):
    gcp_api.fail_with = 400

    refresh = catalog_refresh(
        provider="gcp", regions=["us-central1"], source=GcpPriceSource(base_url=gcp_api.base_url, api_key="s3cret")
    )

    assert refresh.status == PriceRefresh.Status.FAILED and "HTTP 400" in refresh.error
    assert "s3cret" not in refresh.error


# --- AWS DescribeSpotPriceHistory (moto) --------------------------------------------------


@pytest.fixture
def aws_credentials(monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)


def test_aws_spot_prices_are_read_per_zone_from_describe_spot_price_history(snapshot, aws_credentials):
    with mock_aws(), spot_placement_scores({}):
        refresh = catalog_refresh(provider="aws", regions=["us-east-1"], source=AwsPriceSource())

    assert refresh.status == PriceRefresh.Status.SUCCEEDED, refresh.error
    # moto answers every offered (zone, type) with the price 0.00001.
    for zone in ("us-east-1a", "us-east-1b"):
        m6i = offer("m6i.large", zone)
        assert (m6i.spot_price, m6i.source) == (Decimal("0.000010"), "aws-api")
        assert m6i.on_demand_price == Decimal("0.096000")  # not in this API: kept
    assert offer("m6i.large", "us-west-2a").source == "snapshot"
    assert refresh.prices_changed >= 2 and refresh.unknown_pools > 0  # zones the catalog does not hold


def test_aws_placement_scores_become_each_pools_prior_refusal_rate_once_a_day(snapshot, aws_credentials, settings):
    settings.PLACEMENT_SCORE_INSTANCE_TYPES = ["m6i.large"]
    pools = [("aws", "us-east-1", zone, "m6i.large") for zone in ("us-east-1a", "us-east-1b")]
    before = pool_estimates(pools=pools)
    with mock_aws(), spot_placement_scores({("m6i.large", "us-east-1a"): 9, ("m6i.large", "us-east-1b"): 2}):
        refresh = catalog_refresh(provider="aws", regions=["us-east-1"], source=AwsPriceSource())
    assert refresh.status == PriceRefresh.Status.SUCCEEDED, refresh.error
    assert (offer("m6i.large", "us-east-1a").placement_score, offer("m6i.large", "us-east-1b").placement_score) == (
        9,
        2,
    )
    after = pool_estimates(pools=pools)
    assert after[pools[0]].refusal_rate == pytest.approx(0.1)  # 9 of 10: one launch in ten refused
    assert after[pools[1]].refusal_rate == pytest.approx(0.8)
    assert before[pools[1]].refusal_rate == pytest.approx(0.1)  # no score: the default prior

    # Within the day the scores are not asked again (the cloud limits how often): the next refresh keeps them.
    with mock_aws(), spot_placement_scores({("m6i.large", "us-east-1b"): 10}):
        catalog_refresh(provider="aws", regions=["us-east-1"], source=AwsPriceSource())
    assert offer("m6i.large", "us-east-1b").placement_score == 2


def test_a_refused_placement_score_request_keeps_the_prices_and_the_last_scores(snapshot, aws_credentials, settings):
    settings.PLACEMENT_SCORE_INSTANCE_TYPES = ["m6i.large"]
    denied = ("UnauthorizedOperation", "You are not authorized to perform: ec2:GetSpotPlacementScores")
    with mock_aws(), spot_placement_scores({}, error=denied):
        refresh = catalog_refresh(provider="aws", regions=["us-east-1"], source=AwsPriceSource())
    assert refresh.status == PriceRefresh.Status.SUCCEEDED, refresh.error
    assert offer("m6i.large", "us-east-1a").placement_score is None


def test_aws_refresh_without_any_instance_type_in_the_catalog_fails_cleanly(db, aws_credentials):
    with mock_aws():
        refresh = catalog_refresh(provider="aws", regions=["us-east-1"], source=AwsPriceSource())
    assert refresh.status == PriceRefresh.Status.FAILED


# --- the beat task and the command ----------------------------------------------------------


class BrokenSource(base.PriceSource):
    provider = "gcp"

    def fetch_spot_prices(self, *, regions):
        raise base.TransientCloudError("billing API timed out", provider="gcp")


@pytest.fixture
def registered(monkeypatch, azure_api, settings):
    """The registry as PRICE_SOURCES=azure,gcp would fill it, azure answering and gcp broken."""
    settings.PRICE_SOURCES = ["azure", "gcp"]
    monkeypatch.setitem(base._price_sources, "azure", AzurePriceSource(base_url=azure_api.base_url))
    monkeypatch.setitem(base._price_sources, "gcp", BrokenSource())


def test_the_beat_task_refreshes_every_source_and_one_failure_does_not_stop_the_others(snapshot, registered):
    assert tasks.catalog_refresh() == ["azure: succeeded", "gcp: failed"]
    assert offer("Standard_D4s_v5", "eastus-1").spot_price == Decimal("0.038400")
    assert PriceRefresh.objects.get(provider="gcp").error.startswith("TransientCloudError: billing API timed out")


def test_the_refresh_runs_hourly_on_an_editable_beat_schedule(db):
    from django.apps import apps

    from arbitrage.celery import app

    # The data migration that makes the schedule, run again: it is idempotent.
    import_module("placement.migrations.0002_schedule_price_refresh").create_schedule(apps, None)
    import_module("placement.migrations.0002_schedule_price_refresh").create_schedule(apps, None)

    periodic = PeriodicTask.objects.get(name="Refresh spot prices")
    assert periodic.enabled and periodic.task == "placement.catalog_refresh"
    assert (periodic.interval.every, periodic.interval.period) == (1, "hours")
    app.loader.import_default_modules()
    assert "placement.catalog_refresh" in app.tasks


def test_the_refresh_command_refreshes_one_provider(snapshot, registered):
    out = io.StringIO()
    call_command("catalog_refresh", "azure", "--regions", "eastus", stdout=out)
    assert (
        "azure (eastus): 3 prices read, 4 offers updated, 4 prices changed, 1 for pools not in the catalog"
        in out.getvalue()
    )

    with pytest.raises(CommandError, match="gcp refresh failed: TransientCloudError"):
        call_command("catalog_refresh", "gcp", stdout=io.StringIO())


def test_the_refresh_command_explains_an_unconfigured_provider(snapshot):
    with pytest.raises(CommandError, match="PRICE_SOURCES"):
        call_command("catalog_refresh", "aws", stdout=io.StringIO())
