"""The one pagination of list endpoints: ``{count, next, previous, results}``."""

from __future__ import annotations

from django.core.paginator import Page, Paginator
from django.utils.functional import cached_property
from rest_framework.pagination import PageNumberPagination


class FirstPagePaginator(Paginator):
    """Django's paginator, which reads the first page before counting.

    Django counts first (``SELECT COUNT(*)``) to validate the page number, then reads the
    page. Page 1 is always valid (empty lists allowed, no orphans), so it is read first: when
    it comes back short, its length is the count and no ``COUNT`` is run. Most lists fit one
    page (an agent's recent orders, the pending approvals). Other pages go Django's way.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_page_length: int | None = None

    @cached_property
    def count(self) -> int:
        if self.first_page_length is not None and self.first_page_length < self.per_page:
            return self.first_page_length
        return super().count

    def page(self, number):
        if self.orphans or not self.allow_empty_first_page or not _is_one(number):
            return super().page(number)
        rows = list(self.object_list[: self.per_page])
        self.first_page_length = len(rows)
        return ListPage(rows, 1, self)


class ListPage(Page):
    """A page whose rows are already a list, iterated as that list: ``Page`` is a sequence
    iterated by index, and DRF lists every page it answers."""

    def __iter__(self):
        return iter(self.object_list)


def _is_one(number) -> bool:
    if isinstance(number, float) and not number.is_integer():
        return False
    try:
        return int(number) == 1
    except (TypeError, ValueError):
        return False


class StandardPagination(PageNumberPagination):
    """``{count, next, previous, results}`` with ``?page=&page_size=`` capped at 200."""

    django_paginator_class = FirstPagePaginator
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
