"""Page numbers for lists of millions of rows, without counting them all on every page.

Django's ``Paginator`` numbers its pages with ``SELECT COUNT(*)`` over the whole list; over a million messages or
followers on PostgreSQL that one query cost more than the rest of the admin page together (a pass over every row
the list reaches).  ``EstimatedCountPaginator`` counts exactly up to ``exact_limit`` rows (a COUNT over a subquery
with a LIMIT, which stops as soon as it has enough), so short and narrowly filtered lists keep their exact count;
a longer list is numbered with PostgreSQL's own estimate of its rows (``EXPLAIN``, kept current by autovacuum's
ANALYZE), never below the exact limit.  Other databases always count exactly: the embedded SQLite default is meant
for small installations, and has no estimate to offer.

With an estimate the last page number is approximate, so a page past it is still served while it has rows, and
only an empty page beyond the first is "out of range".
"""

from __future__ import annotations

import json

from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

EXACT_COUNT_LIMIT = 10_000


def planner_estimate(queryset: QuerySet) -> int:
    """PostgreSQL's estimate of the rows ``queryset`` returns (plans the query, runs nothing)."""
    sql, params = queryset.order_by().query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    """A ``Paginator`` whose count is exact up to ``exact_limit`` rows and PostgreSQL's estimate beyond."""

    exact_limit = EXACT_COUNT_LIMIT

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.count_is_estimate = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or connections[queryset.db].vendor != "postgresql":
            return Paginator.count.func(self)
        bounded = queryset.order_by()[: self.exact_limit + 1].count()
        if bounded <= self.exact_limit:
            return bounded
        self.count_is_estimate = True
        return max(planner_estimate(queryset), bounded)

    def validate_number(self, number: int | float | str) -> int:
        """Django's checks, except that an estimated count sets no upper bound (see :meth:`page`)."""
        if not (self.count and self.count_is_estimate):
            return super().validate_number(number)
        try:
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from None
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        return number

    def page(self, number: int | float | str) -> Page:
        """With an estimated count, any page that has rows; an empty one past the first is out of range."""
        number = self.validate_number(number)
        if not self.count_is_estimate:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        rows = self.object_list[bottom : bottom + self.per_page]
        if number > 1 and not rows:
            raise EmptyPage(self.error_messages["no_results"])
        return self._get_page(rows, number, self)
