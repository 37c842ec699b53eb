"""Django app configuration for classifications."""

from typing import Any

from django.apps import AppConfig


def forget_cached_tokens(sender: Any, **kwargs: Any) -> None:
    """A token deleted or a user changed (deactivated) here is refused here at once; other processes
    refuse it within ``TOKEN_CACHE_SECONDS``."""
    from classifications.authentication import forget_tokens

    forget_tokens()


class ClassificationsConfig(AppConfig):
    name = "classifications"
    verbose_name = "Volunteers and classifications"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import post_delete, post_save
        from rest_framework.authtoken.models import Token

        import chorus.openapi  # noqa: F401  (registers the session scheme with drf-spectacular)

        post_delete.connect(forget_cached_tokens, sender=Token, dispatch_uid="classifications.forget_tokens.token")
        post_save.connect(forget_cached_tokens, sender=settings.AUTH_USER_MODEL, dispatch_uid="classifications.forget_tokens.user")
