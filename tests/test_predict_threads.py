"""predict with decoding in worker threads gives exactly the predictions of predict in one thread."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import two_class_images, write_folder
from test_audio_models import SR, tiny_wav2vec2

from transferkit.audio import AudioClassifier
from transferkit.common.classifier import prepared_batches
from transferkit.vision import ImageClassifier


def test_prepared_batches_keep_the_order_whatever_the_workers():
    chunks = [list(range(k, k + 3)) for k in range(0, 30, 3)]
    for workers in (0, 1, 2, 4):
        assert list(prepared_batches(sum, chunks, workers)) == [sum(c) for c in chunks]
    with pytest.raises(ValueError, match="workers"):
        list(prepared_batches(sum, chunks, -1))


def test_image_predict_with_threads_equals_predict_without(tmp_path):
    from conftest import tiny_vit

    torch.manual_seed(0)
    clf = ImageClassifier.from_pretrained(str(tiny_vit(tmp_path / "vit")), labels=["bright", "dark"])
    images, labels = two_class_images(n=23)
    paths = sorted(str(p) for p in write_folder(tmp_path / "imgs", images, labels).rglob("*.png"))
    plain = clf.predict(paths, batch_size=4, workers=0)
    threaded = clf.predict(paths, batch_size=4, workers=3)
    assert len(plain) == 23 and threaded == plain  # labels and every probability, bit for bit
    assert len({round(p["score"], 6) for p in plain}) > 1  # the images are told apart: a real comparison
    with pytest.raises(ValueError, match="workers must be 0"):
        clf.predict(paths, workers=-1)


def test_audio_predict_with_threads_equals_predict_without(tmp_path):
    torch.manual_seed(0)
    clf = AudioClassifier.from_pretrained(str(tiny_wav2vec2(tmp_path / "w2v")), labels=["lo", "hi"])
    rng = np.random.default_rng(0)
    paths = []
    for i in range(11):  # lengths vary, so the shortest-first order and the padding both matter
        t = np.arange(int(SR * (0.2 + 0.05 * i))) / SR
        wave = 0.3 * np.sin(2 * np.pi * (200 + 80 * i) * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(tmp_path / f"{i:02d}.wav", wave.astype(np.float32), SR)
        paths.append(str(tmp_path / f"{i:02d}.wav"))
    plain = clf.predict(paths, batch_size=3, workers=0)
    threaded = clf.predict(paths, batch_size=3, workers=2)
    assert len(plain) == 11 and threaded == plain
    assert len({round(p["score"], 6) for p in plain}) > 1


def test_image_predict_takes_one_path_pil_image_or_array_as_a_list_of_one(tmp_path):
    from conftest import tiny_vit
    from PIL import Image

    torch.manual_seed(0)
    clf = ImageClassifier.from_pretrained(str(tiny_vit(tmp_path / "vit")), labels=["bright", "dark"])
    images, labels = two_class_images(n=2)
    path = sorted(str(p) for p in write_folder(tmp_path / "imgs", images, labels).rglob("*.png"))[0]
    expected = clf.predict([path], workers=0)
    assert len(expected) == 1
    assert clf.predict(path, workers=0) == expected
    with Image.open(path) as img:
        pil = img.convert("RGB")
    assert clf.predict(pil, workers=0) == clf.predict([pil], workers=0) and len(clf.predict(pil)) == 1
    array = np.asarray(pil)
    assert clf.predict(array, workers=0) == clf.predict([array], workers=0) and len(clf.predict(array)) == 1
