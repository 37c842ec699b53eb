"""The scientist role: the migration's group holds the builder's permission and takes the existing
project owners; ``grant_scientist`` (and its command) gives it; superusers have it."""

from __future__ import annotations

import importlib
import io

import pytest
from django.core.management import CommandError, call_command

from projects.authoring import is_scientist

pytestmark = pytest.mark.django_db


def test_the_role_is_a_group_with_the_builders_permission(people, make_workflow) -> None:
    from django.apps import apps
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    assert is_scientist(people["scientist"]) and not is_scientist(people["volunteer"]) and not is_scientist(people["staff"])
    assert is_scientist(get_user_model().objects.create_superuser("root", password="pw"))
    workflow = make_workflow(n=0)
    workflow.project.owners.add(people["owner"])
    migration = importlib.import_module("projects.migrations.0004_workflow_versions")
    migration.create_scientists_group(apps, None)
    group = Group.objects.get(name="scientists")
    assert group.permissions.filter(codename="build_projects").exists()
    owner = get_user_model().objects.get(pk=people["owner"].pk)
    assert is_scientist(owner)


def test_the_command_grants_the_role_or_names_the_accounts_it_cannot_find(people) -> None:
    from django.contrib.auth import get_user_model

    out = io.StringIO()
    call_command("grant_scientist", "volunteer", stdout=out)
    assert "scientists now: volunteer" in out.getvalue()
    assert is_scientist(get_user_model().objects.get(username="volunteer"))
    with pytest.raises(CommandError, match="no account named 'nobody'; nothing changed"):
        call_command("grant_scientist", "owner", "nobody")
    assert not is_scientist(get_user_model().objects.get(username="owner"))
