"""``{{ state.retirement_reason|reason_label }}``: a retirement reason for people ("consensus on T1")."""

from __future__ import annotations

from django import template

from dashboards.selectors import reason_label as label_of

register = template.Library()


@register.filter
def reason_label(reason: str | None) -> str:
    return label_of(reason) if reason else ""
