"""Redis-backed throttles: one per volunteer and one per address; and failed sign-ins.

Fixed-window counters (one INCR per request and throttle) rather than DRF's default sliding log,
which stores and re-pickles a list of every request time in the window: at a classroom's rate of
thousands per minute that list costs more than the request itself. Rates come from settings
(``CHORUS_THROTTLE_VOLUNTEER`` and ``CHORUS_THROTTLE_ADDRESS``), in DRF's "N/period" syntax, where the
period may carry a count ("5/15m": 5 per 15 minutes).

Sign-ins (``POST /api/auth/token/`` and ``/accounts/login/``) count *failures* only, three ways:
one username from one address (``login``: a guesser is stopped; the account's owner elsewhere is not),
one address over all usernames (``login_address``: trying many accounts), one username from every
address (``login_username``: a distributed guess at one account; higher, since reaching it locks the
account's owner out too until the window ends).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rest_framework.throttling import SimpleRateThrottle

if TYPE_CHECKING:  # rest_framework.views imports this module while it loads its settings
    from rest_framework.request import Request
    from rest_framework.views import APIView

# Same value as classifications.services.SESSION_VOLUNTEER_KEY, which cannot be imported this early.
SESSION_VOLUNTEER_KEY = "chorus_volunteer_id"


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])")


class FixedWindowRedisThrottle(SimpleRateThrottle):
    """At most ``num_requests`` per window of ``duration`` seconds, counted in Redis."""

    def parse_rate(self, rate: str | None) -> tuple[int | None, int | None]:
        if rate is None:
            return None, None
        match = _RATE.match(rate)
        if match is None:
            raise ValueError(f"throttle rate {rate!r} is not N/period (e.g. 120/min, 5/15m)")
        count, multiple, unit = match.groups()
        return int(count), int(multiple or 1) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]

    def ident_for(self, request: Request) -> str | None:
        raise NotImplementedError

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        ident = self.ident_for(request)
        return None if ident is None else f"throttle:{self.scope}:{ident}"

    def allow_request(self, request: Request, view: APIView) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        from django_redis import get_redis_connection

        now = time.time()
        window = int(now // self.duration)
        self.window_ends = (window + 1) * self.duration
        pipe = get_redis_connection("default").pipeline(transaction=False)
        # A view may charge more than one per request: a batch counts its classifications, so 50 per
        # request do not multiply a volunteer's rate by 50.
        cost = view.throttle_cost(request) if hasattr(view, "throttle_cost") else 1
        pipe.incrby(f"{key}:{window}", cost)
        pipe.expire(f"{key}:{window}", int(self.duration) + 1)
        count, _ = pipe.execute()
        self.now = now
        return count <= self.num_requests

    def wait(self) -> float:
        return max(0.0, self.window_ends - self.now)


class VolunteerRateThrottle(FixedWindowRedisThrottle):
    """Per volunteer: the signed-in user, or the anonymous volunteer of the session."""

    scope = "volunteer"

    def ident_for(self, request: Request) -> str | None:
        if request.user and request.user.is_authenticated:
            return f"user-{request.user.pk}"
        volunteer_id = request.session.get(SESSION_VOLUNTEER_KEY) if hasattr(request, "session") else None
        return None if volunteer_id is None else f"volunteer-{volunteer_id}"  # a first request: address only


class AddressRateThrottle(FixedWindowRedisThrottle):
    """Per client address (X-Forwarded-For is trusted only as far as NUM_PROXIES says)."""

    scope = "address"

    def ident_for(self, request: Request) -> str | None:
        return self.get_ident(request)


def login_username(request: Any) -> str | None:
    """The username a sign-in names (DRF's parsed body, or a Django form post), normalised so that
    changing its case or padding does not give a guesser a fresh counter."""
    data = getattr(request, "data", None)
    if data is None:
        data = request.POST if request.method == "POST" else {}
    username = data.get("username") if isinstance(data, Mapping) else None
    if not isinstance(username, str) or not username.strip():
        return None
    return hashlib.sha256(username.strip().casefold().encode("utf-8", "surrogatepass")).hexdigest()[:32]


class LoginFailureThrottle(FixedWindowRedisThrottle):
    """Refuses a sign-in once ``num_requests`` *failed* ones fell in the window (failures are recorded
    by the view with ``record_failure``; this check itself counts nothing)."""

    def allow_request(self, request: Request, view: APIView | None) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        from django_redis import get_redis_connection

        self.now = time.time()
        window = int(self.now // self.duration)
        self.window_ends = (window + 1) * self.duration
        return int(get_redis_connection("default").get(f"{key}:{window}") or 0) < self.num_requests

    def record_failure(self, request: Request) -> None:
        key = self.get_cache_key(request, None) if self.rate is not None else None
        if key is None:
            return
        from django_redis import get_redis_connection

        window = int(time.time() // self.duration)
        pipe = get_redis_connection("default").pipeline(transaction=False)
        pipe.incr(f"{key}:{window}")
        pipe.expire(f"{key}:{window}", int(self.duration) + 1)
        pipe.execute()


class LoginThrottle(LoginFailureThrottle):
    """Failed sign-ins of one username from one address."""

    scope = "login"

    def ident_for(self, request: Request) -> str | None:
        username = login_username(request)
        return None if username is None else f"{self.get_ident(request)}:{username}"

    def forget(self, request: Request) -> None:
        """A successful sign-in clears this pair's count (never the address's or the username's)."""
        key = self.get_cache_key(request, None) if self.rate is not None else None
        if key is not None:
            from django_redis import get_redis_connection

            get_redis_connection("default").delete(f"{key}:{int(time.time() // self.duration)}")


class LoginAddressThrottle(LoginFailureThrottle):
    """Failed sign-ins from one address, whatever the username."""

    scope = "login_address"

    def ident_for(self, request: Request) -> str | None:
        return self.get_ident(request)


class LoginUsernameThrottle(LoginFailureThrottle):
    """Failed sign-ins of one username, from every address together."""

    scope = "login_username"

    def ident_for(self, request: Request) -> str | None:
        return login_username(request)


LOGIN_THROTTLES = (LoginThrottle, LoginAddressThrottle, LoginUsernameThrottle)


def login_wait(request: Any) -> float | None:
    """Seconds until this sign-in may be tried again, or None when it may be tried now."""
    waits = [throttle.wait() for throttle in (cls() for cls in LOGIN_THROTTLES) if not throttle.allow_request(request, None)]
    return max(waits) if waits else None


def record_login(request: Any, succeeded: bool) -> None:
    for cls in LOGIN_THROTTLES:
        throttle = cls()
        if succeeded:
            if isinstance(throttle, LoginThrottle):
                throttle.forget(request)
        else:
            throttle.record_failure(request)
