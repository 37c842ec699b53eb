"""Signing in: the token recipe of docs/api.md works as written (no CSRF cookie needed), and password
guessing is throttled on the token endpoint and the login page (failures per username and address,
per address, per username) without locking the account's owner out from elsewhere."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from classifications.throttles import LoginFailureThrottle, LoginThrottle

pytestmark = pytest.mark.django_db

N = 3  # failures allowed per username and address in these tests


@pytest.fixture
def login_rates(monkeypatch) -> dict[str, str]:
    rates = {"login": f"{N}/15m", "login_address": "8/15m", "login_username": "6/h"}
    monkeypatch.setattr(LoginFailureThrottle, "THROTTLE_RATES", rates)
    return rates


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice", password="right-horse-battery")


def test_the_documented_token_recipe_works_without_a_csrf_cookie(alice) -> None:
    # docs/api.md: curl -X POST -H 'Content-Type: application/json' -d '{"username": ..., "password": ...}'
    script = APIClient(enforce_csrf_checks=True)
    response = script.post("/api/auth/token/", '{"username": "alice", "password": "right-horse-battery"}', content_type="application/json")
    assert response.status_code == 200, response.content
    token = response.json()["token"]
    # ... and curl -d username=... -d password=... (a form) gives the same token.
    form = script.post("/api/auth/token/", "username=alice&password=right-horse-battery", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 200 and form.json()["token"] == token
    me = APIClient(enforce_csrf_checks=True).get("/api/me/", HTTP_AUTHORIZATION=f"Token {token}")
    assert me.status_code == 200 and me.json()["volunteer"]["username"] == "alice"


def test_a_browser_with_a_session_can_also_fetch_a_token(alice, browser_client) -> None:
    response = browser_client.post("/api/auth/token/", {"username": "alice", "password": "right-horse-battery"}, format="json")
    assert response.status_code == 200 and response.json()["token"]


def test_wrong_credentials_are_a_400_with_a_field_error(alice) -> None:
    response = APIClient().post("/api/auth/token/", {"username": "alice", "password": "wrong"}, format="json")
    assert response.status_code == 400 and "non_field_errors" in response.json()
    for body in ['{"username": ["alice"], "password": "x"}', '{"username": "a\\u0000", "password": "x"}',
                 '{"username": "\\ud800", "password": "x"}', "[1, 2]", '"alice"', "{"]:
        response = APIClient().post("/api/auth/token/", body, content_type="application/json")
        assert response.status_code == 400, (body, response.content)


def _token(username: str, password: str, address: str):
    return APIClient().post("/api/auth/token/", {"username": username, "password": password}, format="json", REMOTE_ADDR=address)


def test_token_guessing_is_throttled_per_username_and_address(alice, login_rates) -> None:
    statuses = [_token("alice", f"guess-{i}", "10.0.0.1").status_code for i in range(N)]
    assert statuses == [400] * N
    refused = _token("alice", "guess-again", "10.0.0.1")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    # Refused before the password is checked: the right one does not get through from there either.
    assert _token("alice", "right-horse-battery", "10.0.0.1").status_code == 429
    assert _token("ALICE ", "guess", "10.0.0.1").status_code == 429  # case and padding do not help
    # The owner elsewhere is not locked out.
    assert _token("alice", "right-horse-battery", "10.0.0.2").status_code == 200


def test_a_forged_forwarded_for_header_does_not_give_a_fresh_count(alice, login_rates) -> None:
    for i in range(N):
        response = APIClient().post("/api/auth/token/", {"username": "alice", "password": "guess"}, format="json",
                                    REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
        assert response.status_code == 400
    response = APIClient().post("/api/auth/token/", {"username": "alice", "password": "guess"}, format="json",
                                REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.99")
    assert response.status_code == 429


def test_a_successful_sign_in_clears_its_own_count(alice, login_rates) -> None:
    for _ in range(N - 1):
        assert _token("alice", "typo", "10.0.0.1").status_code == 400
    assert _token("alice", "right-horse-battery", "10.0.0.1").status_code == 200
    assert [_token("alice", "typo", "10.0.0.1").status_code for _ in range(N)] == [400] * N


def test_token_guessing_is_throttled_per_address_and_per_username(alice, login_rates) -> None:
    get_user_model().objects.create_user("bob", password="bobs-long-password")
    # One address trying many usernames (never N on one): stopped at the address's limit.
    statuses = [_token(f"user{i}", "guess", "10.0.1.1").status_code for i in range(8)]
    assert statuses == [400] * 8
    assert _token("bob", "bobs-long-password", "10.0.1.1").status_code == 429
    assert _token("bob", "bobs-long-password", "10.0.1.2").status_code == 200
    # Many addresses guessing one username: stopped at the username's limit, wherever from.
    assert [_token("alice", "guess", f"10.0.2.{i}").status_code for i in range(6)] == [400] * 6
    assert _token("alice", "right-horse-battery", "10.0.3.1").status_code == 429
    assert _token("bob", "bobs-long-password", "10.0.3.1").status_code == 200


def _login(username: str, password: str, address: str):
    return Client().post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_login_page_guessing_is_throttled(alice, login_rates) -> None:
    statuses = [_login("alice", f"guess-{i}", "10.0.0.1").status_code for i in range(N)]
    assert statuses == [200] * N  # the form again, with its error
    refused = _login("alice", "right-horse-battery", "10.0.0.1")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert b"Too many failed sign-ins" in refused.content and "_auth_user_id" not in refused.client.session
    # The right password from another address still signs in.
    response = _login("alice", "right-horse-battery", "10.0.0.2")
    assert response.status_code == 302 and response["Location"] == "/"
    # The token endpoint and the login page share the counts: guessing cannot switch doors.
    assert _token("alice", "right-horse-battery", "10.0.0.1").status_code == 429


def test_default_login_rates_are_configured() -> None:
    from django.conf import settings

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    for scope in ("login", "login_address", "login_username"):
        num, duration = LoginThrottle().parse_rate(rates[scope])
        assert num >= 3 and duration >= 60, scope
    assert LoginThrottle().parse_rate("5/15m") == (5, 900)
    assert LoginThrottle().parse_rate("120/min") == (120, 60)
