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

Redis down degrades, it does not fail: PostgreSQL, not Redis, is where a vote must get to, so while
Redis cannot be reached (refused, timed out, still loading its data after a restart) every throttle
counts in this process instead (the same limits, per process: a client spread over N web processes
gets at most N times its rate) and Redis is tried again after ``REDIS_RETRY_SECONDS``; a warning is
logged, at most every ``WARNING_SECONDS``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from rest_framework.throttling import SimpleRateThrottle

if TYPE_CHECKING:  # rest_framework.views imports this module while it loads its settings
    from rest_framework.request import Request
    from rest_framework.views import APIView

# Same value as classifications.services.SESSION_VOLUNTEER_KEY, which cannot be imported this early.
SESSION_VOLUNTEER_KEY = "chorus_volunteer_id"


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])")

logger = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 1.0
WARNING_SECONDS = 10.0
LOCAL_MAX_KEYS = 100_000


class LocalCounters:
    """Fixed-window counters in this process's memory: the throttles' fallback while Redis is down.
    Keys carry their window, so an entry only needs to live as long as its window (``ttl``)."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def incr(self, key: str, amount: int, ttl: float) -> int:
        now = time.monotonic()
        with self._lock:
            if len(self._counts) >= LOCAL_MAX_KEYS:
                self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
                if len(self._counts) >= LOCAL_MAX_KEYS:  # all live: forget them rather than grow
                    self._counts.clear()
            expires, count = self._counts.get(key, (0.0, 0))
            if expires <= now:
                expires, count = now + ttl, 0
            self._counts[key] = (expires, count + amount)
            return count + amount

    def get(self, key: str) -> int:
        with self._lock:
            expires, count = self._counts.get(key, (0.0, 0))
            return count if expires > time.monotonic() else 0

    def delete(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


local_counters = LocalCounters()
_redis_state = {"down_until": 0.0, "warned_at": -WARNING_SECONDS}
_redis_state_lock = threading.Lock()


def throttle_redis() -> Any | None:
    """The throttles' Redis client, or None while it was found unreachable in the last
    ``REDIS_RETRY_SECONDS`` (then this process counts alone: ``local_counters``)."""
    if time.monotonic() < _redis_state["down_until"]:
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def redis_failed(error: Exception) -> None:
    """Note that Redis did not answer a throttle: count locally for a while, warn now and then."""
    now = time.monotonic()
    with _redis_state_lock:
        _redis_state["down_until"] = now + REDIS_RETRY_SECONDS
        warn = now - _redis_state["warned_at"] >= WARNING_SECONDS
        if warn:
            _redis_state["warned_at"] = now
    if warn:
        logger.warning("throttles: Redis unreachable (%s: %s); counting in this process, retrying in %.0f s",
                       type(error).__name__, error, REDIS_RETRY_SECONDS)


def _incr(key: str, amount: int, ttl: int) -> int:
    """Add ``amount`` to a window's counter (Redis, or this process while Redis is down)."""
    client = throttle_redis()
    if client is not None:
        try:
            pipe = client.pipeline(transaction=False)
            pipe.incrby(key, amount)
            pipe.expire(key, ttl)
            count, _ = pipe.execute()
            return int(count)
        except RedisError as error:
            redis_failed(error)
    return local_counters.incr(key, amount, ttl)


def _get(key: str) -> int:
    client = throttle_redis()
    if client is not None:
        try:
            return int(client.get(key) or 0)
        except RedisError as error:
            redis_failed(error)
    return local_counters.get(key)


def _delete(key: str) -> None:
    local_counters.delete(key)
    client = throttle_redis()
    if client is not None:
        try:
            client.delete(key)
        except RedisError as error:
            redis_failed(error)


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
        now = time.time()
        window = int(now // self.duration)
        self.window_ends = (window + 1) * self.duration
        # A view may charge more than one per request: a batch counts its classifications, so 50 per
        # request do not multiply a volunteer's rate by 50.
        cost = view.throttle_cost(request) if hasattr(view, "throttle_cost") else 1
        count = _incr(f"{key}:{window}", cost, int(self.duration) + 1)
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
        self.now = time.time()
        window = int(self.now // self.duration)
        self.window_ends = (window + 1) * self.duration
        return _get(f"{key}:{window}") < self.num_requests

    def record_failure(self, request: Request) -> None:
        key = self.get_cache_key(request, None) if self.rate is not None else None
        if key is None:
            return
        window = int(time.time() // self.duration)
        _incr(f"{key}:{window}", 1, int(self.duration) + 1)


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
            _delete(f"{key}:{int(time.time() // self.duration)}")


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
