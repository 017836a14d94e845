"""The list routes' filter backends."""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.filters import OrderingFilter


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


class StableOrderingFilter(OrderingFilter):
    """DRF's ordering (``?ordering=``, else the view's ``ordering``), then the primary key.

    Rows equal on the chosen fields (the orders of one symbol, two made at the same instant)
    would otherwise come in whatever order the database picks for each page's query, so
    walking the pages could show a row twice and another never.
    """

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        if not ordering:
            return ordering
        return [*ordering, "-pk"]
