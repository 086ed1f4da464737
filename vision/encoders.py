"""Image encoders: what vision registers with ``common.encoders``.

- the Hugging Face task ``"image"`` (``AutoModelForImageClassification`` + ``AutoImageProcessor``),
  which claims configs with an image size or channel count (ViT, DeiT, BEiT, ConvNeXt, Swin, ResNet);
- the spec scheme ``torchvision:<name>``, with a local weights file and ImageNet preprocessing.
"""

from __future__ import annotations

import logging
import os

from transferkit.common.encoders import (
    HEAD_PREFIXES,
    Encoder,
    load_state_file,
    register_encoder_scheme,
    register_hf_task,
    take_head,
)

from .transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


def imagenet_processor(size: int = 224):
    """Resize to ``size`` x ``size`` and normalise with ImageNet's mean and std (torchvision's recipe)."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": size, "width": size}, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))


def _claims_image(config) -> bool:
    return hasattr(config, "num_channels") or hasattr(config, "image_size")


def load_torchvision(name: str, weights: str | os.PathLike | None = None) -> Encoder:
    """``torchvision.models.<name>`` with its classifier taken off; ``weights`` a local state-dict file."""
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError as err:
        raise ValueError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()") from err
    if weights is None:
        log.warning("torchvision:%s without weights= starts from random initialisation", name)
    else:
        # The old classifier is dropped anyway; its shape may differ (another number of classes).
        state = {k: v for k, v in load_state_file(weights).items() if not k.startswith(HEAD_PREFIXES)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith(HEAD_PREFIXES)]:
            raise ValueError(f"weights {weights} do not match torchvision:{name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    _, dim = take_head(model)
    return Encoder(model, dim, processor=imagenet_processor(), spec=f"torchvision:{name}")


register_hf_task("image", "AutoModelForImageClassification", "AutoImageProcessor", _claims_image)
register_encoder_scheme("torchvision", load_torchvision)
