"""The API's pagination: DRF's limit/offset, except that a bad ``limit`` or ``offset`` is a 400 with
a field error instead of being silently replaced by the default (a client asking for page
``offset=abc`` would otherwise get the first page and believe it was the one asked for)."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

MAX_LIMIT = 1000


class StrictLimitOffsetPagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_limit(self, request: Request) -> int | None:
        given = request.query_params.get(self.limit_query_param)
        if given is None:
            return self.default_limit
        if not re.fullmatch(r"[0-9]{1,9}", given) or not 1 <= int(given) <= MAX_LIMIT:
            raise ValidationError({self.limit_query_param: [f"an integer from 1 to {MAX_LIMIT}"]})
        return int(given)

    def get_offset(self, request: Request) -> int:
        given = request.query_params.get(self.offset_query_param)
        if given is None:
            return 0
        if not re.fullmatch(r"[0-9]{1,18}", given):
            raise ValidationError({self.offset_query_param: ["an integer, 0 or more"]})
        return int(given)

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: {"minimum": 1, "maximum": MAX_LIMIT},
                  self.offset_query_param: {"minimum": 0, "maximum": 10**18 - 1}}
        for parameter in parameters:
            parameter["schema"] = {**parameter["schema"], **bounds.get(parameter["name"], {})}
        return parameters
