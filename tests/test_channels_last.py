"""TrainConfig(channels_last=True): the same training as the plain memory format, checkpoints included."""

from __future__ import annotations

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
    from transferkit.common.trainer import use_channels_last

    cnn = ImageClassifier(load_encoder(TinyCNN(), feature_dim=16, processor=image_processor(16)), labels=["a", "b"])
    vit = ImageClassifier.from_pretrained(str(vit_dir), labels=["a", "b"])
    assert use_channels_last(cnn.model, None) and not use_channels_last(vit.model, None)
    assert not use_channels_last(cnn.model, False) and use_channels_last(vit.model, True)
