"""``manage.py grant_scientist USERNAME [...]``: give accounts the scientist role (the project builder)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.authoring import SCIENTISTS_GROUP, grant_scientist


class Command(BaseCommand):
    help = f"Give existing accounts the scientist role: membership of the {SCIENTISTS_GROUP!r} group, which opens the project builder."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("usernames", nargs="+")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        users = {user.get_username(): user for user in User.objects.filter(username__in=options["usernames"])}
        missing = [name for name in options["usernames"] if name not in users]
        if missing:
            raise CommandError(f"no account named {', '.join(repr(name) for name in missing)}; nothing changed")
        for user in users.values():
            grant_scientist(user)
        self.stdout.write(self.style.SUCCESS(f"scientists now: {', '.join(sorted(users))}"))
