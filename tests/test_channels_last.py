"""TrainConfig(channels_last=True): the same training as the plain memory format, checkpoints included."""

from __future__ import annotations

import json

import torch
from conftest import two_class_images, write_folder
from test_prefix_cache import TinyCNN

from transferkit.common import load_encoder
from transferkit.common.trainer import Callback
from transferkit.vision import AugmentConfig, ImageClassifier
from transferkit.vision.encoders import image_processor


def test_channels_last_gives_the_plain_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "decoded"))
    folder = write_folder(tmp_path / "imgs", *two_class_images(n=16))
    torch.manual_seed(0)
    module = TinyCNN()
    runs, seen = {}, []

    class Watch(Callback):  # the weights' memory format during training
        def on_batch_end(self, trainer, loss):
            seen.append(trainer.model.encoder.module.stem.weight.is_contiguous(memory_format=torch.channels_last))

    for flag in (False, True):
        enc = load_encoder(TinyCNN(), feature_dim=16, processor=image_processor(16))
        enc.module.load_state_dict(module.state_dict())
        clf = ImageClassifier(enc, labels=["bright", "dark"], strategy="finetune")
        clf.fit(str(folder), eval=str(folder), epochs=2, batch_size=8, lr=1e-3, head_lr=1e-3, seed=0, progress=False,
                mixed_precision="no", plot=False, channels_last=flag, callbacks=[Watch()], output_dir=str(tmp_path / f"run-{flag}"),
                augment=AugmentConfig(crop_scale=(1.0, 1.0), hflip=False))
        runs[flag] = clf
    assert seen == [False] * 4 + [True] * 4  # 2 epochs of 2 batches each way
    conv = runs[True].encoder.module.stem.weight
    assert conv.is_contiguous()  # the plain format again once fit returns
    want, got = runs[False].model.state_dict(), runs[True].model.state_dict()
    worst = max((got[n] - want[n]).abs().max().item() for n in want)
    assert worst < 1e-5, worst
    # Checkpoints and the export write channels-last weights as ordinary tensors.
    assert (tmp_path / "run-True" / "checkpoints" / "best.safetensors").exists()
    runs[True].save(tmp_path / "export")
    back = ImageClassifier.load(tmp_path / "export", encoder=TinyCNN())
    assert torch.equal(back.encoder.module.stem.weight, conv)


def test_channels_last_default_is_on_for_cnns_only(vit_dir):
    from transferkit.common.memory_format import use_channels_last

    cnn = ImageClassifier(load_encoder(TinyCNN(), feature_dim=16, processor=image_processor(16)), labels=["a", "b"])
    vit = ImageClassifier.from_pretrained(str(vit_dir), labels=["a", "b"])
    assert use_channels_last(cnn.model, None) and not use_channels_last(vit.model, None)
    assert not use_channels_last(cnn.model, False) and use_channels_last(vit.model, True)


def test_features_and_predictions_run_channels_last_and_match_the_plain_path(tmp_path, monkeypatch):
    """Feature extraction and predict run a CNN channels-last (seen from inside its forward), give the plain
    path's numbers, and hand the weights back in the plain format; inside fit's own conversion they leave it be."""
    from transferkit.common.features import FeatureCache
    from transferkit.common.memory_format import channels_last

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "decoded"))
    folder = write_folder(tmp_path / "imgs", *two_class_images(n=8))
    torch.manual_seed(0)
    clf = ImageClassifier(load_encoder(TinyCNN(), feature_dim=16, processor=image_processor(16)), labels=["bright", "dark"])
    stem = clf.encoder.module.stem
    seen = []
    stem.register_forward_hook(lambda m, i, o: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last)
                                                           and not m.weight.is_contiguous()))
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    batch = clf.prepare_inputs(paths)

    with torch.no_grad():
        plain_logits = clf.model(**batch)
        plain_feats = clf.encoder(**batch)
    assert seen == [False, False]
    seen.clear()
    logits = clf.logits(paths, batch_size=4, workers=0)
    assert seen == [True, True] and stem.weight.is_contiguous()
    assert torch.allclose(logits, plain_logits, atol=1e-5), (logits - plain_logits).abs().max()
    seen.clear()
    clf.logits(paths[:1], workers=0)  # one photo: the conversion would cost more than it saves
    assert seen == [False]

    seen.clear()
    data = [{"pixel_values": batch["pixel_values"][i], "labels": torch.tensor(i % 2)} for i in range(len(paths))]
    collate = lambda rows: {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),  # noqa: E731
                            "labels": torch.stack([r["labels"] for r in rows])}
    feats, _ = FeatureCache(tmp_path / "feats").get_or_compute(clf.encoder, data, collate_fn=collate, batch_size=4,
                                                               key_parts=("t",), progress=False)
    assert seen and all(seen) and stem.weight.is_contiguous()
    assert torch.allclose(feats, plain_feats, atol=1e-5)

    # Nested inside a block that already converted the weights (fit's training steps): left channels-last.
    with channels_last(clf.model) as outer:
        with channels_last(clf.model) as inner:
            pass
        assert outer and inner and not stem.weight.is_contiguous()
    assert stem.weight.is_contiguous()
    with channels_last(clf.model, False) as on:  # off when asked
        assert not on and stem.weight.is_contiguous()


def test_photo_sized_cnns_evaluate_in_small_batches_on_a_cpu(vit_dir, monkeypatch, tmp_path):
    """eval_batch_size unset: a CNN at 128 px or more evaluates and extracts features in pairs on a CPU; a
    CIFAR-sized input, a ViT, an accelerator or an explicit setting keep their batch."""
    from transferkit.vision.classifier import CPU_PREDICT_BATCH

    big = ImageClassifier(load_encoder(TinyCNN(), feature_dim=16, processor=image_processor(160)), labels=["bright", "dark"])
    small = ImageClassifier(load_encoder(TinyCNN(), feature_dim=16, processor=image_processor(32)), labels=["a", "b"])
    vit = ImageClassifier.from_pretrained(str(vit_dir), labels=["a", "b"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert big.inference_batch_size() == CPU_PREDICT_BATCH == 2
    assert small.inference_batch_size() is None and vit.inference_batch_size() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert big.inference_batch_size() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # fit applies it: features and validation passes run in pairs, and the run's config says so
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "decoded"))
    folder = write_folder(tmp_path / "imgs", *two_class_images(n=8))
    sizes = []
    big.encoder.module.stem.register_forward_hook(lambda m, i, o: sizes.append(len(o)))
    big.fit(str(folder), eval=str(folder), strategy="linear_probe", epochs=1, batch_size=8, seed=0, progress=False,
            plot=False, output_dir=str(tmp_path / "run"))
    assert sizes and max(sizes) == CPU_PREDICT_BATCH
    assert json.loads((tmp_path / "run" / "config.json").read_text())["eval_batch_size"] == CPU_PREDICT_BATCH


def test_a_failed_fit_hands_the_weights_back_in_the_plain_format(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "decoded"))
    folder = write_folder(tmp_path / "imgs", *two_class_images(n=8))
    clf = ImageClassifier(load_encoder(TinyCNN(), feature_dim=16, processor=image_processor(16)), labels=["bright", "dark"],
                          strategy="finetune")
    seen = []

    class Boom(Callback):
        def on_batch_end(self, trainer, loss):
            seen.append(trainer.model.encoder.module.stem.weight.is_contiguous())
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        clf.fit(str(folder), epochs=1, batch_size=4, progress=False, plot=False, channels_last=True,
                callbacks=[Boom()], output_dir=str(tmp_path / "run"))
    assert seen == [False]  # channels-last while it trained
    assert clf.encoder.module.stem.weight.is_contiguous()
