"""A reference that needs no deep learning: logistic regression on the pixels.

Every transfer result sits beside this row, so a reader can tell whether a pretrained encoder beats
what a linear model on downscaled raw pixels achieves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import load_image


class PixelLogReg:
    """Images resized to ``size`` x ``size`` RGB, standardised, fed to logistic regression (scikit-learn).

    Example:
        >>> dark, bright = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
        >>> PixelLogReg(size=4).fit([dark, bright], ["dark", "bright"]).predict([bright])
        ['bright']
    """

    def __init__(self, size: int = 32, C: float = 1.0) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.size = size
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))

    def _pixels(self, images: Sequence[Any]) -> np.ndarray:
        return np.stack([np.asarray(load_image(x).resize((self.size, self.size)), dtype=np.float32).ravel() / 255
                         for x in images])

    def fit(self, images: Sequence[Any], labels: Sequence[str]) -> PixelLogReg:
        self.model.fit(self._pixels(images), [str(y) for y in labels])
        return self

    def predict(self, images: Sequence[Any]) -> list[str]:
        return [str(p) for p in self.model.predict(self._pixels(images))]
