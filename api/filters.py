"""The list routes' filter backend."""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend


class QueryFilterBackend(DjangoFilterBackend):
    """django-filter's backend, which skips the FilterSet when the query names none of its
    filters.

    Building a FilterSet builds its form and deep-copies every filter, work that a list
    request naming no filter does not need: a filter given no value filters nothing, so with
    none of the FilterSet's names in the query the queryset is returned as it came. A parameter that
    starts with a filter's name (``status``, or a range filter's ``created_after``) still goes
    through the FilterSet, and is validated there.
    """

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is None:
            return queryset
        names = tuple(filterset_class.base_filters)
        if not any(key.startswith(names) for key in request.query_params):
            return queryset
        return super().filter_queryset(request, queryset, view)
