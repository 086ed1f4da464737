"""transferkit.vision: image classification by transfer from a pretrained encoder."""

from . import (
    encoders,  # noqa: F401  (registers the "image" task, torchvision: and timm: specs)
    packaged,  # noqa: F401  (registers packaged:mobilenet_v2 and packaged:efficientnet_lite0)
)
from .audit import audit
from .classifier import ImageClassifier
from .data import ImageDecodeError, ImageSet, load_image
from .resnet_cifar import ResNetCIFAR, resnet20_cifar
from .transforms import AugmentConfig

__all__ = ["AugmentConfig", "ImageClassifier", "ImageDecodeError", "ImageSet", "ResNetCIFAR", "audit", "load_image",
           "resnet20_cifar"]
