"""The admin's login, with failed attempts limited per source address and username.

``ADMIN_LOGIN_FAILURE_RATE`` failed logins (``5/minute`` by default) for one
username from one address are allowed in a window; the next attempt is answered
429 with ``Retry-After`` without its password being checked, until the window
ends. A successful login does not reset the count.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from arbitrage.throttle import WindowCounter, source_address


def _failures() -> WindowCounter:
    return WindowCounter(scope="admin-login-fail", rate=settings.ADMIN_LOGIN_FAILURE_RATE)


def _identity(request: HttpRequest) -> str:
    username = str(request.POST.get("username", "")).strip().casefold()
    return f"{source_address(request)}\n{username}"


@sensitive_post_parameters("password")
@never_cache
def admin_login(request: HttpRequest, extra_context=None) -> HttpResponse:
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    failures = _failures()
    identity = _identity(request)
    if failures.count(identity) >= failures.limit:
        wait = failures.retry_after()
        response = HttpResponse(
            f"Too many failed logins for this username from your address. Try again in {wait} seconds.\n",
            status=429,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(wait)
        return response
    response = admin.site.login(request, extra_context)
    # A good login redirects; a refused one shows the form again (200) with its error.
    if response.status_code == 200:
        failures.hit(identity)
    return response
