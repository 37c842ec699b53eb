"""API error handling: every client error is an HTTP 400 (or 4xx) with field errors, as JSON."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.exceptions import ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from classifications.services import ClassificationRejected


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ClassificationRejected):
        return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ParseError):
        field = getattr(exc, "field", None) or "non_field_errors"  # JSONTooDeep names the top-level key
        return Response({field: [str(exc.detail)]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        from django.conf import settings

        return Response(
            {"non_field_errors": [f"the request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"]},
            status=status.HTTP_400_BAD_REQUEST,
        )
    return drf_exception_handler(exc, context)
