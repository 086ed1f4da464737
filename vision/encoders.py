"""Image encoders: what vision registers with ``common.encoders``.

- the Hugging Face task ``"image"`` (``AutoModelForImageClassification`` + ``AutoImageProcessor``),
  which claims configs with an image size or channel count (ViT, DeiT, BEiT, ConvNeXt, Swin, ResNet);
- the spec scheme ``torchvision:<name>``, with a local weights file and ImageNet preprocessing;
- the spec scheme ``timm:<name>`` (``timm.create_model``), with a local weights file and the
  preprocessing of the model's timm pretrained config.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from torch import nn

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


def image_processor(size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    interpolation: str = "bilinear"):
    """Resize to ``size`` x ``size`` (``"bilinear"`` or ``"bicubic"``) and normalise with ``mean`` and ``std``.

    A ``ViTImageProcessor``: it saves with ``save_pretrained`` and training sizes its augmentation from it.
    """
    from transformers import ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    resample = {"bilinear": PILImageResampling.BILINEAR, "bicubic": PILImageResampling.BICUBIC}.get(interpolation)
    if resample is None:
        raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}")
    return ViTImageProcessor(size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std),
                             resample=resample)


def imagenet_processor(size: int = 224):
    """Resize to ``size`` x ``size`` and normalise with ImageNet's mean and std (torchvision's recipe)."""
    return image_processor(size)


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


def load_timm(name: str, weights: str | os.PathLike | None = None) -> Encoder:
    """``timm.create_model(name, num_classes=0)``: pooled features of size ``model.num_features``.

    ``weights`` is a local state-dict file (``.safetensors``, ``.pth``) of the same architecture; its
    classifier (the key prefix timm's pretrained config names) is dropped and the rest must match
    exactly. The processor resizes to the config's input size, with its interpolation, mean and std.
    """
    import timm

    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise ValueError(f"unknown timm model {name!r}; see timm.list_models()") from err
    if weights is None:
        log.warning("timm:%s without weights= starts from random initialisation", name)
    else:
        classifier = model.pretrained_cfg.get("classifier") or "head"
        heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
        state = {k: v for k, v in load_state_file(weights).items() if not k.startswith(heads)}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
            raise ValueError(f"weights {weights} do not match timm:{name}: {detail}") from err
    cfg = timm.data.resolve_data_config({}, model=model)
    _, height, width = cfg["input_size"]
    if height != width:
        raise ValueError(f"timm:{name} expects {height}x{width} inputs; only square inputs are supported")
    processor = image_processor(height, cfg["mean"], cfg["std"],
                                "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear")
    return Encoder(model, model.num_features, processor=processor, layers=timm_layers(model), spec=f"timm:{name}")


def timm_layers(model: nn.Module) -> list[nn.Module] | None:
    """The repeated blocks of a timm model, input side first, one per residual block.

    Stages (``model.stages``: ConvNeXt; ``model.layers``: Swin) are flattened into their blocks; a
    stage's own layers (its downsampling) go with its first block. ``model.blocks`` is a ViT's list
    of blocks or an EfficientNet's list of stages (flattened). Other models (timm's ResNets) return
    None: :class:`Encoder` then finds their layers itself.
    """
    for attr in ("stages", "layers", "blocks"):
        stages = getattr(model, attr, None)
        if isinstance(stages, (nn.Sequential, nn.ModuleList)) and len(stages) > 0:
            break
    else:
        return None
    layers: list[nn.Module] = []
    for stage in stages:
        inner = getattr(stage, "blocks", None)
        if isinstance(inner, (nn.Sequential, nn.ModuleList)) and len(inner) > 0:
            rest = [m for n, m in stage.named_children() if n != "blocks" and next(m.parameters(), None) is not None]
            layers += [nn.ModuleList([*rest, inner[0]]) if rest else inner[0], *inner[1:]]
        elif isinstance(stage, (nn.Sequential, nn.ModuleList)):
            layers += list(stage)
        else:
            layers.append(stage)
    return layers


register_hf_task("image", "AutoModelForImageClassification", "AutoImageProcessor", _claims_image)
register_encoder_scheme("torchvision", load_torchvision)
register_encoder_scheme("timm", load_timm)
