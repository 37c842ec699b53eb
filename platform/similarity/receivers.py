"""Signal receivers: the model serving a workflow changed (a version promoted, a roll-back, a trunk
pretrained), so its subjects are embedded again (``similarity.embeddings.request_build``, or
``request_refresh`` for a promotion); a deleted
space takes its HNSW index with it."""

from __future__ import annotations

from typing import Any

from similarity import embeddings


def model_version_saved(sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any) -> None:
    """Promotion saves ``promoted_at``; a roll-back saves the withdrawn version's ``state`` and the
    restored one's ``promoted_at``. Either way the version serving may have changed."""
    if update_fields is None or not {"promoted_at", "state"} & set(update_fields):
        return
    if instance.state == instance.State.ROLLED_BACK:
        embeddings.request_build(instance.workflow_id)
    elif instance.state == instance.State.PROMOTED:
        embeddings.request_refresh(instance.workflow_id)  # not at every promotion: embeddings.REFRESH_SECONDS


def machine_agent_saved(sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any) -> None:
    """A newly pretrained trunk embeds the subjects before the first version exists."""
    if update_fields is not None and "pretrained_model" in update_fields and instance.pretrained_model:
        embeddings.request_build(instance.workflow_id)


def space_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    embeddings.drop_index(instance.pk)
