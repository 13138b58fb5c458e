"""Workloads API: thin views that validate, call one service and shape the answer."""

from __future__ import annotations

import re
from decimal import Decimal

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from arbitrage.api.fields import StrictDecimalField, StrictSerializer
from workloads import recovery, selectors, services
from workloads.api.serializers import (
    WorkloadCreateSerializer,
    WorkloadDetailSerializer,
    WorkloadListQuerySerializer,
    WorkloadSerializer,
)

IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
ERROR = OpenApiResponse(description='Error: {"error": {status, code, message, fields?}}')


def _idempotency_key(request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_PATTERN.match(key):
        raise serializers.ValidationError({"Idempotency-Key": ["Must be 1 to 255 visible ASCII characters."]})
    return key


def _customer_workload(request, workload_id):
    workload = selectors.workload_get(customer=request.user.customer, workload_id=workload_id)
    if workload is None:
        raise Http404
    return workload


class WorkloadListCreateView(generics.GenericAPIView):
    serializer_class = WorkloadSerializer

    @extend_schema(
        operation_id="workloads_list",
        parameters=[
            OpenApiParameter("status", str, enum=[s for s, _ in WorkloadSerializer.Meta.model.status.field.choices]),
        ],
        responses={200: WorkloadSerializer(many=True), 400: ERROR, 401: ERROR},
    )
    def get(self, request):
        query = WorkloadListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        workloads = selectors.workload_list(customer=request.user.customer, status=query.validated_data.get("status"))
        page = self.paginate_queryset(workloads)
        return self.get_paginated_response(WorkloadSerializer(page, many=True).data)

    @extend_schema(
        operation_id="workloads_create",
        request=WorkloadCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Retrying a create with the same key returns the first answer.",
            )
        ],
        responses={
            201: WorkloadSerializer,
            400: ERROR,
            401: ERROR,
            402: OpenApiResponse(description="budget_exceeded: the customer's monthly budget is spent."),
            413: ERROR,
            422: OpenApiResponse(description="The Idempotency-Key was used before with another body."),
        },
    )
    def post(self, request):
        idempotency_key = _idempotency_key(request)
        serializer = WorkloadCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        workload, created = services.workload_create(
            customer=request.user.customer, idempotency_key=idempotency_key, **serializer.validated_data
        )
        headers = {"Location": f"/api/v1/workloads/{workload.id}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(WorkloadSerializer(workload).data, status=status.HTTP_201_CREATED, headers=headers)


class WorkloadDetailView(APIView):
    @extend_schema(operation_id="workloads_retrieve", responses={200: WorkloadDetailSerializer, 404: ERROR})
    def get(self, request, workload_id):
        return Response(WorkloadDetailSerializer(_customer_workload(request, workload_id)).data)


class WorkloadTerminateView(APIView):
    @extend_schema(
        operation_id="workloads_terminate",
        request=None,
        responses={202: WorkloadSerializer, 404: ERROR, 409: ERROR},
        description="Terminate a running workload, or cancel one that has not started yet. "
        "Answers 409 with `current_state` when its state does not allow it.",
    )
    def post(self, request, workload_id):
        workload = _customer_workload(request, workload_id)
        workload = services.workload_terminate(workload_id=workload.id)
        return Response(WorkloadSerializer(workload).data, status=status.HTTP_202_ACCEPTED)


class RebalanceSerializer(StrictSerializer):
    min_saving_pct = StrictDecimalField(
        max_digits=5, decimal_places=2, min_value=Decimal("0"), max_value=Decimal("100"), required=False
    )


class WorkloadRebalanceView(APIView):
    @extend_schema(
        operation_id="workloads_rebalance",
        request=RebalanceSerializer,
        responses={
            202: inline_serializer(
                "RebalanceStarted",
                {
                    "status": serializers.CharField(),
                    "saving_pct": serializers.CharField(),
                    "offer": serializers.DictField(),
                },
            ),
            400: ERROR,
            404: ERROR,
            409: OpenApiResponse(description="Not RUNNING (current_state), or no_cheaper_offer (with the best offer)."),
        },
        description="Move a RUNNING workload to the best other offer when it is cheaper by at least "
        "`min_saving_pct` percent (default REBALANCE_MIN_SAVING_PCT). It is checkpointed, re-placed and "
        "re-routed like a migration and keeps its endpoint name. 409 `no_cheaper_offer` otherwise.",
    )
    def post(self, request, workload_id):
        workload = _customer_workload(request, workload_id)
        body = RebalanceSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        margin = body.validated_data.get("min_saving_pct", Decimal(str(settings.REBALANCE_MIN_SAVING_PCT)))
        result = recovery.workload_rebalance(workload_id=workload.id, min_saving_pct=margin)
        return Response(result, status=status.HTTP_202_ACCEPTED)
