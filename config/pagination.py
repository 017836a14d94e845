from django.core.paginator import Paginator
from rest_framework.pagination import PageNumberPagination


class FirstPagePaginator(Paginator):
    """Django's paginator, which reads the first page before counting.

    Django counts first (``SELECT COUNT(*)``) to validate the page number, then reads the
    page. For the first page that order is not needed: when it comes back short, its length
    is the count, and the statement is saved. Most lists fit one page (an agent's recent
    orders, the pending approvals). A full first page is counted after it is read, once. Other
    pages go Django's way.
    """

    def page(self, number):
        if (
            self.orphans
            or not self.allow_empty_first_page
            or "count" in self.__dict__
            or not _is_one(number)
        ):
            return super().page(number)
        rows = list(self.object_list[: self.per_page])
        if len(rows) < self.per_page:
            self.__dict__["count"] = len(rows)  # the cached_property's value
        return self._get_page(rows, 1, self)


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
