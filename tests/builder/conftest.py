"""Fixtures of the project builder's tests: people in each role, a scientist's draft workflow, and
image files and manifests to upload (real PNG/JPEG bytes made with Pillow)."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

# Two questions (T1 only after "Featured") and a drawing task: the Must-show workflow's shape.
TWO_QUESTIONS_AND_DRAWING = {
    "first_task": "T0",
    "tasks": {
        "T0": {"type": "single", "question": "Smooth or featured?", "help": "Look at the whole galaxy.",
               "answers": [{"label": "Smooth", "next": "T2"}, {"label": "Featured", "next": "T1"}]},
        "T1": {"type": "single", "question": "Is there a bar?", "answers": [{"label": "Bar", "next": "T2"}, {"label": "No bar", "next": "T2"}]},
        "T2": {"type": "drawing", "instruction": "Mark each star.", "tools": [{"type": "rectangle", "label": "Star", "min": 0, "max": 5}], "next": None},
    },
}


@pytest.fixture(autouse=True)
def _fresh_hot_state(db) -> None:
    """Workflow ids repeat across test sessions; the live loop's Redis state must not."""
    from classifications.services import _WORKFLOW_CACHE
    from live import hot_state, services

    hot_state.client().flushdb()
    services._LOCAL_ENGINES.clear()
    _WORKFLOW_CACHE.clear()


@pytest.fixture
def people(db) -> dict[str, object]:
    """scientist (the role), volunteer (signed in, no role), owner (owns projects, no role), staff (no role)."""
    from django.contrib.auth import get_user_model

    from projects.authoring import grant_scientist

    User = get_user_model()
    scientist = User.objects.create_user("scientist", password="pw-scientist")
    grant_scientist(scientist)
    return {
        "scientist": scientist,
        "volunteer": User.objects.create_user("volunteer", password="pw-volunteer"),
        "owner": User.objects.create_user("owner", password="pw-owner"),
        "staff": User.objects.create_user("staffer", password="pw-staff", is_staff=True),
    }


@pytest.fixture
def draft(people) -> Callable[..., object]:
    """A scientist's project and draft workflow (paused, never launched), with ``tasks`` if given."""
    from projects.authoring import create_draft_workflow, create_project
    from projects.versioning import save_tree

    def build(slug: str = "galaxies", tasks: dict | None = None):
        project = create_project(people["scientist"], {"title": f"Project {slug}", "slug": slug})
        workflow = create_draft_workflow(project, {"name": "Shapes"}, people["scientist"])
        if tasks is not None:
            workflow = save_tree(workflow, tasks, people["scientist"]).workflow
        return workflow

    return build


def image_bytes(size: tuple[int, int] = (60, 40), colour: tuple[int, int, int] = (30, 60, 90), fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def uploaded(name: str, content: bytes, content_type: str = "image/png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type=content_type)


def manifest_file(lines: list[str], name: str = "manifest.csv"):
    return uploaded(name, ("\n".join(lines) + "\n").encode(), "text/csv")


def images(n: int, prefix: str = "g") -> list:
    return [uploaded(f"{prefix}{i}.png", image_bytes(colour=(20 * i % 255, 60, 90))) for i in range(n)]
