"""transferkit.vision: image classification by transfer from a pretrained encoder."""

from . import encoders  # noqa: F401  (registers the "image" task and torchvision: specs)
from .classifier import ImageClassifier
from .data import ImageDecodeError, ImageSet, load_image
from .resnet_cifar import ResNetCIFAR, resnet20_cifar
from .transforms import AugmentConfig

__all__ = ["AugmentConfig", "ImageClassifier", "ImageDecodeError", "ImageSet", "ResNetCIFAR", "load_image", "resnet20_cifar"]
