"""Query strings under /api/ name each parameter once."""

from __future__ import annotations

from django.http import JsonResponse

from arbitrage.api.errors import error_body


class SingleQueryParametersMiddleware:
    """No API parameter is a list: ``?page_size=1&page_size=2`` is a 400 naming it, where the
    views (which read ``query_params.dict()``) would otherwise take the last value silently."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/v1/"):
            repeated = sorted(name for name, values in request.GET.lists() if len(values) > 1)
            if repeated:
                fields = {name: ["Give this parameter once."] for name in repeated}
                message = f"{repeated[0]}: Give this parameter once."
                return JsonResponse(error_body(400, "invalid", message, fields=fields), status=400)
        return self.get_response(request)
