"""Memory format of convolutional weights: channels-last (NHWC) where it runs faster, the plain format
wherever a model is saved, compared or handed back to the user."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["channels_last", "use_channels_last"]


def use_channels_last(model: nn.Module, setting: bool | None) -> bool:
    """``TrainConfig.channels_last`` for ``model``: as set, or (None) whether 2-D convolutions hold most of its
    weights: a CNN yes, a ViT (one patch-embedding convolution) or a speech transformer no.

    Example:
        >>> use_channels_last(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2)), None)
        True
    """
    if setting is not None:
        return setting and any(isinstance(m, nn.Conv2d) for m in model.modules())
    conv = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters(recurse=False))
    return conv > 0.5 * sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def channels_last(model: nn.Module, setting: bool | None = None) -> Iterator[bool]:
    """Run ``model`` with its weights in channels-last memory format inside the block (inference, feature
    extraction, prediction), and put them back in the plain format on leaving it, so that what is saved or
    compared afterwards is the model as loaded. ``setting`` resolves as :func:`use_channels_last` does (None:
    on for convolutional networks); yields whether the block runs channels-last. A convolution whose weight is
    channels-last returns channels-last outputs from plain inputs, so the inputs need no change; the outputs
    are the plain path's to floating-point rounding.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> with channels_last(net) as on:
        ...     y = net(torch.zeros(1, 3, 8, 8))
        >>> on, net[0].weight.is_contiguous()
        (True, True)
    """
    on = use_channels_last(model, setting)
    convert = on and not _is_channels_last(model)  # inside a block that already converted it (fit): leave as is
    if convert:
        model.to(memory_format=torch.channels_last)
    try:
        yield on
    finally:
        if convert:
            model.to(memory_format=torch.contiguous_format)


def _is_channels_last(model: nn.Module) -> bool:
    # A 1x1 kernel is contiguous in both formats, so the first larger one tells.
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-2:] != (1, 1)]
    weights = weights or [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    w = weights[0] if weights else None
    return w is not None and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)
