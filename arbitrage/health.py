from django.http import JsonResponse

from arbitrage.env import ConfigError
from arbitrage.preflight import check_database, check_routing_kv


def healthz(request) -> JsonResponse:
    """Liveness of the web process and the services it reads on every request."""
    try:
        check_database()
        check_routing_kv()
    except ConfigError as exc:
        return JsonResponse({"status": "unavailable", "problem": str(exc)}, status=503)
    return JsonResponse({"status": "ok"})
