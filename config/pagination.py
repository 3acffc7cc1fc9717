"""The API's pagination: DRF's limit/offset, with both bounded so that no query string reaches Postgres as a LIMIT or
OFFSET it cannot hold (a bigint) or a scan nobody should ask for."""

from __future__ import annotations

from rest_framework import pagination
from rest_framework.exceptions import ValidationError

MAX_LIMIT = 1000  # a larger limit is answered with pages of this size
MAX_OFFSET = 1_000_000  # past this, narrow the query (filters) instead of skipping rows


class BoundedLimitOffsetPagination(pagination.LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_offset(self, request) -> int:
        offset = super().get_offset(request)  # 0 for anything that is not a non-negative integer
        if offset > MAX_OFFSET:
            raise ValidationError({self.offset_query_param: [f"must be at most {MAX_OFFSET:,}"]})
        return offset
