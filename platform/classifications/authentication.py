"""Authentication: token auth for scripts, session auth with CSRF for every browser request.

DRF's SessionAuthentication checks CSRF only for signed-in users; an anonymous volunteer also acts
through its session, so unsafe requests without a token must pass the CSRF check too.
"""

from __future__ import annotations

import time

from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

# Valid tokens are remembered in this process for TOKEN_CACHE_SECONDS: a script submits many times a
# second and the lookup was a quarter of a submission's database time. The price: a deleted token
# or a deactivated user is refused within that many seconds, not at once. Unknown keys are never
# cached (a guesser learns nothing and fills nothing).
TOKEN_CACHE_SECONDS = 30.0
TOKEN_CACHE_SIZE = 50_000
_TOKEN_CACHE: dict[str, tuple[float, Token]] = {}


class VolunteerTokenAuthentication(TokenAuthentication):
    """Token auth that fetches the user's volunteer in the same query and remembers valid tokens briefly."""

    def authenticate_credentials(self, key: str) -> tuple:
        from rest_framework import exceptions

        now = time.monotonic()
        cached = _TOKEN_CACHE.get(key)
        if cached is not None and now - cached[0] < TOKEN_CACHE_SECONDS:
            return cached[1].user, cached[1]
        token = Token.objects.select_related("user", "user__volunteer").filter(key=key).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if len(_TOKEN_CACHE) >= TOKEN_CACHE_SIZE:
            _TOKEN_CACHE.clear()
        _TOKEN_CACHE[key] = (now, token)
        return token.user, token


class VolunteerSessionAuthentication(SessionAuthentication):
    def authenticate(self, request: Request) -> tuple | None:
        result = super().authenticate(request)
        if result is None and request.method not in ("GET", "HEAD", "OPTIONS", "TRACE"):
            self.enforce_csrf(request)
        return result


def forget_tokens() -> None:
    """Empty this process's token cache (see ``TOKEN_CACHE_SECONDS``)."""
    _TOKEN_CACHE.clear()
