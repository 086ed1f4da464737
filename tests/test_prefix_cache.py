"""The frozen-prefix cache (``partial`` without random augmentation): same weights as the uncached path,
recomputed when the frozen blocks, the data or the preprocessing change, never used with augmentation."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import two_class_images, write_folder
from torch import nn

from transferkit.common import TrainConfig, get_strategy, load_encoder
from transferkit.common.prefix_cache import prefix_stage
from transferkit.vision import AugmentConfig, ImageClassifier
from transferkit.vision.encoders import image_processor

PLAIN = AugmentConfig(crop_scale=(1.0, 1.0), hflip=False)


class TinyCNN(nn.Module):
    """A stem convolution, four residual-free conv layers, a 1x1 top: no BatchNorm or dropout, so the
    frozen blocks compute the same in training and inference mode."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layers = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Tanh()) for _ in range(4)])
        self.top = nn.Conv2d(8, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.layers(torch.tanh(self.stem(x))))


def classifier(module: nn.Module, prefix_cache: bool) -> ImageClassifier:
    enc = load_encoder(copy.deepcopy(module), feature_dim=16, processor=image_processor(16))
    strategy = get_strategy("partial", top_k_blocks=2, prefix_cache=prefix_cache)
    return ImageClassifier(enc, labels=["bright", "dark"], strategy=strategy)


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "decoded"))  # the decode cache, as fit uses it by default
    return write_folder(tmp_path / "imgs", *two_class_images(n=24))


def fit(clf: ImageClassifier, folder, out, augment=PLAIN) -> None:
    # No eval set: the best-epoch pick could break a tie of accuracies differently on the two paths. fp32: under
    # bf16 autocast (mixed_precision="auto" on a CPU with bf16) the cache computes the frozen blocks in fp32.
    clf.fit(str(folder), epochs=3, batch_size=8, lr=1e-2, head_lr=1e-2, seed=0, progress=False, mixed_precision="no",
            save_checkpoints=False, plot=False, output_dir=str(out), augment=augment)


def test_cached_prefix_gives_the_uncached_weights(folder, tmp_path):
    torch.manual_seed(0)
    module = TinyCNN()
    cached, plain = classifier(module, True), classifier(module, False)
    fit(cached, folder, tmp_path / "cached")
    fit(plain, folder, tmp_path / "plain")
    assert len(list((tmp_path / "cached" / "prefix").glob("*.safetensors"))) == 1  # the training photos' outputs
    assert not (tmp_path / "plain" / "prefix").exists()
    want, got = plain.model.state_dict(), cached.model.state_dict()
    assert set(want) == set(got)
    worst = max((got[n] - want[n]).abs().max().item() for n in want)
    assert worst < 1e-6, worst
    hist = [(a["train_loss"], b["train_loss"]) for a, b in zip(cached.results["partial"].history, plain.results["partial"].history)]
    assert len(hist) == 3 and all(abs(a - b) < 1e-6 for a, b in hist), hist
    # The frozen stem and lower layers did not move; the top ones did.
    start = module.state_dict()
    assert torch.equal(got["encoder.module.stem.weight"], start["stem.weight"])
    assert torch.equal(got["encoder.module.layers.1.0.weight"], start["layers.1.0.weight"])
    assert not torch.equal(got["encoder.module.layers.3.0.weight"], start["layers.3.0.weight"])
    # After the stage the encoder computes from pixels again (no replay left attached).
    x = torch.rand(2, 3, 16, 16)
    assert cached.encoder(pixel_values=x).shape == (2, 16)


def _prefix_files(clf, folder, out, *, preprocess: str | None = None, augment=PLAIN):
    cfg = TrainConfig(output_dir=str(out), batch_size=8, progress=False)
    data = clf.training_data(str(folder), str(folder), cfg, augment=augment)
    if preprocess is not None:
        data = dataclasses.replace(data, fingerprints={**data.fingerprints, "preprocess": preprocess})
    stage = clf.strategy
    stage.param_groups(clf.encoder, clf.head, cfg)
    found = prefix_stage(clf.encoder, stage, data, cfg, out)
    if found is None:
        return None
    stage_data, prefix = found
    prefix.detach()
    assert prefix.split == 2 and len(stage_data.train) == len(data.probe_train)
    return sorted(p.name for p in (out / "prefix").glob("*.safetensors"))


def test_cache_is_reused_and_invalidated(folder, tmp_path):
    torch.manual_seed(0)
    clf, out = classifier(TinyCNN(), True), tmp_path / "run"
    first = _prefix_files(clf, folder, out)
    assert len(first) == 1  # train and eval are the same photos here: the same key, one file
    assert _prefix_files(clf, folder, out) == first  # unchanged: reused, nothing new
    # The preprocessing changes: new entries.
    after_prep = _prefix_files(clf, folder, out, preprocess="another resize")
    assert len(after_prep) == 2
    # The data changes (one photo fewer): new entries.
    next(iter((folder / "dark").glob("*.png"))).unlink()
    assert len(_prefix_files(clf, folder, out)) == 3
    # A frozen weight changes: new entries.
    with torch.no_grad():
        clf.encoder.module.stem.weight.add_(0.1)
    assert len(_prefix_files(clf, folder, out)) == 4


def test_not_used_with_random_augmentation_or_without_a_frozen_prefix(folder, tmp_path):
    torch.manual_seed(0)
    clf = classifier(TinyCNN(), True)
    assert _prefix_files(clf, folder, tmp_path / "aug", augment=AugmentConfig()) is None
    everything = ImageClassifier(load_encoder(TinyCNN(), feature_dim=16, processor=image_processor(16)),
                                 labels=["bright", "dark"], strategy=get_strategy("partial", top_k_blocks=4))
    everything.strategy = get_strategy("partial", top_k_blocks=4, prefix_cache=True)
    assert _prefix_files(everything, folder, tmp_path / "all") is None  # every layer learns: nothing to cache
