import io

import pytest
from django.core.management import CommandError, call_command

from placement.models import InstanceType, Offer


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_catalog_load_loads_once_and_then_changes_nothing(db):
    first = run("catalog_load")
    offers = Offer.objects.count()
    second = run("catalog_load")

    assert f"{offers} offers: {offers} new" in first
    assert f"{offers} offers: 0 new, 0 updated, {offers} unchanged" in second
    assert InstanceType.objects.count() >= 40 and Offer.objects.count() == offers


def test_placement_quote_prints_a_ranked_table(db):
    run("catalog_load")

    lines = run("placement_quote", "--vcpu", "4", "--memory-gb", "16", "--gpu-count", "1", "--gpu-type", "T4",
                "--providers", "aws,azure", "--limit", "3").splitlines()  # fmt: skip

    assert lines[0].split()[:5] == ["#", "provider", "region", "zone", "instance"]
    assert len(lines) == 4
    assert all(" x T4" in line for line in lines[1:])
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vcpu", "-4", "--memory-gb", "16"], "--vcpu: Ensure this value is greater than or equal to 1"),
        (["--vcpu", "4", "--memory-gb", "16", "--gpu-count", "1", "--gpu-type", "K80"], "--gpu-type"),
        (["--vcpu", "4", "--memory-gb", "16", "--providers", "aws,oracle"], "--providers"),
        (["--vcpu", "4", "--memory-gb", "16", "--providers", ","], "--providers"),
        (["--vcpu", "4", "--memory-gb", "1e9"], "--memory-gb"),
        (["--vcpu", "4", "--memory-gb", "inf"], "--memory-gb"),
        (["--vcpu", "four", "--memory-gb", "16"], "--vcpu"),
        (["--vcpu", "4", "--memory-gb", "16", "--max-price", "cheap"], "--max-price"),
        (["--vcpu", "4", "--memory-gb", "16", "--limit", "0"], "--limit"),
        (["--vcpu", "400", "--memory-gb", "16"], "400 or more vCPU"),
    ],
)
def test_placement_quote_refuses_bad_input_naming_the_option(db, args, message):
    run("catalog_load")
    with pytest.raises(CommandError, match=message):
        run("placement_quote", *args)
