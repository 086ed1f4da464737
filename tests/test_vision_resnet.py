"""ResNet-20 for CIFAR (option-A shortcuts) as a transferkit encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transferkit.common import load_encoder
from transferkit.vision import ImageClassifier, resnet20_cifar
from transferkit.vision.resnet_cifar import _BasicBlock

CHECKPOINT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "weights" / "resnet20-cifar10.th"


def test_resnet20_has_the_papers_size_and_returns_pooled_features():
    torch.manual_seed(0)
    net = resnet20_cifar()
    # He et al. 2016, table 6: ResNet-20 has 0.27 M parameters; option A adds none.
    assert sum(p.numel() for p in net.parameters()) == 269_722
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert net.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 64, 8, 8)
    assert net.classify(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_option_a_shortcut_subsamples_and_zero_pads_evenly():
    block = _BasicBlock(16, 32, stride=2)
    assert not [n for n, _ in block.named_parameters() if "shortcut" in n]
    x = torch.arange(16 * 4 * 4, dtype=torch.float32).reshape(1, 16, 4, 4)
    out = block.shortcut(x)
    assert out.shape == (1, 32, 2, 2)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])  # the input channels sit in the middle
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


@pytest.mark.skipif(not CHECKPOINT.exists(), reason=f"pretrained checkpoint not found at {CHECKPOINT}")
def test_published_checkpoint_loads_through_the_module_encoder_path():
    net = resnet20_cifar()
    before = net.conv1.weight.detach().clone()
    enc = load_encoder(net, feature_dim=64, weights=CHECKPOINT)  # legacy torch file, keys prefixed "module."
    assert not torch.equal(before, net.conv1.weight)
    raw = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(raw["module.layer3.2.conv2.weight"], net.layer3[2].conv2.weight)
    clf = ImageClassifier(enc, ["ants", "bees"])
    assert clf.model(pixel_values=torch.randn(3, 3, 32, 32)).shape == (3, 2)
