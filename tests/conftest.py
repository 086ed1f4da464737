"""Shared fixtures: tiny random models saved in Hugging Face format, tiny image sets. All offline."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Decoded images and clips (cached by default) go to a folder of this test session, not the user's cache.
os.environ.setdefault("TRANSFERKIT_CACHE", tempfile.mkdtemp(prefix="transferkit-test-cache-"))
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_vit(path: Path, *, hidden: int = 32, layers: int = 2, image_size: int = 16, patch: int = 4,
             dropout: float = 0.0, seed: int = 0) -> Path:
    """Save a random ViT and its image processor to ``path``, as a Hub model would be laid out."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    cfg = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden,
                    image_size=image_size, patch_size=patch, hidden_dropout_prob=dropout,
                    attention_probs_dropout_prob=dropout)
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory) -> Path:
    return tiny_vit(tmp_path_factory.mktemp("vit"))


def two_class_images(n: int = 24, size: int = 16, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Dark images are 'dark', bright ones 'bright': a task a linear probe can learn."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        bright = i % 2 == 0
        base = 190 if bright else 60
        images.append(np.clip(rng.normal(base, 25, (size, size, 3)), 0, 255).astype(np.uint8))
        labels.append("bright" if bright else "dark")
    return images, labels


@pytest.fixture()
def images():
    return two_class_images()


def write_folder(root: Path, images, labels) -> Path:
    from PIL import Image

    for i, (img, label) in enumerate(zip(images, labels)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / label / f"{i:03d}.png")
    return root


def toy_rows(n: int = 24, seed: int = 0) -> list[dict]:
    """``n`` rows of 6 random features, labelled by the sign of the first: a toy set for Trainer tests."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def noisy_collate(rows):
    """Augmentation that draws from torch's and numpy's global generators, like a real one."""
    x = torch.stack([r["x"] for r in rows])
    x = x + 0.1 * torch.randn_like(x) + torch.from_numpy(np.random.normal(0, 0.1, x.shape).astype(np.float32))
    return {"x": x, "labels": torch.stack([r["labels"] for r in rows])}


def toy_model():
    """A seeded small MLP with dropout (so the run's random state matters) for ``toy_rows``."""
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))


def toy_loss(model, batch):
    return torch.nn.functional.cross_entropy(model(batch["x"]), batch["labels"])
