"""JSON input limits: DRF reads the raw stream, bypassing Django's body limit, and Python's JSON
decoder recurses once per nesting level, so the size *and* the depth are bounded before parsing.

``json_value_problem`` checks what the decoder lets through but PostgreSQL's ``jsonb`` (or a later
reader) cannot take: NUL characters, unpaired UTF-16 surrogates (``"\\ud800"`` in the JSON text),
numbers beyond ``MAX_JSON_NUMBER`` (``1e999`` decodes to infinity; huge integers do not fit a double).
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 64  # levels of arrays and objects in one request body
MAX_JSON_NUMBER = 2**53 - 1  # the largest integer a JSON reader with doubles (a browser) keeps exactly
# A JSON string literal (escapes included), optionally followed by the ':' that makes it a key; or a bracket.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?|[\[\]{}]')
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET_BYTES = bytes(b for b in range(256) if b not in b"[]{}")
_BYTE_STEP = [{ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}.get(b, 0) for b in range(256)]
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


class JSONTooDeep(ParseError):
    """A body nested deeper than MAX_JSON_DEPTH; ``field`` is the top-level key it happened under."""

    def __init__(self, detail: str, field: str | None):
        super().__init__(detail)
        self.field = field


class LimitedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise ParseError(f"the request body is larger than {limit} bytes")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = raw.decode(encoding)
            check_depth(text)
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, LookupError) as error:  # UnicodeDecodeError is a ValueError; LookupError: a charset unknown
            raise ParseError(f"JSON parse error: {error}") from error
        except RecursionError as error:  # unreachable after check_depth; never let it become a 500
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from error


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def check_depth(text: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise JSONTooDeep if the JSON text nests arrays and objects deeper than ``limit``; never recurses.

    Skipped when the text has too few brackets to be that deep (every ordinary submission). Otherwise
    the brackets outside strings are kept and their running depth taken, in C (no Python step per
    bracket); only a body found too deep is walked token by token, which stops at the first bracket
    too deep and names the top-level field it is in.
    """
    if text.count("[") + text.count("{") <= limit:
        return
    brackets = _STRINGS.sub("", text).encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKET_BYTES)
    if max(accumulate(map(_BYTE_STEP.__getitem__, brackets)), default=0) <= limit:
        return
    depth = 0
    key: str | None = None  # the raw text of the last key at depth 1
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token[0] == '"':
            if depth == 1 and match.group(1):
                key = token
            continue
        if token in "[{":
            depth += 1
            if depth > limit:
                raise JSONTooDeep(f"JSON nested deeper than {limit} levels", _field_name(key))
        else:
            depth -= 1


def _field_name(raw_key: str | None) -> str | None:
    if raw_key is None:
        return None
    try:
        name = json.loads(raw_key.rstrip().removesuffix(":").rstrip())
    except ValueError:
        return None
    return name if isinstance(name, str) and _FIELD_NAME.match(name) else None


def json_value_problem(value: Any, max_depth: int = MAX_JSON_DEPTH, max_number: float = MAX_JSON_NUMBER) -> str | None:
    """What makes a decoded JSON value unstorable, as a message naming where; None when it is fine."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        where = path.removeprefix(".") or "the top"
        if isinstance(item, dict | list):
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels (at {where})"
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str) and _BAD_TEXT.search(key):
                    return f"text may not contain NUL (\\u0000) or unpaired surrogate (\\ud800-\\udfff) characters (a key at {where})"
                stack.append((child, depth + 1, f"{path}{_path_step(key)}"))
        elif isinstance(item, str):
            if _BAD_TEXT.search(item):
                return f"text may not contain NUL (\\u0000) or unpaired surrogate (\\ud800-\\udfff) characters (at {where})"
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int | float):
            # Compared, not converted: a 400-digit integer overflows float() but compares fine; NaN fails.
            if not (-max_number <= item <= max_number) or (isinstance(item, float) and not math.isfinite(item)):
                return f"numbers must be finite and at most {max_number} in size (at {where})"
        else:
            return f"not a JSON value (at {where})"
    return None


def _path_step(key: object) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    if isinstance(key, str) and _FIELD_NAME.match(key) and len(key) <= 32:
        return f".{key}" if key else ""
    return "[…]"
