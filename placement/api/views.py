"""Placement API: quotes and the offer catalog. Thin views: validate, one selector call, shape."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.response import Response
from rest_framework.views import APIView

from placement import selectors
from placement.api.serializers import (
    CandidateSerializer,
    OfferDetailSerializer,
    OfferListQuerySerializer,
    OfferSerializer,
    QuoteRequestSerializer,
    QuoteResponseSerializer,
)
from placement.requirements import GPU_TYPES, PROVIDERS, RequirementsSerializer

ERROR = OpenApiResponse(description='Error: {"error": {status, code, message, fields?}}')
NO_PLACEMENT = OpenApiResponse(
    description='Nothing fits: {"error": {"status": 422, "code": "no_placement", "message", "requirement"}}, '
    "where requirement names the one that excluded every offer."
)
HISTORY_LENGTH = 100


class QuoteView(APIView):
    @extend_schema(
        operation_id="placement_quote",
        request=QuoteRequestSerializer,
        responses={200: QuoteResponseSerializer, 400: ERROR, 401: ERROR, 422: NO_PLACEMENT},
        description="Where a workload with these requirements would run now: offers ranked by expected cost "
        "(the spot price adjusted for the pool's interruption risk), best first, skipping blocked pools.",
    )
    def post(self, request):
        query = QuoteRequestSerializer(data=request.data)
        query.is_valid(raise_exception=True)
        candidates = selectors.placement_candidates(
            requirements=RequirementsSerializer().to_representation(query.validated_data["requirements"]),
            limit=query.validated_data["limit"],
        )
        ranked = [{"rank": rank, **candidate.as_dict()} for rank, candidate in enumerate(candidates, start=1)]
        return Response({"count": len(ranked), "candidates": CandidateSerializer(ranked, many=True).data})


class OfferListView(generics.GenericAPIView):
    serializer_class = OfferSerializer

    @extend_schema(
        operation_id="placement_offers_list",
        parameters=[
            OpenApiParameter("provider", str, enum=list(PROVIDERS)),
            OpenApiParameter("region", str),
            OpenApiParameter("gpu_type", str, enum=list(GPU_TYPES)),
            OpenApiParameter("min_vcpu", int),
            OpenApiParameter("min_memory_gb", float),
        ],
        responses={200: OfferSerializer(many=True), 400: ERROR, 401: ERROR},
        description="The spot price catalog, cheapest expected cost first, paginated (page, page_size <= 200).",
    )
    def get(self, request):
        query = OfferListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        filters = {name: value for name, value in query.validated_data.items() if name not in ("page", "page_size")}
        page = self.paginate_queryset(selectors.offer_list(**filters))
        return self.get_paginated_response(OfferSerializer(page, many=True).data)


class OfferDetailView(APIView):
    @extend_schema(operation_id="placement_offers_retrieve", responses={200: OfferDetailSerializer, 404: ERROR})
    def get(self, request, offer_id: int):
        offer = selectors.offer_get(offer_id=offer_id)
        if offer is None:
            raise Http404
        history = selectors.price_history(offer=offer)[:HISTORY_LENGTH]
        return Response(OfferDetailSerializer(offer, context={"history": history}).data)
