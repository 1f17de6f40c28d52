"""Pagination: a cursor for the message log (large, always growing), page numbers for the smaller lists."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination, PageNumberPagination

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


class MessageCursorPagination(CursorPagination):
    """Newest first.  A cursor stays correct while new messages arrive and never counts the whole table."""

    ordering = ("-created_at", "-id")
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE


class StandardPageNumberPagination(PageNumberPagination):
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE
