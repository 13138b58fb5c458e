"""The arbitrage engine: requirements in, offers ranked by expected cost out.

How a quote stays fast on a large catalog: it never reads the offers that cannot
make the list.

1. Instance types (a small table) that have the requested shape, architecture and
   GPUs, from an allowed provider, are read cheapest first: each type keeps the
   lowest expected cost among its offers (``InstanceType.min_expected_cost``).
2. For a page of those types, one SQL statement takes each type's best ``limit``
   offers that pass the location, price and block filters (an index on
   ``(instance_type, expected_cost, ...)`` serves each part in order, so each part
   reads about ``limit`` rows) and keeps the best ``limit`` of them all.
3. Types are read in pages (8, 16, 32, ...) until the next type's lowest expected
   cost is above the ``limit``-th best found: no offer of it, or of any type after
   it, can rank.

A quote pinned to regions or zones ranks the types by their cheapest offer *there*
instead (one aggregate over the offers in those locations, an index-only read), so
its cost grows with the offers in the places asked for, not with the catalog.

Ties are broken by spot price, risk bucket, provider, region, zone and type name,
so the same catalog always gives the same answer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from decimal import ROUND_UP, Decimal
from typing import Any

from django.conf import settings
from django.db.models import Min, Q, QuerySet, Value

from placement.errors import InvalidRequirements, NoPlacement
from placement.models import InstanceType, Offer
from placement.requirements import RequirementsSerializer
from placement.risk import BUCKET_FREQUENCY, MONEY_QUANTUM, RiskModel, saving_pct

Pool = tuple[str, str, str, str]  # (provider, region, availability_zone, instance_type)

FIRST_PAGE = 8
MAX_PAGE = 64
LOCATION_HEAD = FIRST_PAGE * 7  # the first three pages: 8 + 16 + 32 types
MAX_LIMIT = 100
_DECIMAL_FIELDS = ("spot_price", "on_demand_price", "saving_pct", "expected_cost_per_hour")
_TYPE_COLUMNS = (
    "id",
    "provider",
    "name",
    "vcpu",
    "memory_gb",
    "gpu_count",
    "gpu_type",
    "architecture",
    "min_expected_cost",
)
_OFFER_ORDER = ("expected_cost", "spot_price", "risk_bucket", "t_provider", "region", "availability_zone", "t_name")


@dataclass(frozen=True)
class Requirements:
    vcpu: int
    memory_gb: float
    gpu_count: int
    gpu_type: str | None
    architecture: str
    providers: tuple[str, ...]
    regions: tuple[str, ...]
    zones: tuple[str, ...]
    max_price_per_hour: Decimal | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Requirements:
        """Validated by the one definition, ``RequirementsSerializer``; missing keys take its defaults."""
        serializer = RequirementsSerializer(data=data)
        if not serializer.is_valid():
            field, problem = next(iter(serializer.errors.items()))
            raise InvalidRequirements(f"requirements.{field}: {problem}", fields=serializer.errors)
        valid = serializer.validated_data
        return cls(
            vcpu=valid["vcpu"],
            memory_gb=valid["memory_gb"],
            gpu_count=valid["gpu_count"],
            gpu_type=valid["gpu_type"],
            architecture=valid["architecture"],
            providers=tuple(valid["providers"]),
            regions=tuple(dict.fromkeys(valid["regions"])),
            zones=tuple(dict.fromkeys(valid["zones"])),
            max_price_per_hour=valid["max_price_per_hour"],
        )


@dataclass(frozen=True)
class Candidate:
    """One ranked offer: where to run, what it costs, and why it ranks where it does."""

    provider: str
    region: str
    availability_zone: str
    instance_type: str
    vcpu: int
    memory_gb: float
    gpu_count: int
    gpu_type: str | None
    architecture: str
    spot_price: Decimal
    on_demand_price: Decimal
    saving_pct: Decimal
    risk_bucket: int
    expected_cost_per_hour: Decimal
    score_parts: dict[str, str]
    observed_at: datetime | None = None

    @property
    def pool(self) -> Pool:
        return (self.provider, self.region, self.availability_zone, self.instance_type)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: decimals as strings, ``observed_at`` in ISO 8601."""
        data = asdict(self)
        for name in _DECIMAL_FIELDS:
            data[name] = str(data[name])
        data["observed_at"] = self.observed_at.isoformat() if self.observed_at else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        known = {f.name for f in fields(cls)}
        values = {name: value for name, value in data.items() if name in known}
        for name in _DECIMAL_FIELDS:
            values[name] = Decimal(str(values[name]))
        observed_at = values.get("observed_at")
        values["observed_at"] = datetime.fromisoformat(observed_at) if isinstance(observed_at, str) else observed_at
        values["score_parts"] = dict(values.get("score_parts") or {})
        return cls(**values)


# --- the search ---------------------------------------------------------------------


def feasible_types(req: Requirements) -> QuerySet[InstanceType]:
    """Instance types with the shape, architecture and GPUs asked for, that have offers."""
    types = InstanceType.objects.filter(
        provider__in=req.providers,
        architecture=req.architecture,
        vcpu__gte=req.vcpu,
        memory_gb__gte=req.memory_gb,
        min_expected_cost__isnull=False,
    )
    types = _gpu_filter(types, req, prefix="")
    if req.max_price_per_hour is not None:
        types = types.filter(min_spot_price__lte=req.max_price_per_hour)
    return types


def _gpu_filter(queryset: QuerySet, req: Requirements, *, prefix: str) -> QuerySet:
    # A workload that asks for no GPU is not put on a GPU machine: GPUs are scarce,
    # and no GPU machine is the cheapest way to buy CPU and memory.
    if req.gpu_count == 0:
        return queryset.filter(**{f"{prefix}gpu_count": 0})
    queryset = queryset.filter(**{f"{prefix}gpu_count__gte": req.gpu_count})
    if req.gpu_type:
        queryset = queryset.filter(**{f"{prefix}gpu_type": req.gpu_type})
    return queryset


def rank_offers(req: Requirements, *, limit: int, excluded: Iterable[Pool]) -> list[Candidate]:
    """The best ``limit`` offers for ``req``, best first, skipping ``excluded`` pools."""
    excluded_by_type: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for provider, region, zone, instance_type in set(excluded):
        excluded_by_type[(provider, instance_type)].append((region, zone))
    parts = _TypeParts(req, limit, excluded_by_type)
    pages = _type_pages_in_locations(req) if req.regions or req.zones else _type_pages(req)

    best: list[Offer] = []
    shapes: dict[int, tuple] = {}
    for page, next_bound in pages:
        if len(best) >= limit:
            page = [shape for shape in page if shape[-1] <= best[-1].expected_cost]
            if not page:
                break
        shapes.update((shape[0], shape) for shape in page)
        best = sorted([*best, *parts.best_offers(page)], key=_rank_key)[:limit]
        if next_bound is None or (len(best) >= limit and next_bound > best[-1].expected_cost):
            break

    model = RiskModel.from_settings()
    return [_candidate(offer, shapes[offer.instance_type_id], model) for offer in best]


def _type_pages(req: Requirements) -> Iterator[tuple[list[tuple], Decimal | None]]:
    """Feasible types cheapest first, in growing pages, each with the next type's bound (None: no more)."""
    ordered = feasible_types(req).order_by("min_expected_cost", "id").values_list(*_TYPE_COLUMNS)
    after: tuple[Decimal, int] | None = None
    size = FIRST_PAGE
    while True:
        query = ordered
        if after is not None:
            query = query.filter(Q(min_expected_cost__gt=after[0]) | Q(min_expected_cost=after[0], id__gt=after[1]))
        fetched = list(query[: size + 1])
        page = fetched[:size]
        if not page:
            return
        yield page, (fetched[size][-1] if len(fetched) > size else None)
        after = (page[-1][-1], page[-1][0])
        size = min(size * 2, MAX_PAGE)


def _type_pages_in_locations(req: Requirements) -> Iterator[tuple[list[tuple], Decimal | None]]:
    """As ``_type_pages``, for a quote pinned to regions or zones.

    A type's catalog-wide bound says little about its offers in one region, so one
    aggregate over the offers in the allowed locations gives each type its exact
    bound there (a type not offered there is left out). The first pages' worth is
    read at once; the rest only when the search gets that far.
    """
    ranked = (
        _location_offers(Offer.objects.filter(instance_type__in=feasible_types(req)), req)
        .values("instance_type_id")
        .annotate(bound=Min("expected_cost"))
        .order_by("bound", "instance_type_id")
        .values_list("instance_type_id", "bound")
    )
    bounds = list(ranked[: LOCATION_HEAD + 1])
    complete = len(bounds) <= LOCATION_HEAD
    start, size = 0, FIRST_PAGE
    while start < len(bounds):
        if not complete and start + size >= len(bounds):
            bounds, complete = list(ranked), True
        chunk = bounds[start : start + size]
        shapes = InstanceType.objects.filter(id__in=[type_id for type_id, _ in chunk]).order_by()
        shape_of = {shape[0]: shape for shape in shapes.values_list(*_TYPE_COLUMNS[:-1])}
        following = bounds[start + size][1] if start + size < len(bounds) else None
        yield [(*shape_of[type_id], bound) for type_id, bound in chunk], following
        start += size
        size = min(size * 2, MAX_PAGE)


def _location_offers(offers: QuerySet[Offer], req: Requirements) -> QuerySet[Offer]:
    """Offers in the allowed regions and zones, under the max price."""
    if req.regions:
        offers = offers.filter(region__in=req.regions)
    if req.zones:
        offers = offers.filter(availability_zone__in=req.zones)
    if req.max_price_per_hour is not None:
        offers = offers.filter(spot_price__lte=req.max_price_per_hour)
    return offers


def _rank_key(offer: Offer) -> tuple:
    return (
        offer.expected_cost,
        offer.spot_price,
        offer.risk_bucket,
        offer.t_provider,
        offer.region,
        offer.availability_zone,
        offer.t_name,
    )


class _TypeParts:
    """One SQL statement per page of types: each type's best ``limit`` offers, merged.

    Each type's part is the same query but for the type's id and name, so it is
    compiled by the ORM once (with marker values) and reused with each type's
    values; a type that has excluded pools gets its own compiled part.
    """

    _TYPE_ID, _PROVIDER, _NAME = -1, "\x00provider", "\x00name"

    def __init__(self, req: Requirements, limit: int, excluded_by_type: dict) -> None:
        offers = _location_offers(Offer.objects.all(), req)
        if req.max_price_per_hour is not None:
            # Implied by the max price, and it lets each type's index walk stop early.
            highest = req.max_price_per_hour * RiskModel.from_settings().multiplier(len(BUCKET_FREQUENCY) - 1)
            offers = offers.filter(expected_cost__lte=highest.quantize(MONEY_QUANTUM, ROUND_UP))
        self.offers, self.limit, self.excluded_by_type = offers, limit, excluded_by_type
        # A provider limited to some regions (CLOUD_REGIONS) is only placed there: its
        # adapter has subnets and images for those alone.
        self.enabled_regions = {provider: regions for provider, regions in settings.CLOUD_REGIONS.items() if regions}
        self.templates: dict[str, tuple] = {}

    def _template(self, provider: str) -> tuple:
        key = provider if provider in self.enabled_regions else ""
        if key not in self.templates:
            self.templates[key] = self._compile(self._TYPE_ID, self._PROVIDER, self._NAME, (), provider_key=key)
        return self.templates[key]

    def _compile(
        self, type_id: int, provider: str, name: str, excluded: Sequence[tuple[str, str]], *, provider_key: str = ""
    ):
        part = self.offers.filter(instance_type_id=type_id)
        regions = self.enabled_regions.get(provider_key or provider)
        if regions:
            part = part.filter(region__in=regions)
        for region, zone in excluded:
            part = part.exclude(region=region, availability_zone=zone)
        part = (
            part.annotate(t_provider=Value(provider), t_name=Value(name))
            .order_by("expected_cost", "spot_price", "risk_bucket", "region", "availability_zone")
            .values(
                "id",
                "instance_type_id",
                "region",
                "availability_zone",
                "spot_price",
                "on_demand_price",
                "risk_bucket",
                "expected_cost",
                "observed_at",
                "t_provider",
                "t_name",
            )[: self.limit]
        )
        return part.query.sql_with_params()

    def _part(self, type_id: int, provider: str, name: str) -> tuple[str, list]:
        excluded = self.excluded_by_type.get((provider, name))
        if excluded:
            sql, params = self._compile(type_id, provider, name, excluded)
            return sql, list(params)
        sql, params = self._template(provider)
        markers = {self._TYPE_ID: type_id, self._PROVIDER: provider, self._NAME: name}
        return sql, [markers.get(value, value) if isinstance(value, (int, str)) else value for value in params]

    def best_offers(self, types: Sequence[tuple]) -> list[Offer]:
        sqls, params = [], []
        for index, (type_id, provider, name, *_shape) in enumerate(types):
            sql, part_params = self._part(type_id, provider, name)
            sqls.append(f"SELECT * FROM ({sql}) AS part{index}")
            params.extend(part_params)
        union = " UNION ALL ".join(sqls)
        sql = f"SELECT * FROM ({union}) AS ranked ORDER BY {', '.join(_OFFER_ORDER)} LIMIT %s"
        return list(Offer.objects.raw(sql, [*params, self.limit]))


def _candidate(offer: Offer, shape: tuple, model: RiskModel) -> Candidate:
    _id, provider, name, vcpu, memory_gb, gpu_count, gpu_type, architecture, _bound = shape
    return Candidate(
        provider=provider,
        region=offer.region,
        availability_zone=offer.availability_zone,
        instance_type=name,
        vcpu=vcpu,
        memory_gb=memory_gb,
        gpu_count=gpu_count,
        gpu_type=gpu_type,
        architecture=architecture,
        spot_price=offer.spot_price,
        on_demand_price=offer.on_demand_price,
        saving_pct=saving_pct(spot_price=offer.spot_price, on_demand_price=offer.on_demand_price),
        risk_bucket=offer.risk_bucket,
        expected_cost_per_hour=offer.expected_cost,
        score_parts=model.score_parts(spot_price=offer.spot_price, risk_bucket=offer.risk_bucket),
        observed_at=offer.observed_at,
    )


# --- why nothing fits ---------------------------------------------------------------


def no_placement(req: Requirements, *, excluded: Iterable[Pool]) -> NoPlacement:
    """Names the first requirement, in a fixed order, after which no offer is left.

    The instance types' requirements are checked on the small type table first,
    then locations and price on the offers of the types left, so the answer
    costs about as much as a quote.
    """
    types = InstanceType.objects.filter(min_expected_cost__isnull=False)
    if not types.exists():
        return NoPlacement(
            "No placement: the price catalog is empty (load it: manage.py catalog_load).", requirement="catalog"
        )
    met: list[str] = []
    for requirement, narrow, wanted in _type_steps(req):
        types = narrow(types)
        if not types.exists():
            return _refusal(requirement, wanted, met)
        met.append(wanted)
    offers = Offer.objects.filter(instance_type__in=types)
    for requirement, narrow, wanted in _offer_steps(req):
        narrowed = narrow(offers)
        if not narrowed.exists():
            return _refusal(requirement, wanted, met)
        offers = narrowed
        met.append(wanted)
    if req.max_price_per_hour is not None:
        cheapest = _cheapest(offers, types, pinned=bool(req.regions or req.zones))
        if cheapest.spot_price > req.max_price_per_hour:
            refusal = _refusal("max_price_per_hour", f"at {req.max_price_per_hour} per hour or less", met)
            refusal.message += f" The cheapest costs {cheapest.spot_price} per hour ({cheapest})."
            return refusal
    return NoPlacement(
        "No placement: every offer that meets the requirements is in a pool blocked after a recent "
        f"interruption or capacity error, or excluded by the caller ({len(set(excluded))} pools); "
        "blocks end after their cool-down.",
        requirement="pool_blocks",
    )


def _cheapest(offers: QuerySet[Offer], types: QuerySet[InstanceType], *, pinned: bool) -> Offer:
    """The cheapest offer left; when not pinned to locations, the types' bounds find it."""
    if not pinned:
        offers = Offer.objects.filter(instance_type=types.order_by("min_spot_price", "id")[:1])
    return offers.select_related("instance_type").order_by("spot_price", "id").first()


def _refusal(requirement: str, wanted: str, met: list[str]) -> NoPlacement:
    among = f" among the offers {' '.join(met)}" if met else ""
    return NoPlacement(f"No placement: no offer {wanted} ({requirement}){among}.", requirement=requirement)


def _type_steps(req: Requirements):
    yield "providers", lambda q: q.filter(provider__in=req.providers), f"from {' or '.join(req.providers)}"
    yield "architecture", lambda q: q.filter(architecture=req.architecture), f"for {req.architecture}"
    if req.gpu_count and req.gpu_type:
        yield "gpu_type", lambda q: q.filter(gpu_type=req.gpu_type), f"with {req.gpu_type} GPUs"
    yield (
        "gpu_count",
        lambda q: _gpu_filter(q, req, prefix=""),
        f"with {req.gpu_count} or more GPUs" if req.gpu_count else "without GPUs",
    )
    yield "vcpu", lambda q: q.filter(vcpu__gte=req.vcpu), f"with {req.vcpu} or more vCPU"
    yield "memory_gb", lambda q: q.filter(memory_gb__gte=req.memory_gb), f"with {req.memory_gb:g} GiB or more memory"


def _offer_steps(req: Requirements):
    if req.regions:
        yield "regions", lambda q: q.filter(region__in=req.regions), f"in {' or '.join(req.regions)}"
    if req.zones:
        yield "zones", lambda q: q.filter(availability_zone__in=req.zones), f"in zone {' or '.join(req.zones)}"
