"""Workloads API: thin views that validate, call one service and shape the answer."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.http import Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from arbitrage.api.fields import StrictDecimalField, StrictSerializer
from arbitrage.api.parsers import StrictContentNegotiation
from workloads import recovery, selectors, services
from workloads.api.serializers import (
    MAX_POSITION,
    LogLineSerializer,
    LogPageSerializer,
    LogsQuerySerializer,
    WorkloadBatchCreateSerializer,
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


class WorkloadBatchCreateView(APIView):
    @extend_schema(
        operation_id="workloads_create_batch",
        request=WorkloadBatchCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Retrying a batch with the same key returns the workloads the first one made.",
            )
        ],
        responses={
            201: inline_serializer("WorkloadBatch", {"workloads": WorkloadSerializer(many=True)}),
            400: ERROR,
            401: ERROR,
            402: OpenApiResponse(description="budget_exceeded: the customer's monthly budget is spent."),
            413: ERROR,
            422: OpenApiResponse(description="The Idempotency-Key was used before with another body."),
        },
        description="Submit up to 500 workloads in one call (a parameter sweep): all of them are stored, or, "
        "when one is invalid, none (the error names it by its index, e.g. `workloads.3.requirements.vcpu`).",
    )
    def post(self, request):
        idempotency_key = _idempotency_key(request)
        serializer = WorkloadBatchCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        workloads, replayed = services.workload_batch_create(
            customer=request.user.customer,
            workloads=serializer.validated_data["workloads"],
            idempotency_key=idempotency_key,
        )
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return Response(
            {"workloads": WorkloadSerializer(workloads, many=True).data},
            status=status.HTTP_201_CREATED,
            headers=headers,
        )


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


# --- logs ----------------------------------------------------------------------------------------

FOLLOW_PAGE = 1000


class EventStreamNegotiation(StrictContentNegotiation):
    """JSON, and also for a client that accepts only ``text/event-stream``: the view writes the stream itself.

    Every answer but the follow stream (the JSON page and every error) is JSON.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        accepted = {part.split(";")[0].strip() for part in request.META.get("HTTP_ACCEPT", "").split(",")}
        if "text/event-stream" in accepted:
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)


def _sse(event: str, data: dict, *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _log_events(*, workload_id: UUID, after: int) -> Iterator[str]:
    """The follow loop: new lines as events until the log ends, the client goes away or the time is up.

    Each poll collects the live instance's new output, reads the lines after the last one sent
    (in autocommit: no transaction stays open between polls) and sleeps
    ``LOGS_FOLLOW_POLL_SECONDS``. A client that went away is seen at the next write (a line
    or the keep-alive), where the server stops iterating.
    """
    started = last_sent = time.monotonic()
    while True:
        services.workload_output_collect(workload_id=workload_id)
        page = selectors.workload_log_page(workload_id=workload_id, after=after, limit=FOLLOW_PAGE)
        for line in page.lines:
            yield _sse("line", LogLineSerializer(line).data, event_id=line.position)
        after = page.next_after
        now = time.monotonic()
        if page.lines:
            last_sent = now
        if page.ended:
            yield _sse("end", {"status": page.status})
            return
        if page.more:
            continue
        if now - started >= settings.LOGS_FOLLOW_MAX_SECONDS:
            return  # the client reconnects with Last-Event-ID
        if now - last_sent >= settings.LOGS_FOLLOW_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = now
        time.sleep(settings.LOGS_FOLLOW_POLL_SECONDS)


class WorkloadLogsView(APIView):
    content_negotiation_class = EventStreamNegotiation

    @extend_schema(
        operation_id="workloads_logs",
        parameters=[
            LogsQuerySerializer,
            OpenApiParameter(
                "Last-Event-ID",
                {"type": "integer", "minimum": 0, "maximum": MAX_POSITION},
                OpenApiParameter.HEADER,
                description="Like after (an event stream's reconnect sends it); wins over after.",
                required=False,
            ),
        ],
        responses={
            (200, "application/json"): LogPageSerializer,
            (200, "text/event-stream"): OpenApiResponse(
                response=OpenApiTypes.STR,
                description="With follow: `id: <position>` / `event: line` / `data: <line as JSON>` per line, "
                '`: keep-alive` every 15 s without lines, and `event: end` with `data: {"status": ...}` '
                "once the log has ended.",
            ),
            400: ERROR,
            401: ERROR,
            404: ERROR,
        },
        description="The workload's log: its instances' stdout and stderr, one stream across migrations "
        "(a `marker` line where it moved), by position. Page with `after=next_after` while `more`; "
        "`ended` once the workload is TERMINATED or FAILED and its last lines are in.",
    )
    def get(self, request, workload_id):
        workload = selectors.workload_owned(customer=request.user.customer, workload_id=workload_id)
        if workload is None:
            raise Http404
        query = LogsQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        after = query.validated_data["after"]
        if "Last-Event-ID" in request.headers:
            header = LogsQuerySerializer(data={"after": request.headers["Last-Event-ID"]})
            if not header.is_valid():
                raise serializers.ValidationError({"Last-Event-ID": header.errors["after"]})
            after = header.validated_data["after"]
        if query.validated_data["follow"] in ("1", "true"):
            response = StreamingHttpResponse(
                _log_events(workload_id=workload.id, after=after), content_type="text/event-stream"
            )
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the events back
            return response
        services.workload_output_collect(workload_id=workload.id)
        page = selectors.workload_log_page(workload_id=workload.id, after=after, limit=query.validated_data["limit"])
        return Response(
            LogPageSerializer(
                {
                    "workload_id": workload.id,
                    "lines": page.lines,
                    "next_after": page.next_after,
                    "more": page.more,
                    "ended": page.ended,
                }
            ).data
        )
