"""Bad image input: each case gets a clear error naming the file, or a counted, logged skip."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import write_folder
from PIL import Image

from transferkit.vision import ImageClassifier, ImageDecodeError, ImageSet, load_image


def test_truncated_image_is_named(tmp_path):
    path = tmp_path / "cut.jpg"
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_image(path)


def test_folder_skips_and_counts_non_images_and_corrupt_files(tmp_path, images, caplog):
    root = write_folder(tmp_path / "data", *images)
    (root / "bright" / "notes.txt").write_text("not an image")
    (root / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with caplog.at_level("WARNING"):
        ds = ImageSet.from_folder(root)
    assert len(ds) == len(images[0])
    assert ds.skipped == {"not_image": 1, "undecodable": 1}
    assert "notes.txt" in caplog.text and "broken.png" in caplog.text
    assert ds.labels == ["bright", "dark"]


def test_empty_class_folder_is_an_error(tmp_path, images):
    root = write_folder(tmp_path / "data", *images)
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*contains no image files"):
        ImageSet.from_folder(root)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "1", "CMYK"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4] = 255
    img = Image.fromarray(rgb)
    if mode == "I;16":
        arr = np.zeros((8, 8), np.uint16)
        arr[:, :4] = 65535
        img = Image.fromarray(arr)
        assert img.mode.startswith("I;16")
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    else:
        img = img.convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("I;16", "CMYK") else "x.png")
    img.save(path)
    out = np.asarray(load_image(path))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[:, :4].min() >= 250 and out[:, 4:].max() <= 5  # white stays white, black stays black


def test_transparency_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    out = np.asarray(load_image(Image.fromarray(rgba, "RGBA")))
    assert (out == 255).all()


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """Regression: the image claimed 2.5 G pixels, above Pillow's own refusal, so the test passed with
    transferkit's check deleted. Here the claim is under Pillow's limit and over transferkit's ``max_pixels``;
    the file's pixel data is a stub, so an attempt to decode would fail differently ("corrupt or truncated")."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(200, 100))  # 20,000 pixels claimed by a 60-byte file
    with pytest.raises(ImageDecodeError, match=r"bomb\.png: 200x100 pixels exceeds the limit of 19999 "
                                               r"\(possible decompression bomb\)"):
        load_image(path, max_pixels=19_999)
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):  # at the limit it is decoded, and fails
        load_image(path, max_pixels=20_000)


def test_image_smaller_than_a_patch_still_predicts(vit_dir):
    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["a", "b"])
    tiny = np.full((2, 2, 3), 200, np.uint8)  # the ViT's patches are 4x4
    pred = clf.predict(tiny)[0]
    assert pred["label"] in ("a", "b") and sum(pred["scores"].values()) == pytest.approx(1.0)


def test_unseen_label_at_evaluation_is_named(vit_dir, images):
    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"])
    imgs, labels = images
    with pytest.raises(ValueError, match=r"\['grey'\].*does not know"):
        clf.evaluate((imgs[:3], ["bright", "dark", "grey"]))


def test_csv_manifest_resolves_relative_paths(tmp_path, images):
    root = write_folder(tmp_path / "data", *images)
    rows = ["path,label"] + [f"data/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(root.rglob("*.png"))]
    rows.append("data/missing.png,bright")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    ds = ImageSet.from_csv(tmp_path / "train.csv")
    assert len(ds) == len(images[0]) and ds.skipped["missing"] == 1


def test_hf_dataset_source_keeps_its_columns(images):
    datasets = pytest.importorskip("datasets")
    imgs, labels = images
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["bright", "dark"])})
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(x) for x in imgs],
                                     "label": [["bright", "dark"].index(y) for y in labels]}, features=features)
    s = ImageSet.from_hf(ds)
    img, label = s[1]
    assert label == labels[1] and img.size == (16, 16)
    assert ds.column_names == ["image", "label"]


def test_a_broken_image_in_a_hf_dataset_is_skipped_and_counted(images, tmp_path, monkeypatch):
    """Regression: the Image column was read decoded, so one broken JPEG raised while the rows were listed."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    imgs, labels = images
    encoded = []
    for x in imgs:
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="PNG")
        encoded.append({"bytes": buf.getvalue(), "path": None})
    encoded.append({"bytes": b"\xff\xd8\xff not a jpeg", "path": "broken.jpg"})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["bright", "dark"])})
    ds = datasets.Dataset.from_dict({"image": encoded, "label": [["bright", "dark"].index(y) for y in labels] + [0]},
                                    features=features)
    s = ImageSet.from_hf(ds)
    assert len(s) == len(imgs) and sum(s.skipped.values()) == 1
    assert s.targets == [str(y) for y in labels]
    img, label = s[1]
    assert label == labels[1] and img.size == (16, 16)


def test_fingerprint_changes_with_content(tmp_path, images):
    a = ImageSet.from_arrays(*images)
    b = ImageSet.from_arrays([x.copy() for x in images[0]], images[1])
    assert a.fingerprint() == b.fingerprint()
    b.items[0][0, 0, 0] ^= 1
    assert a.fingerprint() != b.fingerprint()


def test_gif_placeholders_are_skipped_like_torchvision_imagefolder(tmp_path, images):
    root = write_folder(tmp_path / "data", *images)
    Image.new("RGB", (30, 30)).save(root / "bright" / "imageNotFound.gif")
    assert ImageSet.from_folder(root).skipped["not_image"] == 1
    with_gif = ImageSet.from_folder(root, extensions=(".png", ".gif"))
    assert len(with_gif) == len(images[0]) + 1


def test_real_photo_folder_counts(tmp_path):
    from conftest import SHARED_DATA

    root = SHARED_DATA / "hymenoptera"
    if not root.exists():
        pytest.skip(f"{root} is absent (it ships beside the project, not in it)")
    train, val = ImageSet.from_folder(root / "train"), ImageSet.from_folder(root / "val")
    assert (len(train), len(val)) == (244, 153)  # SOURCE.md: the .gif placeholder is not a sample
    assert train.skipped == {"not_image": 1, "undecodable": 0}
