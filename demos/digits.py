"""Built-in images for the vision demo and benchmark: real handwritten digits and a tiny random ViT.

scikit-learn ships 1,797 real 8x8 handwritten digits, so the vision demo needs no download. The
source task is digits 0-4, the transfer target the unseen digits 5-9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from transferkit.common.encoders import quiet_transformers
from transferkit.vision import AugmentConfig

__all__ = ["AUGMENT", "SOURCE", "TARGET", "digits_as_images", "split_target", "tiny_vit_folder"]

SOURCE, TARGET = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
# Digits are not mirror-symmetric; small crops keep strokes intact.
AUGMENT = AugmentConfig(crop_scale=(0.7, 1.0), hflip=False)


def digits_as_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8x8 handwritten digits as uint8 RGB images, with their labels.

    Example:
        >>> X, y = digits_as_images()
        >>> X.shape, X.dtype.name, sorted(set(y.tolist())) == list(range(10))
        ((1797, 8, 8, 3), 'uint8', True)
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    gray = np.clip(d.images * 16, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), d.target


def split_target(y: np.ndarray, seed: int, few: int = 10) -> dict[str, np.ndarray]:
    """Split the target digits 5-9 into index arrays, per class.

    A fixed test set (40%), a validation set of ``few`` per class, the rest for training
    (``train_all``), and ``train_few``: the first ``few`` per class of ``train_all``.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"test": [], "val": [], "train_all": [], "train_few": []}
    for c in TARGET:
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(0.4 * len(idx))
        parts["test"] += list(idx[:n_test])
        parts["val"] += list(idx[n_test:n_test + few])
        rest = idx[n_test + few:]
        parts["train_all"] += list(rest)
        parts["train_few"] += list(rest[:few])
    return {k: np.array(v) for k, v in parts.items()}


def tiny_vit_folder(path: Path, seed: int) -> Path:
    """A random 4-layer, 64-wide ViT for 8x8 images (patch 2), saved like a Hub checkpoint."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=8, patch_size=2, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with quiet_transformers():
        ViTModel(cfg, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path
