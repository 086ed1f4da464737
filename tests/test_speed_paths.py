"""The fast paths keep the slow paths' results: the head-only probe loop, the decode caches."""

from __future__ import annotations

import json

import pytest
import torch

from transferkit.common import ClassificationModel, Encoder, TrainConfig, Trainer, get_strategy
from transferkit.common.classifier import _FeatureSet, classification_loss, evaluate_classification
from transferkit.common.head_loop import fit_head_on_features


def _features(n: int, seed: int) -> _FeatureSet:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 16, generator=g) + 1.5 * torch.nn.functional.one_hot(y, 16).float()  # separable-ish
    return _FeatureSet(x, y)


def _probe(tmp_path, name: str, head_only: bool, **cfg):
    model = ClassificationModel(Encoder(torch.nn.Linear(4, 16), 16), 3)
    config = TrainConfig(output_dir=str(tmp_path / name), epochs=6, batch_size=16, head_lr=5e-2, progress=False,
                         plot=False, mixed_precision="no", **cfg)
    model.encoder.requires_grad_(False)
    groups = get_strategy("linear_probe").param_groups(model.encoder, model.head, config)
    trainer = Trainer(model, config, compute_loss=classification_loss(), param_groups=groups,
                      evaluate=evaluate_classification(3))
    train, val = _features(90, 0), _features(40, 1)

    def rows(fs):  # the Trainer's side reads the same vectors row by row
        return [{"features": fs.features[i], "labels": fs.labels[i]} for i in range(len(fs))]

    def collate(batch):
        return {k: torch.stack([r[k] for r in batch]) for k in ("features", "labels")}

    result = (fit_head_on_features(trainer, train, val) if head_only
              else trainer.fit(rows(train), rows(val), collate_fn=collate))
    return model, result, tmp_path / name


@pytest.mark.parametrize("cfg", [{}, {"grad_accum_steps": 2, "max_grad_norm": 0.5}])
def test_head_only_loop_matches_the_trainer_on_cached_features(tmp_path, cfg):
    slow_model, slow, slow_dir = _probe(tmp_path, "trainer", False, **cfg)
    fast_model, fast, fast_dir = _probe(tmp_path, "head", True, **cfg)
    # Same order, optimizer, schedule and clipping: the same weights, epoch by epoch.
    torch.testing.assert_close(fast_model.head.weight, slow_model.head.weight, atol=1e-5, rtol=1e-4)
    assert fast.best_epoch == slow.best_epoch and fast.best_metric == pytest.approx(slow.best_metric)
    for a, b in zip(fast.history, slow.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["accuracy"] == pytest.approx(b["accuracy"])
    # The run folder holds what the Trainer's holds: config, metrics per epoch, best and last weights.
    lines = (fast_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(1, 7))
    assert (fast_dir / "checkpoints" / "best.safetensors").exists()
    assert (fast_dir / "checkpoints" / "last" / "model.safetensors").exists()
    assert json.loads((fast_dir / "config.json").read_text())["epochs"] == 6


def test_head_only_loop_restores_the_best_epoch_and_keeps_the_encoder(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(3)
    model, result, run = _probe(tmp_path, "head", True)
    torch.manual_seed(3)
    untouched = ClassificationModel(Encoder(torch.nn.Linear(4, 16), 16), 3)
    best = load_file(str(run / "checkpoints" / "best.safetensors"))
    assert result.best_epoch is not None
    torch.testing.assert_close(best["head.weight"], model.head.weight)  # the model ends on its best epoch
    assert result.history[result.best_epoch - 1]["accuracy"] == result.best_metric
    torch.testing.assert_close(best["encoder.module.weight"], untouched.encoder.module.weight)  # frozen: never moved


# -- the image decode cache ---------------------------------------------------------------------
def _photos(root, n=12, size=(40, 30)):
    """JPEG files of varied sizes in two class folders (bright/dark)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        label = "bright" if i % 2 == 0 else "dark"
        (root / label).mkdir(parents=True, exist_ok=True)
        w, h = size[0] + 3 * i, size[1] + 2 * i
        arr = np.clip(rng.normal(190 if label == "bright" else 60, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / label / f"{i:02d}.jpg", quality=90)
    return root


def test_decode_cache_returns_the_direct_decoding_and_the_processors_pixels(tmp_path, vit_dir):
    from transformers import ViTImageProcessor

    from transferkit.common.decode_cache import DecodeCache
    from transferkit.vision import ImageSet
    from transferkit.vision.classifier import _pixel_collate
    from transferkit.vision.data import decode_resized, decoded_pixels

    images = ImageSet.from_folder(_photos(tmp_path / "photos"))
    cache = DecodeCache(tmp_path / "cache")
    arr = decoded_pixels(images, (16, 16), 2, cache)
    assert arr.shape == (12, 3, 16, 16) and arr.dtype.name == "uint8" and cache.decoded == 12
    for i, item in enumerate(images.items):
        assert (arr[i] == decode_resized(item, (16, 16))).all()
    again = DecodeCache(tmp_path / "cache")
    assert (decoded_pixels(images, (16, 16), 2, again) == arr).all() and again.decoded == 0  # read back, not decoded
    # Normalised, the cached pixels are what the encoder's processor makes of the file.
    processor = ViTImageProcessor.from_pretrained(vit_dir)
    batch = _pixel_collate(processor.image_mean, processor.image_std)(
        {"pixels": torch.from_numpy(arr[:4].copy()), "labels": torch.zeros(4)})
    want = processor(images=[images[i][0] for i in range(4)], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"], want, atol=1e-5, rtol=0)


def test_second_fit_reads_the_decoded_images_back(tmp_path, vit_dir, monkeypatch):
    import transferkit.vision.data as vision_data
    from transferkit.vision import ImageClassifier

    folder = _photos(tmp_path / "photos")
    calls = []
    for name in ("decode_resized", "decode_shorter"):
        real = getattr(vision_data, name)
        monkeypatch.setattr(vision_data, name, lambda *a, real=real, **k: calls.append(a[0]) or real(*a, **k))
    counts = []
    for run in range(2):
        calls.clear()
        clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy="finetune")
        clf.fit(folder, eval=folder, epochs=1, batch_size=4, progress=False, plot=False, save_checkpoints=False,
                output_dir=str(tmp_path / f"run{run}"), decode_cache=str(tmp_path / "cache"))
        counts.append(len(calls))
    # First fit: the 12 photos with their aspect ratios for training crops, once more at the input for evaluation
    # (and the probe), and the one check against the processor; the second fit decodes only that check image.
    assert counts == [25, 1]


def test_crops_from_stored_images_are_torchvisions_crops_of_the_image():
    from torchvision.transforms import v2

    from transferkit.vision.transforms import resized_crops

    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    per_image = v2.Compose([v2.RandomResizedCrop((16, 16), scale=(0.25, 1.0), antialias=True), v2.RandomHorizontalFlip()])
    torch.manual_seed(3)
    want = torch.stack([per_image(img) for _ in range(6)]).float()
    torch.manual_seed(3)
    got = resized_crops(img.repeat(6, 1, 1, 1), (16, 16), scale=(0.25, 1.0))
    assert torch.equal(got, want)
    assert len({tuple(g.flatten()[:8].tolist()) for g in got}) == 6  # six different crops


def test_the_cached_path_trains_the_weights_the_per_image_path_trains(tmp_path, vit_dir):
    """Images kept at their own size (the cache keeps a shorter side up to 256 px for crops) crop, flip and
    normalise to the per-file transforms' pixels, batch by batch: the same run, the same weights."""
    import numpy as np

    from transferkit.vision import ImageClassifier
    from transferkit.vision.classifier import _store_side
    from transferkit.vision.transforms import AugmentConfig

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24 + 2 * i, 40 - i, 3), dtype=np.uint8) for i in range(12)]  # own aspect ratios
    labels = ["bright", "dark"] * 6
    assert _store_side((16, 16), AugmentConfig()) == 256 and _store_side((160, 160), AugmentConfig()) == 320
    assert _store_side((16, 16), AugmentConfig(crop_scale=(1.0, 1.0))) is None
    weights = []
    for cached in (True, False):
        clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy="finetune")
        clf.fit((images, labels), epochs=2, batch_size=4, progress=False, plot=False, save_checkpoints=False,
                output_dir=str(tmp_path / f"run-{cached}"), decode_cache=cached, lr=1e-3)
        assert ("decode_cache" in clf.train_info) == cached
        weights.append({k: v.clone() for k, v in clf.model.state_dict().items()})
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], atol=1e-4, rtol=1e-4)


# -- the audio decode cache ---------------------------------------------------------------------
def test_audio_clips_are_decoded_once_and_read_back_identical(tmp_path, monkeypatch):
    import numpy as np
    import soundfile as sf

    import transferkit.audio.decode as audio_decode  # where the folder readers' decode_any calls load_audio
    from transferkit.audio import AudioDataset

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], 0.3 * rng.standard_normal(800 + 100 * i).astype(np.float32), 8000)
    (tmp_path / "broken.wav").write_bytes(b"not a wav")
    paths.insert(2, tmp_path / "broken.wav")
    labels = [f"c{i}" for i in range(6)]
    calls = []
    real = audio_decode.load_audio
    monkeypatch.setattr(audio_decode, "load_audio", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    direct = AudioDataset.from_files(paths, labels, target_rate=16000, cache=False)
    n_direct = len(calls)
    first = AudioDataset.from_files(paths, labels, target_rate=16000, cache=str(tmp_path / "cache"))
    second = AudioDataset.from_files(paths, labels, target_rate=16000, cache=str(tmp_path / "cache"))
    assert n_direct == 6 and len(calls) == 12  # the first cached call decodes all six, the second none
    for ds in (first, second):
        assert ds.targets == direct.targets == ["c0", "c1", "c3", "c4", "c5"]  # the broken file is skipped
        assert ds.sources == direct.sources and ds.report.n_skipped == 1
        for a, b in zip(ds.waveforms, direct.waveforms):
            assert a.dtype == np.float32 and np.array_equal(a, b)
    assert second.fingerprint() == direct.fingerprint()  # the feature cache sees the same clips


def test_checking_the_same_files_again_reads_the_verdicts_back(tmp_path, monkeypatch):
    import transferkit.vision.data as vision_data
    from transferkit.vision import ImageSet

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    folder = _photos(tmp_path / "photos", n=6)
    (folder / "dark" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    calls = []
    real = vision_data.load_image
    monkeypatch.setattr(vision_data, "load_image", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    first = ImageSet.from_folder(folder)
    n_first = len(calls)
    second = ImageSet.from_folder(folder)
    assert n_first == 7 and len(calls) == 7  # the second scan decodes nothing
    assert first.items == second.items and len(second) == 6
    assert first.skipped["undecodable"] == second.skipped["undecodable"] == 1
