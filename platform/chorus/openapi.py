"""The OpenAPI schema's shared parts (drf-spectacular hooks and extensions): the authentication
schemes the API accepts, and the error answers any operation may give.

Why a hook and not an annotation per view: every view answers its client errors the same way
(``classifications.api_errors.exception_handler``): a 400 with field errors, and DRF's
``{"detail": …}`` for the rest. Declared once here, the schema says so for every operation, and a
client generated from it (or schemathesis in tests/platform_api/test_openapi_conformance.py) finds
every status code it can meet documented.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

FIELD_ERRORS = {
    "type": "object",
    "description": "Field errors: each field (``non_field_errors`` for the request as a whole) with its messages.",
    "additionalProperties": {"oneOf": [{"type": "array", "items": {}}, {"type": "object"}, {"type": "string"}]},
}
DETAIL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}

# status -> (description, body schema): what any operation may answer, whatever its own responses.
ERROR_RESPONSES: dict[str, tuple[str, dict]] = {
    "400": ("Invalid input, with field errors; nothing was stored.", FIELD_ERRORS),
    "401": ("Not signed in, or an unknown token.", DETAIL),
    "403": ("Signed in but not allowed, or a session request without its CSRF token.", DETAIL),
    "404": ("No such object, or not visible to this volunteer.", DETAIL),
    "405": ("The method is not allowed here.", DETAIL),
    "413": ("The request body is too large.", DETAIL),
    "429": ("Throttled: too many requests from this volunteer or address; retry after the Retry-After header's seconds.", DETAIL),
}


def add_error_responses(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular postprocessing hook: add ``ERROR_RESPONSES`` to every operation that does
    not declare that status itself."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("FieldErrors", FIELD_ERRORS)
    components.setdefault("ErrorDetail", DETAIL)
    refs = {id(FIELD_ERRORS): "#/components/schemas/FieldErrors", id(DETAIL): "#/components/schemas/ErrorDetail"}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for status, (description, schema) in ERROR_RESPONSES.items():
                responses.setdefault(status, {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": refs[id(schema)]}}},
                })
    return result


class VolunteerSessionScheme(OpenApiAuthenticationExtension):
    """The browser's session cookie (anonymous volunteers included), with the CSRF header on writes.
    (The token scheme is drf-spectacular's own, which matches ``VolunteerTokenAuthentication`` as a
    subclass of DRF's ``TokenAuthentication``; its session scheme does not match subclasses.)"""

    target_class = "classifications.authentication.VolunteerSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
