"""Chorus machine classifier: a small rotation-aware CNN for galaxy images in plain PyTorch.

No Django and no torchvision: layers, augmentation and image loading use torch, numpy and
Pillow. The platform calls this package; it never calls the platform.

    from ml import GalaxyClassifier, metrics, acquisition
    clf = GalaxyClassifier(heads=[("smooth_or_featured", 2)], image_size=64)
    clf.fit(paths, {"smooth_or_featured": posteriors}, epochs=20)
    probs = clf.predict_proba(new_paths)["smooth_or_featured"]
    scores = acquisition.bald(clf.mc_predict(new_paths, 30)["smooth_or_featured"])

A chirality question names the answers a mirror image swaps, and its head follows the mirror
instead of ignoring it (``ml.model``): ``GalaxyClassifier(heads=[("T1", 3)], mirror_swaps={"T1": [(1, 2)]})``.
"""

from ml import acquisition, metrics
from ml.classifier import GalaxyClassifier
from ml.images import load_image, load_images, preprocess
from ml.losses import dirichlet_multinomial_nll, soft_cross_entropy
from ml.model import GalaxyCNN, ModelConfig, dihedral
from ml.train import GalaxyDataset, train

__all__ = [
    "GalaxyCNN",
    "GalaxyClassifier",
    "GalaxyDataset",
    "ModelConfig",
    "acquisition",
    "dihedral",
    "dirichlet_multinomial_nll",
    "load_image",
    "load_images",
    "metrics",
    "preprocess",
    "soft_cross_entropy",
    "train",
]
