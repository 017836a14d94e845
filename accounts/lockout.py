"""What a locked-out login sees (django-axes, configured in ``config.settings``).

A login form (``/admin/login/``, ``/dashboard/login/``) gets a page saying plainly that
signing in is temporarily locked for this username or address, and for how long; the API's
token login answers 429 ``rate-limited`` with ``Retry-After`` through the project's error path
(``api.views.ObtainTokenView``). Both take the duration from the same cool-off setting.
"""

from __future__ import annotations

import math

from axes.helpers import get_cool_off
from django.http import HttpResponse
from django.shortcuts import render


def lockout_seconds(request) -> int:
    """Seconds until a locked-out client may try again. The attempt that was just refused
    started the cool-off anew (axes' default), so it is the whole cool-off."""
    cool_off = get_cool_off(request)
    return max(math.ceil(cool_off.total_seconds()), 1) if cool_off else 1


def duration_text(seconds: int) -> str:
    """``15 minutes``, ``45 seconds``, ``2 hours``: the cool-off as a person reads it."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size:
            count = math.ceil(seconds / size)
            return f"{count} {unit}s"
    return f"{seconds} second" + ("" if seconds == 1 else "s")


def lockout_message(seconds: int) -> str:
    return (
        "Too many failed sign-in attempts for this username or from this address: signing in "
        f"is temporarily locked. Try again in {duration_text(seconds)}, or ask an operator to "
        "unlock it."
    )


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: the lockout page instead of the login form, 429 with
    ``Retry-After``."""
    seconds = lockout_seconds(request)
    response = render(
        request,
        "registration/locked_out.html",
        {"message": lockout_message(seconds), "login_url": request.path},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response
