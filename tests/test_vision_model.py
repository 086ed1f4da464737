"""ImageClassifier end to end: training, export through transformers.pipeline, LoRA merge, CLI, Hub."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_folder
from PIL import Image

from transferkit.common import HubUnavailableError
from transferkit.common.cli import main
from transferkit.vision import ImageClassifier


def _fit(vit_dir, images, tmp_path, strategy, **kw):
    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy=strategy)
    own = {"probe_epochs": 3} if strategy == "lp_ft" else {}  # a setting of another strategy is an error
    opts = {"epochs": 3, "batch_size": 8, "lr": 1e-3, "head_lr": 1e-2, "progress": False} | own | kw
    clf.fit(images, eval=images, output_dir=str(tmp_path / strategy), **opts)
    return clf


def test_export_loads_in_pipeline_with_the_same_predictions(vit_dir, images, tmp_path):
    from transformers import pipeline

    clf = _fit(vit_dir, images, tmp_path, "finetune")
    folder = clf.save(tmp_path / "export", metrics={"accuracy": 1.0})
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "bright", "1": "dark"}
    pipe = pipeline("image-classification", model=str(folder))
    for img in images[0][:6]:
        ours = clf.predict(img)[0]
        theirs = {d["label"]: d["score"] for d in pipe(Image.fromarray(img), top_k=2)}
        assert max(theirs, key=theirs.get) == ours["label"]
        assert theirs[ours["label"]] == pytest.approx(ours["score"], abs=1e-3)
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card and "finetune" in card and "accuracy" in card


def test_lora_merged_export_predicts_like_the_adapter_model(vit_dir, images, tmp_path):
    clf = _fit(vit_dir, images, tmp_path, "lora", lora_r=4)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in clf.encoder.named_parameters())
    before = torch.stack([torch.tensor(list(p["scores"].values())) for p in clf.predict(np.stack(images[0]))])
    folder = clf.save(tmp_path / "export")
    assert not any("lora" in n for n, _ in clf.encoder.named_parameters())  # merged and removed
    loaded = ImageClassifier.load(folder)
    after = torch.stack([torch.tensor(list(p["scores"].values())) for p in loaded.predict(np.stack(images[0]))])
    assert torch.allclose(before, after, atol=1e-5)


def test_linear_probe_learns_a_separable_task(vit_dir, images, tmp_path):
    clf = _fit(vit_dir, images, tmp_path, "linear_probe", epochs=30)
    assert clf.evaluate(images)["accuracy"] == 1.0


def test_torchvision_and_module_encoders(tmp_path, images):
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.resnet18(num_classes=7)
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, tmp_path / "r18.pth")
    clf = ImageClassifier.from_pretrained("torchvision:resnet18", labels=["bright", "dark"], weights=tmp_path / "r18.pth")
    assert clf.encoder.feature_dim == 512
    assert torch.equal(clf.encoder.module.conv1.weight, net.conv1.weight)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    clf2 = ImageClassifier.from_pretrained(body, labels=["bright", "dark"], feature_dim=8)
    clf2.fit(images, output_dir=str(tmp_path / "mod"), epochs=1, batch_size=8, progress=False)
    folder = clf2.save(tmp_path / "mod-export")
    again = ImageClassifier.load(folder, encoder=torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()))
    x = images[0][0]
    assert clf2.predict(x)[0]["score"] == pytest.approx(again.predict(x)[0]["score"], abs=1e-6)


def test_missing_model_offline_fails_in_one_sentence():
    from transferkit.common import EncoderNotFoundError, load_encoder

    with pytest.raises(EncoderNotFoundError, match=r"'no-such-org/no-such-vit'.*local-dir DIR"):
        load_encoder("no-such-org/no-such-vit")


def test_push_offline_fails_clearly_and_keeps_the_folder(vit_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["a", "b"])
    folder = clf.save(tmp_path / "export")
    files = sorted(p.name for p in folder.iterdir())
    with pytest.raises(HubUnavailableError, match="export stays in"):
        clf.push_to_hub("someone/model", folder=folder)
    assert sorted(p.name for p in folder.iterdir()) == files


def test_cli_fit_evaluate_predict_export(vit_dir, images, tmp_path, capsys):
    data = write_folder(tmp_path / "data", *images)
    run = tmp_path / "run"
    assert main(["vision", "fit", "--model", str(vit_dir), "--train", str(data), "--eval", str(data),
                 "--output-dir", str(run), "--strategy", "linear_probe", "--epochs", "25", "--head-lr", "0.05",
                 "--no-progress", "--no-hflip"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["accuracy"] == 1.0
    assert (run / "confusion_matrix.png").exists() and (run / "learning_curve.png").exists()
    assert main(["vision", "evaluate", "--model", str(run / "model"), "--data", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0
    one = sorted((data / "dark").iterdir())[0]
    assert main(["vision", "predict", "--model", str(run / "model"), str(one)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["label"] == "dark"
    assert main(["vision", "export", "--run", str(run), "--out", str(tmp_path / "exp2")]) == 0
    capsys.readouterr()
    assert ImageClassifier.load(tmp_path / "exp2").predict(str(one))[0]["label"] == "dark"


@pytest.mark.parametrize("mix", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0}])
def test_mixup_cutmix_mix_each_image_with_its_partner_and_weight_the_labels_alike(mix):
    """Regression: this test passed with plain one-hot labels. Each example is mixed with the one before it
    (the batch rolled by one): its label weights are lam on its own class and 1 - lam on the partner's, and the
    pixels are that blend (MixUp) or, for a fraction 1 - lam of them, the partner's pixels (CutMix)."""
    from transferkit.vision.transforms import AugmentConfig, batch_mixer

    torch.manual_seed(0)
    x, target = torch.rand(8, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    mixer = batch_mixer(AugmentConfig(**mix), num_classes=3)
    for _ in range(5):  # several draws of lam (and of MixUp or CutMix)
        mixed, y = mixer(x.clone(), target)
        partner, partner_target = x.roll(1, 0), target.roll(1, 0)
        lam = y[0, target[0]].item()
        assert y.shape == (8, 3) and 0.0 < lam < 1.0  # a soft target, not one-hot
        expected = torch.zeros(8, 3)
        expected[torch.arange(8), target] += lam
        expected[torch.arange(8), partner_target] += 1 - lam
        torch.testing.assert_close(y, expected)
        blended = lam * x + (1 - lam) * partner
        if torch.allclose(mixed, blended, atol=1e-6):
            assert "mixup" in mix
        else:  # CutMix: every pixel is its own or the partner's, and the partner's cover 1 - lam of the image
            assert "cutmix" in mix
            from_partner = (mixed == partner).all(1) & (mixed != x).any(1)
            assert torch.equal(mixed, torch.where(from_partner[:, None], partner, x))
            assert from_partner.float().mean().item() == pytest.approx(1 - lam, abs=1e-6)


def test_augment_config_rejects_a_crop_scale_above_one():
    from transferkit.vision.transforms import AugmentConfig

    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.5, 1.5))


def test_training_with_mixup_and_randaugment(vit_dir, images, tmp_path, monkeypatch):
    import transferkit.vision.classifier as classifier_module
    from transferkit.vision.transforms import AugmentConfig, batch_mixer

    seen = []

    def spying_mixer(aug, num_classes):
        mixer = batch_mixer(aug, num_classes)

        def mix(x, y):
            x, y = mixer(x, y)
            seen.append(tuple(y.shape))
            return x, y

        return mix

    monkeypatch.setattr(classifier_module, "batch_mixer", spying_mixer)
    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"])
    res = clf.fit(images, eval=images, augment=AugmentConfig(mixup=0.2, randaugment=True),
                  output_dir=str(tmp_path), epochs=2, batch_size=8, progress=False)
    # 24 images in batches of 8 for 2 epochs: every training batch was mixed into soft targets
    assert seen == [(8, 2)] * 6
    assert all(h["skipped_steps"] == 0 for h in res["finetune"].history)
    run = json.loads((tmp_path / "transferkit-run.json").read_text())
    assert run["augment"]["mixup"] == 0.2 and run["augment"]["randaugment"] is True


def test_cnn_stages_are_flattened_into_residual_blocks():
    from transferkit.common import load_encoder

    pytest.importorskip("torchvision")
    enc = load_encoder("torchvision:resnet18")
    assert [b.name for b in enc.blocks()] == ["stem"] + [f"layer{i}" for i in range(8)]
    assert set(enc.blocks()[0].params) == {"conv1.weight", "bn1.weight", "bn1.bias"}


def test_head_initialisation_depends_on_the_seed_only(vit_dir, images, tmp_path):
    heads = []
    for run, noise in enumerate((0, 1)):
        torch.manual_seed(noise)  # whatever ran before must not matter
        clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy="linear_probe")
        clf.fit(images, output_dir=str(tmp_path / str(run)), epochs=1, batch_size=8, progress=False, seed=3)
        heads.append(clf.model.head.weight.detach().clone())
    assert torch.equal(heads[0], heads[1])


def test_push_uploads_the_exported_folder(vit_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, folder_path, repo_id, commit_message):
            from pathlib import Path

            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["a", "b"])
    url = clf.push_to_hub("me/model", folder=tmp_path / "export", private=True, token="hf_secret")
    assert url == "https://hub/me/model/commit/1"
    assert calls["repo"] == ("me/model", True, True) and calls["token"] == "hf_secret"
    assert {"config.json", "model.safetensors", "README.md", "preprocessor_config.json"} <= set(calls["files"])


def test_a_hub_token_never_reaches_logs_run_folders_or_exports(vit_dir, images, tmp_path, monkeypatch, caplog):
    """The token passed to push_to_hub (or set as HF_TOKEN) is used for the upload and written nowhere:
    not in the log, the run folder, config.json, transferkit.json or the model card, nor in an error."""
    import logging

    import huggingface_hub

    secret = "hf_SeCrEt0123456789abcdef"
    seen = {}

    class FakeApi:
        def __init__(self, token=None):
            seen["token"] = token

        def create_repo(self, repo_id, private=False, exist_ok=False):
            pass

        def upload_folder(self, folder_path, repo_id, commit_message):
            if seen.get("fail"):  # a server error that quotes the request, token included
                raise ValueError(f"403 Forbidden: Authorization: Bearer {secret}")
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    caplog.set_level(logging.DEBUG)
    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy="linear_probe")
    clf.fit(images, output_dir=str(tmp_path / "run"), epochs=1, batch_size=8, progress=False)
    assert clf.push_to_hub("me/model", folder=tmp_path / "export", token=secret).endswith("/commit/1")
    assert seen["token"] == secret  # it was used
    seen["fail"] = True
    with pytest.raises(RuntimeError) as err:
        clf.push_to_hub("me/model", folder=tmp_path / "export2", token=secret)
    assert secret not in str(err.value) and "***" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # the original error is not chained
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "config.json" for p in written) and any(p.name == "README.md" for p in written)
    assert [p for p in written if secret.encode() in p.read_bytes()] == []
    assert secret not in caplog.text
