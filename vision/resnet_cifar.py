"""ResNet-20 for 32x32 images (He et al. 2016, section 4.2, the CIFAR-10 variant).

Three stages of three basic blocks (16, 32 and 64 channels) after a 3x3 stem; where a stage halves
the resolution, the shortcut is option A: the identity, subsampled by 2 and zero-padded to the new
width, so it has no weights. The parameter names match the widely used CIFAR-10 checkpoints of
``akamaster/pytorch_resnet_cifar10`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``linear``), so
such a checkpoint loads with ``load_encoder(resnet20_cifar(), feature_dim=64, weights=path)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResNetCIFAR", "resnet20_cifar"]


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.pad = stride, planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        # Option A: take every other pixel, zero-pad the extra channels evenly on both sides.
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """A CIFAR ResNet whose ``forward`` returns pooled features (``feature_dim`` = 64).

    ``linear`` is the original 10-way classifier. It is kept so that a published checkpoint loads
    with every key checked, and ``classify`` reproduces the source task's predictions; as an
    encoder it is unused (transferkit puts a new head on the features).

    Example:
        >>> net = resnet20_cifar()
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 64])
    """

    def __init__(self, blocks_per_stage: int = 3, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, in_planes = [], widths[0]
        for i, width in enumerate(widths):
            layers = []
            for j in range(blocks_per_stage):
                layers.append(_BasicBlock(in_planes, width, stride=2 if i > 0 and j == 0 else 1))
                in_planes = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(widths[-1], num_classes)
        self.feature_dim = widths[-1]
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, (batch, 64, H/4, W/4)."""
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the original classifier (CIFAR-10 for the published weights)."""
        return self.linear(self(x))


def resnet20_cifar(num_classes: int = 10) -> ResNetCIFAR:
    """ResNet-20 (3 stages x 3 basic blocks, 0.27 M parameters) with option-A shortcuts."""
    return ResNetCIFAR(blocks_per_stage=3, num_classes=num_classes)
