"""transferkit.vision: image classification by transfer from a pretrained encoder."""

from .classifier import ImageClassifier
from .data import ImageDecodeError, ImageSet, load_image
from .transforms import AugmentConfig

__all__ = ["AugmentConfig", "ImageClassifier", "ImageDecodeError", "ImageSet", "load_image"]
