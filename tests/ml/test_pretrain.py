"""Self-supervised pretraining of the CNN's trunk (``ml.pretrain``) on tiny synthetic images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ml import GalaxyClassifier
from ml.pretrain import nt_xent
from tests.ml.synthetic import blobs

SMALL = {"image_size": 32, "channels": (8, 16, 32, 32), "embedding_dim": 32}


def test_nt_xent_is_near_zero_for_matching_views_and_near_chance_for_unrelated_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(8, 64, generator=gen)
    chance = math.log(2 * 8 - 1)
    assert float(nt_xent(z, z.clone(), temperature=0.1)) < 0.01
    unrelated = float(nt_xent(z, torch.randn(8, 64, generator=gen), temperature=1.0))
    assert abs(unrelated - chance) < 0.3


def test_pretraining_learns_the_views_task_changes_the_trunk_not_the_heads_and_is_seeded() -> None:
    images, _ = blobs(64)
    clf = GalaxyClassifier(heads=[("shape", 2)], seed=3, **SMALL)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    run = clf.pretrain(images, epochs=8, batch_size=32, lr=3e-3)
    losses = [row["loss"] for row in run["epochs"]]
    assert len(losses) == 8 and run["n_images"] == 64
    assert losses[0] > losses[-1] and losses[-1] < run["chance_loss"] - 0.3  # it tells images apart
    after = clf.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("heads."))
    assert not torch.equal(before["trunk.0.0.weight"], after["trunk.0.0.weight"])
    assert clf.history[-1]["pretraining"] and clf.history[-1]["n_images"] == 64

    again = GalaxyClassifier(heads=[("shape", 2)], seed=3, **SMALL)
    again.pretrain(images, epochs=8, batch_size=32, lr=3e-3)
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in after.items())
    restored = GalaxyClassifier.from_bytes(clf.to_bytes())  # what the platform stores and fine-tunes
    assert all(torch.equal(v, restored.model.state_dict()[k]) for k, v in after.items())


def test_a_pretrained_trunk_is_fine_tuned_by_partial_fit_and_forgotten_by_fit() -> None:
    images, y = blobs(48)
    clf = GalaxyClassifier(heads=[("shape", 2)], seed=1, **SMALL)
    initial = clf.model.trunk[0][0].weight.detach().clone()
    clf.pretrain(images, epochs=6, batch_size=16, lr=3e-3)
    pretrained = clf.model.trunk[0][0].weight.detach().clone()

    def distance(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm())

    tuned = GalaxyClassifier.from_bytes(clf.to_bytes())
    tuned.partial_fit(images, y, epochs=1, batch_size=16, lr=1e-4)
    weight = tuned.model.trunk[0][0].weight.detach()
    assert distance(weight, pretrained) < distance(weight, initial) / 5  # started from it
    clf.fit(images, y, epochs=1, batch_size=16, lr=1e-4)
    weight = clf.model.trunk[0][0].weight.detach()
    assert distance(weight, initial) < distance(weight, pretrained) / 5  # fit starts from the seeded random weights


def test_pretraining_rejects_bad_input_and_does_nothing_on_one_image() -> None:
    clf = GalaxyClassifier(heads=[("shape", 2)], **SMALL)
    with pytest.raises(ValueError, match="epochs"):
        clf.pretrain(blobs(4)[0], epochs=-1)
    with pytest.raises(ValueError, match="temperature"):
        clf.pretrain(blobs(4)[0], epochs=1, temperature=0.0)
    before = clf.model.trunk[0][0].weight.detach().clone()
    assert clf.pretrain(np.zeros((1, 32, 32, 3), np.uint8), epochs=2)["epochs"] == []
    assert torch.equal(before, clf.model.trunk[0][0].weight)
