"""Data audit: planted problems are flagged with the right reason, a clean set flags nothing, files stay untouched.

The encoders are fixed, informative and tiny, so every finding is deterministic: images are encoded by
their 4x4 average colours, clips by their power in 50 frequency bands. Class is in the colour (red vs
blue) or the noise shape (low vs high band); each item is made distinct by its own random pattern.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image

from transferkit.common.audit import AuditConfig, AuditSplit, nearest, robust_z, run_audit

RATE = 16_000


class PoolColours(torch.nn.Module):
    """Average colour of each cell of a 4x4 grid: 48 features that tell these images apart."""

    feature_dim = 48

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(pixel_values, 4).flatten(1)


class BandPower(torch.nn.Module):
    """Mean spectral magnitude of the first 0.5 s in 50 bands of 160 Hz."""

    feature_dim = 50

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        spec = torch.fft.rfft(input_values[:, :8000], n=8000).abs()
        return spec[:, :4000].reshape(len(spec), 50, -1).mean(-1)


def make_image(label: str, rng: np.random.Generator) -> Image.Image:
    grid = rng.uniform(0, 1, (4, 4, 3))
    grid[..., 0 if label == "red" else 2] += 0.6
    return Image.fromarray((grid / grid.max() * 255).astype(np.uint8)).resize((48, 48), Image.BILINEAR)


def make_clip(label: str, rng: np.random.Generator, amp: float = 0.3) -> np.ndarray:
    """Noise below 2.5 kHz ('low') or above 4 kHz ('high'), plus three loud tones anywhere: the clip's own."""
    n = RATE // 2
    spec = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spec[(freqs > 2500) if label == "low" else (freqs < 4000)] = 0
    noise = np.fft.irfft(spec, n)
    t = np.arange(n) / RATE
    wave = noise / noise.std() + sum(3 * np.sin(2 * np.pi * (b + 0.5) * 160 * t) for b in rng.choice(50, 3, replace=False))
    return (amp * wave / np.abs(wave).max()).astype(np.float32)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def flagged(report) -> set[tuple[str, str, str]]:
    return {(f.split, Path(f.source).name, f.reason) for f in report.flags}


# ---------------------------------------------------------------------------------------------- images
def image_folder(root: Path, labels: list[str], seed: int, flip: tuple[int, ...] = ()) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    images = [make_image(lab, rng) for lab in labels]
    for i, (img, lab) in enumerate(zip(images, labels)):
        shown = {"red": "blue", "blue": "red"}[lab] if i in flip else lab
        (root / shown).mkdir(parents=True, exist_ok=True)
        img.save(root / shown / f"{i:03d}.png")
    return images


@pytest.fixture(scope="module")
def planted_images(tmp_path_factory):
    """20 red + 20 blue; 003 and 025 carry the other label; problems added beside them."""
    root = tmp_path_factory.mktemp("images")
    train, test = root / "train", root / "test"
    images = image_folder(train, ["red"] * 20 + ["blue"] * 20, seed=0, flip=(3, 25))
    images[7].resize((37, 37), Image.BICUBIC).save(train / "red" / "copy_of_007.jpg", quality=70)  # resized + JPEG
    (train / "red" / "corrupt.png").write_bytes(b"these bytes are not an image")
    jpeg = io.BytesIO()
    images[8].save(jpeg, "JPEG")
    (train / "red" / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (train / "red" / "empty.png").write_bytes(b"")
    image_folder(test, ["red"] * 5 + ["blue"] * 5, seed=1)
    shutil.copy(train / "blue" / "030.png", test / "blue" / "leaked.png")  # a training photo also in the test set
    return train, test


IMAGE_FLAGS = {
    ("train", "003.png", "label_issue"), ("train", "025.png", "label_issue"),
    ("train", "copy_of_007.jpg", "near_duplicate"), ("train", "030.png", "leakage"),
    ("train", "corrupt.png", "unreadable"), ("train", "truncated.jpg", "truncated"), ("train", "empty.png", "empty"),
}


def test_image_audit_flags_each_planted_problem_and_nothing_else(planted_images, tmp_path):
    from transferkit.vision.audit import audit

    train, test = planted_images
    before = {**digest(train), **{f"test/{k}": v for k, v in digest(test).items()}}
    report = audit(train, PoolColours(), test=test, progress=False)
    assert flagged(report) == IMAGE_FLAGS
    copy = next(f for f in report.flags if f.reason == "near_duplicate")
    assert Path(copy.partner_source).name == "007.png" and copy.score > 0.99 and not copy.conflict
    assert report.class_balance() == [{"label": "blue", "train": 20, "test": 6, "train after cleaning": 18},
                                      {"label": "red", "train": 24, "test": 5, "train after cleaning": 19}]
    paths = report.write(tmp_path / "out")
    clean = report.write_clean(tmp_path / "train.clean.csv")
    after = {**digest(train), **{f"test/{k}": v for k, v in digest(test).items()}}
    assert after == before  # the audit and its outputs left every source file byte-identical

    html = paths["html"].read_text()
    assert html.count("data:image/jpeg;base64,") >= 4  # the flagged photos and their partners, inlined
    rows = list(csv.DictReader(open(paths["csv"])))
    assert {(r["reason"], Path(r["source"]).name) for r in rows} == {(r, n) for _, n, r in IMAGE_FLAGS}
    assert json.loads(paths["config"].read_text())["near_duplicate"] == 0.2
    assert "| label_issue | 2 |" in paths["md"].read_text()

    kept = list(csv.DictReader(open(clean)))
    assert len(kept) == 44 - 7 and not {Path(r["path"]).name for r in kept} & {n for _, n, _ in IMAGE_FLAGS}


def test_clean_image_set_flags_nothing(tmp_path):
    from transferkit.vision.audit import audit

    image_folder(tmp_path / "clean", ["red"] * 20 + ["blue"] * 20, seed=0)
    report = audit(tmp_path / "clean", PoolColours(), progress=False)
    assert report.flags == []
    assert report.clean_indices() == list(range(40))


def test_written_clean_manifest_trains_with_fit(planted_images, tmp_path):
    from transferkit.vision import ImageClassifier, ImageSet
    from transferkit.vision.audit import audit

    train, _ = planted_images
    report = audit(train, PoolColours(), progress=False)
    clean = report.write_clean(tmp_path / "clean.csv")
    assert len(ImageSet.from_csv(clean)) == 44 - 6  # no leakage without a test set: 6 flagged
    clf = ImageClassifier.from_pretrained(PoolColours(), labels=["blue", "red"], strategy="linear_probe", feature_dim=48)
    clf.fit(str(clean), output_dir=str(tmp_path / "run"), epochs=1, progress=False, plot=False, save_checkpoints=False)
    assert clf.train_info["train_examples"] == 38


def test_write_clean_refuses_to_overwrite_an_input(planted_images, tmp_path):
    from transferkit.vision.audit import audit

    train, _ = planted_images
    report = audit(train, PoolColours(), progress=False)
    with pytest.raises(ValueError, match="input of the audit"):
        report.write_clean(train / "red" / "000.png")
    with pytest.raises(ValueError, match="outside it"):
        report.write(train / "audit")


# ---------------------------------------------------------------------------------------------- clips
def clip_folder(root: Path, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    waves = []
    for i in range(40):
        label = "low" if i < 20 else "high"
        waves.append(make_clip(label, rng))
        (root / label).mkdir(parents=True, exist_ok=True)
        sf.write(root / label / f"{i:03d}.wav", waves[-1], RATE)
    return waves


@pytest.fixture(scope="module")
def planted_clips(tmp_path_factory):
    import torchaudio

    root = tmp_path_factory.mktemp("clips")
    train, test = root / "train", root / "test"
    waves = clip_folder(train, seed=0)
    rng = np.random.default_rng(5)
    sf.write(train / "low" / "mislabelled.wav", make_clip("high", rng), RATE)
    copy = torchaudio.functional.resample(torch.from_numpy(waves[3]), RATE, 22_050).numpy() * 0.8
    sf.write(train / "low" / "resampled_003.wav", copy, 22_050)  # resampled and 2 dB quieter
    sf.write(train / "low" / "silent.wav", np.zeros(RATE // 2, np.float32), RATE)
    sf.write(train / "high" / "clipped.wav", np.clip(make_clip("high", rng, amp=3.0), -1, 1), RATE)
    (train / "high" / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt but nothing after")
    for i in range(6):
        label = "low" if i < 3 else "high"
        (test / label).mkdir(parents=True, exist_ok=True)
        sf.write(test / label / f"t{i}.wav", make_clip(label, rng), RATE)
    shutil.copy(train / "high" / "030.wav", test / "high" / "leaked.wav")
    return train, test


CLIP_FLAGS = {
    ("train", "mislabelled.wav", "label_issue"), ("train", "resampled_003.wav", "near_duplicate"),
    ("train", "030.wav", "leakage"), ("train", "silent.wav", "silent"), ("train", "clipped.wav", "clipped"),
    ("train", "corrupt.wav", "unreadable"),
}


def test_audio_audit_flags_each_planted_problem_and_nothing_else(planted_clips, tmp_path):
    from transferkit.audio import AudioDataset
    from transferkit.audio.audit import audit

    train, test = planted_clips
    before = digest(train.parent)
    report = audit(train, BandPower(), test=test, progress=False)
    assert flagged(report) == CLIP_FLAGS
    clipped = next(f for f in report.flags if f.reason == "clipped")
    assert clipped.score > 0.01  # the fraction of samples at full scale, above the decoder's limit
    silent = next(f for f in report.flags if f.reason == "silent")
    assert silent.score == -np.inf
    paths = report.write(tmp_path / "out")
    clean = report.write_clean(tmp_path / "clean.csv")
    assert digest(train.parent) == before

    html = paths["html"].read_text()
    assert "<audio controls" in html and "data:audio/wav;base64," in html
    ds = AudioDataset.from_manifest(clean)
    assert len(ds) == 45 - 6 and ds.report.n_skipped == 0


def test_clean_clip_set_flags_nothing(tmp_path):
    from transferkit.audio.audit import audit

    clip_folder(tmp_path / "clean", seed=0)
    assert audit(tmp_path / "clean", BandPower(), progress=False).flags == []


# ---------------------------------------------------------------------------------------------- core
def test_core_pairs_conflicts_and_outliers_on_features():
    rng = np.random.default_rng(0)
    feats = rng.normal(0, 1, (40, 16)) + 4 * np.eye(16)[[0] * 20 + [1] * 20]
    labels = ["a"] * 20 + ["b"] * 20
    feats = np.concatenate([feats, feats[5:6] + 1e-3, 40 * np.eye(16)[[9]]])  # 40: copy of 5, relabelled; 41: far away
    labels += ["b", "a"]
    hashes = [f"h{i}" for i in range(42)]
    test = AuditSplit.from_features(["t0", "t1"], ["a", "b"], np.stack([feats[12], rng.normal(0, 1, 16)]),
                                    hashes=["h12", "t1"])
    train = AuditSplit.from_features([f"{i}" for i in range(42)], labels, feats, hashes=hashes)
    report = run_audit(train, test, AuditConfig(knn="sklearn", neighbours=5))
    found = {(f.index, f.reason) for f in report.flags}
    assert (40, "near_duplicate") in found and (12, "leakage") in found and (41, "outlier") in found
    copy = next(f for f in report.flags if f.reason == "near_duplicate")
    assert copy.partner == 5 and copy.conflict  # same content, different labels
    leak = next(f for f in report.flags if f.reason == "leakage")
    assert leak.score == 1.0 and leak.partner == 0 and leak.detail == "same content hash as a test item"
    assert report.flagged("outlier") == {41} and "outlier" not in report.config.drop  # kept for review by default


def test_faiss_and_sklearn_find_the_same_neighbours():
    pytest.importorskip("faiss")
    x = np.random.default_rng(1).normal(size=(300, 24)).astype(np.float32)
    s1, i1 = nearest(x, x[:50], 5, "faiss")
    s2, i2 = nearest(x, x[:50], 5, "sklearn")
    assert (i1 == i2).all() and np.allclose(s1, s2, atol=1e-5)
    assert (i1[:, 0] == np.arange(50)).all()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="near_duplicate must be < 1"):
        AuditConfig(near_duplicate=1.5)
    with pytest.raises(ValueError, match="unknown kind"):
        AuditConfig(drop=["labels"])
    assert robust_z(np.ones(5)).tolist() == [0.0] * 5


# ---------------------------------------------------------------------------------------------- CLI
def test_vision_audit_verb_writes_the_report_and_a_clean_manifest(planted_images, vit_dir, tmp_path):
    from transferkit.common.cli import main
    from transferkit.vision import ImageSet

    train, test = planted_images
    out, clean = tmp_path / "report", tmp_path / "clean.csv"
    assert main(["vision", "audit", str(train), "--model", str(vit_dir), "--test", str(test), "--out", str(out),
                 "--write-clean", str(clean), "--knn", "sklearn"]) == 0
    rows = {(r["reason"], Path(r["source"]).name) for r in csv.DictReader(open(out / "flagged.csv"))}
    # content hashes and the decoder do not depend on the (random) encoder
    assert {("leakage", "030.png"), ("unreadable", "corrupt.png"), ("truncated", "truncated.jpg"),
            ("empty", "empty.png")} <= rows
    assert json.loads((out / "audit-config.json").read_text())["knn_backend"] == "sklearn"
    assert {"030.png", "corrupt.png"}.isdisjoint(Path(p).name for p in ImageSet.from_csv(clean).items)


def test_audio_audit_verb_takes_the_clip_checks(planted_clips, tmp_path, capsys):
    from transferkit.common.cli import main

    train, _ = planted_clips
    out = tmp_path / "report"
    # -200 dB: the all-zero clip is still silent (its peak is -inf dB); --silence-db reaches the checks
    assert main(["audio", "audit", str(train), "--model", "packaged:speech_embedding", "--out", str(out),
                 "--silence-db", "-200", "--drop", "file"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["flags"]["silent"] == 1 and printed["flags"]["clipped"] == 1
    assert printed["dropped_by_write_clean"] == 3  # only the file problems: silent, clipped, corrupt


def test_clips_in_memory_are_audited_but_not_written_as_a_manifest():
    from transferkit.audio.audit import audit

    rng = np.random.default_rng(3)
    waves = [make_clip("low" if i < 12 else "high", rng) for i in range(24)]
    labels = ["low"] * 12 + ["high"] * 12
    waves[5] = np.zeros(8000, np.float32)
    report = audit((waves, labels), BandPower(), sampling_rate=RATE, progress=False)
    assert flagged(report) == {("train", "<clip 5>", "silent")}
    with pytest.raises(ValueError, match="clean_indices"):
        report.write_clean("clean.csv")
    assert 5 not in report.clean_indices() and len(report.clean_indices()) == 23
