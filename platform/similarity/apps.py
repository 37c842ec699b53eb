"""Django app configuration of similarity search: the receivers that rebuild embeddings when the
model serving a workflow changes (promotion, roll-back, a newly pretrained trunk)."""

from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    verbose_name = "Similarity search"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from machine.models import MachineAgent, ModelVersion
        from similarity import receivers
        from similarity.models import EmbeddingSpace

        post_save.connect(receivers.model_version_saved, sender=ModelVersion, dispatch_uid="similarity.model_version_saved")
        post_save.connect(receivers.machine_agent_saved, sender=MachineAgent, dispatch_uid="similarity.machine_agent_saved")
        post_delete.connect(receivers.space_deleted, sender=EmbeddingSpace, dispatch_uid="similarity.space_deleted")
