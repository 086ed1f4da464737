"""The offline demos and the built-in data they run on. Not part of the library API.

``transferkit demo`` runs each part registered in the ``transferkit.demos`` entry-point group; every
part is a module with ``run_demo(out_dir, *, seed=0, quick=False) -> str`` that writes its files into
``out_dir`` and returns its markdown section of the report (``quick=True``: a toy size that runs in
seconds, what the tests use).

Demos: ``vision`` (digits 0-4 -> digits 5-9 with a small ViT), ``audio`` (eSpeak words -> spoken
digits with a small wav2vec2), ``recsys`` (four embedding-table transfer modes), ``spoken_digits`` (keyword
spotting on the shipped real clips, a speaker unseen in training).

Built-in data, shared with the benchmarks and the tests:

- ``digits``: scikit-learn's real 8x8 handwritten digits as images, the target split, a tiny random ViT.
- ``espeak``: eSpeak NG speech synthesis in-process (the ``espeakng-loader`` package).
- ``speech_corpus``: eSpeak words with voices split so that test clips use unseen voices.
- ``recsys_world``: a synthetic two-period, two-domain interaction world and a checkerboard matrix.
- ``SPOKEN_DIGITS``: the folder of 120 real spoken-digit clips shipped with the package (4 speakers x 10 digits
  x 3 takes from the Free Spoken Digit Dataset, CC BY-SA 4.0; its ``README.md`` gives source and authors), with
  ``train.csv`` (3 speakers), ``test.csv`` (a 4th, unseen speaker) and ``all.csv`` manifests.
"""

from pathlib import Path

__all__ = ["SPOKEN_DIGITS"]

SPOKEN_DIGITS = Path(__file__).resolve().parent / "data" / "fsdd"
