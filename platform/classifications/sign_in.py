"""Signing in, with password guessing throttled: the API's token endpoint and the scientists' login page.

Both count failed attempts per username and address, per address and per username
(``classifications.throttles``); past a limit they answer HTTP 429 without checking the password.
"""

from __future__ import annotations

import math
from typing import Any

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.template import engines
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from classifications.parsers import LimitedJSONParser
from classifications.throttles import LOGIN_THROTTLES, LoginThrottle, login_wait, record_login


class TokenView(ObtainAuthToken):
    """A script's API token, for ``username`` and ``password`` (JSON or a form); no session or CSRF
    token needed. Failed attempts are throttled (HTTP 429 with Retry-After)."""

    # No authentication classes: the credentials are in the body. DRF's view otherwise inherits the
    # API's session check, which demands a CSRF token of every unsafe request without a token, and a
    # plain curl got 403 "CSRF cookie not set". Nothing here reads a cookie, so a forged cross-site
    # post gains nothing: no session is signed in, and the token goes back to the page that sent it.
    authentication_classes: list = []
    parser_classes = [LimitedJSONParser, FormParser, MultiPartParser]
    throttle_classes = list(LOGIN_THROTTLES)

    @extend_schema(
        request=inline_serializer("TokenRequest", {"username": serializers.CharField(min_length=1),
                                                   "password": serializers.CharField(min_length=1)}),
        responses={200: inline_serializer("TokenAnswer", {"token": serializers.CharField()})},
        auth=[],
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            for throttle in self.get_throttles():
                throttle.record_failure(request)
            raise ValidationError(serializer.errors)
        for throttle in self.get_throttles():
            if isinstance(throttle, LoginThrottle):
                throttle.forget(request)
        token, _ = Token.objects.get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key})


token_view = TokenView.as_view()


class ThrottledAuthenticationForm(AuthenticationForm):
    """Refuses before checking the password when too many sign-ins failed (``wait`` seconds to go)."""

    def __init__(self, *args: Any, wait: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.wait = wait

    def clean(self) -> dict:
        if self.wait is not None:
            minutes = max(1, math.ceil(self.wait / 60))
            raise forms.ValidationError(f"Too many failed sign-ins. Try again in {minutes} minute{'s' * (minutes > 1)}.", code="throttled")
        return super().clean()


_THROTTLED_PAGE = """{% extends "web/base.html" %}
{% block title %}Sign in · Chorus{% endblock %}
{% block body %}
<main class="page narrow">
  <h1>Sign in</h1>
  <p class="form-error" role="alert">{{ message }}</p>
  <p><a href="{{ request.get_full_path }}">Back to the sign-in page</a></p>
</main>
{% endblock %}"""


class LoginView(auth_views.LoginView):
    """Django's login view with failed attempts counted; past the limit, HTTP 429 and a page saying
    when to try again (the password is not checked then)."""

    template_name = "web/login.html"
    form_class = ThrottledAuthenticationForm
    wait: float | None = None

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.wait = login_wait(request)
        return super().post(request, *args, **kwargs)

    def get_form_kwargs(self) -> dict:
        return {**super().get_form_kwargs(), "wait": self.wait}

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        record_login(self.request, succeeded=True)
        return super().form_valid(form)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        if self.wait is None:
            record_login(self.request, succeeded=False)
            return super().form_invalid(form)
        message = form.non_field_errors()[0] if form.non_field_errors() else "Too many failed sign-ins."
        page = engines["django"].from_string(_THROTTLED_PAGE).render({"message": message}, self.request)
        response = HttpResponse(page, status=429)
        response["Retry-After"] = str(math.ceil(self.wait))
        return response
