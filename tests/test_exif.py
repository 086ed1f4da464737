"""Phone photos carry an EXIF orientation tag: every decode here must turn them upright, as ``datasets``
and the exported ``pipeline`` do (regression: ``load_image`` ignored the tag and trained on sideways pixels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

# The inverse of what each orientation tells a viewer to do: a camera stores the upright scene turned this way.
STORED_AS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def upright_scene() -> np.ndarray:
    """A portrait 32x16 scene of four 16x8 blocks of distinct colours (aligned to JPEG's 8x8 blocks)."""
    scene = np.zeros((32, 16, 3), np.uint8)
    scene[:16, :8], scene[:16, 8:] = (220, 30, 30), (30, 220, 30)
    scene[16:, :8], scene[16:, 8:] = (30, 30, 220), (230, 230, 40)
    return scene


def phone_photo(path, orientation: int) -> str:
    """The scene as a camera held sideways stores it: pixels turned, EXIF tag saying how to turn them back."""
    stored = Image.fromarray(upright_scene()).transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, quality=100, subsampling=0)
    return str(path)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_rotated_jpeg_decodes_upright(tmp_path, orientation):
    from transferkit.vision import load_image

    path = phone_photo(tmp_path / f"o{orientation}.jpg", orientation)
    raw = np.asarray(Image.open(path).convert("RGB"))
    got = np.asarray(load_image(path))
    assert got.shape == (32, 16, 3)
    assert np.abs(got.astype(int) - upright_scene()).mean() < 3  # upright, within JPEG's rounding
    stored_wrong = raw.shape != got.shape or np.abs(raw.astype(int) - upright_scene()).mean() > 50
    assert stored_wrong  # the file's own pixels are not upright: the tag matters
    # The same pixels as Pillow's own exif_transpose, from a path, bytes or an opened image.
    want = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    with open(path, "rb") as f:
        data = f.read()
    for source in (path, data, Image.open(path)):
        assert (np.asarray(load_image(source)) == want).all()
    # An image already turned (as datasets' Image feature hands it over) is not turned twice.
    assert (np.asarray(load_image(ImageOps.exif_transpose(Image.open(path)))) == want).all()


def test_training_pixels_equal_the_exported_pipelines(tmp_path, vit_dir):
    """The decode cache (training), predict and the exported pipeline all see the photo upright."""
    from transformers import pipeline

    from transferkit.common.decode_cache import DecodeCache
    from transferkit.vision import ImageClassifier, ImageSet
    from transferkit.vision.classifier import _pixel_collate
    from transferkit.vision.data import decoded_pixels

    folder = tmp_path / "photos"
    for label, orientation in (("a", 6), ("b", 8)):
        (folder / label).mkdir(parents=True)
        for k in range(3):
            phone_photo(folder / label / f"{k}.jpg", orientation)
    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["a", "b"], strategy="finetune")
    clf.fit(str(folder), epochs=1, batch_size=2, progress=False, plot=False, save_checkpoints=False,
            output_dir=str(tmp_path / "run"), decode_cache=str(tmp_path / "cache"))
    clf.save(tmp_path / "export")
    pipe = pipeline("image-classification", model=str(tmp_path / "export"), device="cpu")

    images = ImageSet.from_folder(folder)
    processor = pipe.image_processor
    size = (processor.size["height"], processor.size["width"])
    pixels = decoded_pixels(images, size, processor.resample, DecodeCache(tmp_path / "cache"))
    mine = _pixel_collate(processor.image_mean, processor.image_std)(
        {"pixels": torch.from_numpy(np.array(pixels)), "labels": torch.zeros(len(images))})["pixel_values"]
    theirs = torch.cat([pipe.preprocess(p)["pixel_values"] for p in images.items])
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    # ... and so do their scores: predict here and the pipeline agree on every photo.
    for path, mine_pred in zip(images.items, clf.predict(images.items)):
        top = pipe(path, top_k=2)
        assert {d["label"]: round(d["score"], 4) for d in top} == {k: round(v, 4) for k, v in mine_pred["scores"].items()}
