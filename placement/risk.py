"""Expected cost: a spot price adjusted for the pool's interruption risk.

    expected cost per hour = spot price x (1 + interruptions per hour x hours lost per interruption)

* interruptions per hour: a pool's bucket (the spot advisor's monthly interruption
  frequency, "<5%" ... ">20%") taken at its midpoint, read as the chance of one
  interruption within ``PLACEMENT_RISK_HORIZON_HOURS`` of running;
* hours lost per interruption: the replacement's start-up (``PLACEMENT_RESTART_MINUTES``:
  provisioning, boot, checkpoint restore) plus, on average, half a checkpoint interval of
  work done again (``PLACEMENT_CHECKPOINT_MINUTES``), both paid at the spot price.

So a slightly dearer pool that is far steadier can rank first. The figure is stored on
each offer when its price is written (``Offer.expected_cost``), so ranking reads an index.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

MONEY_QUANTUM = Decimal("0.000001")
RATE_QUANTUM = Decimal("0.00000001")
PCT_QUANTUM = Decimal("0.1")

# Midpoint of each bucket's monthly interruption frequency (">20%" taken as 25%).
BUCKET_FREQUENCY = (Decimal("0.025"), Decimal("0.075"), Decimal("0.125"), Decimal("0.175"), Decimal("0.25"))
BUCKET_LABELS = ("<5%", "5-10%", "10-15%", "15-20%", ">20%")


@dataclass(frozen=True)
class RiskModel:
    restart_minutes: int
    checkpoint_minutes: int
    horizon_hours: int

    @classmethod
    def from_settings(cls) -> RiskModel:
        return cls(
            restart_minutes=settings.PLACEMENT_RESTART_MINUTES,
            checkpoint_minutes=settings.PLACEMENT_CHECKPOINT_MINUTES,
            horizon_hours=settings.PLACEMENT_RISK_HORIZON_HOURS,
        )

    @property
    def hours_lost_per_interruption(self) -> Decimal:
        return (Decimal(self.restart_minutes) + Decimal(self.checkpoint_minutes) / 2) / 60

    def interruptions_per_hour(self, risk_bucket: int) -> Decimal:
        return BUCKET_FREQUENCY[risk_bucket] / self.horizon_hours

    def multiplier(self, risk_bucket: int) -> Decimal:
        return 1 + self.interruptions_per_hour(risk_bucket) * self.hours_lost_per_interruption

    def expected_cost(self, *, spot_price: Decimal, risk_bucket: int) -> Decimal:
        return (spot_price * self.multiplier(risk_bucket)).quantize(MONEY_QUANTUM, ROUND_HALF_UP)

    def score_parts(self, *, spot_price: Decimal, risk_bucket: int) -> dict[str, str]:
        """The score's terms as strings, so a person can see why an offer ranks where it does."""
        expected = self.expected_cost(spot_price=spot_price, risk_bucket=risk_bucket)
        return {
            "spot_price": str(spot_price),
            "interruption_frequency": BUCKET_LABELS[risk_bucket],
            "interruptions_per_hour": str(self.interruptions_per_hour(risk_bucket).quantize(RATE_QUANTUM)),
            "hours_lost_per_interruption": str(self.hours_lost_per_interruption.quantize(Decimal("0.0001"))),
            "risk_cost_per_hour": str(expected - spot_price),
            "expected_cost_per_hour": str(expected),
        }


def saving_pct(*, spot_price: Decimal, on_demand_price: Decimal) -> Decimal:
    """How much cheaper spot is than on-demand, in percent (0 when on-demand is unknown)."""
    if on_demand_price <= 0:
        return Decimal("0.0")
    return ((on_demand_price - spot_price) * 100 / on_demand_price).quantize(PCT_QUANTUM, ROUND_HALF_UP)
