"""Billing API: the caller's monthly summary. Thin: validate, one selector call, shape."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors
from billing.api.serializers import MonthlySummarySerializer, MonthQuerySerializer

ERROR = OpenApiResponse(description='Error: {"error": {status, code, message, fields?}}')


class MonthlySummaryView(APIView):
    @extend_schema(
        operation_id="billing_summary",
        parameters=[OpenApiParameter("month", str, description="YYYY-MM (UTC); default: the current month.")],
        responses={200: MonthlySummarySerializer, 400: ERROR, 401: ERROR},
        description="The caller's instance hours, spend (split into spot and on-demand spend), on-demand "
        "equivalent and saving in one calendar month (UTC), in total and per provider. Finished instances count "
        "at the price they were bought at (spot, or on demand when a deadline needed the fallback); running ones "
        "accrue by the second up to now; an instance spanning months counts its seconds in each.",
    )
    def get(self, request):
        query = MonthQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        now = timezone.now()
        summary = selectors.customer_monthly_summary(
            customer_id=request.user.customer.id, month=query.validated_data.get("month", now.date()), now=now
        )
        return Response(MonthlySummarySerializer(summary).data)
