"""Who may see what: owners see their own agents, operators see every agent."""

from __future__ import annotations

from django.conf import settings

_CACHE_ATTRIBUTE = "_trading_demo_is_operator"


def is_operator(user) -> bool:
    """True for staff and for members of the ``operators`` group (settings.OPERATORS_GROUP).

    The group lookup is cached on the user object, so one request asks the database once.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if user.is_staff or user.is_superuser:
        return True
    cached = getattr(user, _CACHE_ATTRIBUTE, None)
    if cached is None:
        cached = user.groups.filter(name=settings.OPERATORS_GROUP).exists()
        setattr(user, _CACHE_ATTRIBUTE, cached)
    return cached
