"""A reference that needs no deep learning: MFCC statistics + logistic regression.

Every transfer result in the demo and benchmarks sits beside this row, so a reader can tell
whether a pretrained encoder beats what a few lines of classical speech features achieve.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchaudio


def mfcc_stats(waves: Sequence[np.ndarray], sampling_rate: int = 16_000, n_mfcc: int = 20) -> np.ndarray:
    """Per clip: mean and standard deviation over time of MFCCs and their deltas (4 x n_mfcc values).

    Example:
        >>> mfcc_stats([np.zeros(8000, dtype=np.float32)]).shape
        (1, 80)
    """
    transform = torchaudio.transforms.MFCC(
        sample_rate=sampling_rate, n_mfcc=n_mfcc,
        melkwargs={"n_fft": 400, "hop_length": 160, "n_mels": 40, "center": True},
    )
    feats = []
    with torch.no_grad():
        for w in waves:
            m = transform(torch.as_tensor(np.asarray(w, dtype=np.float32)))  # (n_mfcc, frames)
            d = torchaudio.functional.compute_deltas(m)
            feats.append(torch.cat([m.mean(1), m.std(1, unbiased=False), d.mean(1), d.std(1, unbiased=False)]).numpy())
    return np.stack(feats)


class MfccLogReg:
    """Standardised MFCC statistics fed to multinomial logistic regression (scikit-learn).

    Example:
        >>> clf = MfccLogReg().fit([np.random.randn(8000) * 0.1, np.zeros(8000)], ["noise", "silence"])
        >>> clf.predict([np.zeros(8000)])
        ['silence']
    """

    def __init__(self, sampling_rate: int = 16_000, n_mfcc: int = 20, C: float = 1.0) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.sampling_rate = sampling_rate
        self.n_mfcc = n_mfcc
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))

    def fit(self, waves: Sequence[np.ndarray], labels: Sequence[str]) -> MfccLogReg:
        self.model.fit(mfcc_stats(waves, self.sampling_rate, self.n_mfcc), list(labels))
        return self

    def predict(self, waves: Sequence[np.ndarray]) -> list[str]:
        return [str(p) for p in self.model.predict(mfcc_stats(waves, self.sampling_rate, self.n_mfcc))]
