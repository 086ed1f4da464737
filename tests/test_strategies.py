"""Every strategy moves exactly the parameters it promises, at the rates it promises."""

from __future__ import annotations

import pytest
import torch

from transferkit.common import (
    ClassificationModel,
    TrainConfig,
    Trainer,
    get_strategy,
    list_strategies,
    load_encoder,
)
from transferkit.common.classifier import classification_loss
from transferkit.common.strategies import pop_strategy_settings, register_strategy


def _model(vit_dir):
    torch.manual_seed(0)
    return ClassificationModel(load_encoder(str(vit_dir)), num_labels=3)


def _one_step(model, groups, tmp_path):
    torch.manual_seed(1)
    data = [{"pixel_values": torch.randn(3, 16, 16), "labels": i % 3} for i in range(8)]
    cfg = TrainConfig(output_dir=str(tmp_path), epochs=1, batch_size=8, warmup_ratio=0.0, progress=False,
                      save_checkpoints=False, lr=1e-2, head_lr=1e-2)
    Trainer(model, cfg, compute_loss=classification_loss(), param_groups=groups).fit(data)


def _changed(before: dict, model) -> set[str]:
    after = model.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def _expected(model, strategy: str, top_k_blocks: int) -> set[str]:
    enc_names = {f"encoder.{n}" for n, _ in model.encoder.named_parameters()}
    head = {"head.weight", "head.bias"}
    if strategy == "linear_probe":
        return head
    if strategy in ("finetune", "lp_ft", "llrd"):
        return enc_names | head
    if strategy == "partial":
        blocks = model.encoder.blocks()
        assert [b.name for b in blocks][-1] == "top"
        keep = blocks[-(top_k_blocks + 1):]  # the top norm counts with the last k layers
        return {f"encoder.module.{n}" for b in keep for n in b.params} | head
    if strategy == "lora":
        return {f"encoder.{n}" for n, _ in model.encoder.named_parameters() if "lora_" in n} | head
    raise AssertionError(strategy)


@pytest.mark.parametrize("name", list_strategies())
def test_exactly_the_intended_parameters_change(name, vit_dir, tmp_path):
    model = _model(vit_dir)
    settings = {"partial": {"top_k_blocks": 1}, "lora": {"r": 2}}.get(name, {})
    groups = get_strategy(name, **settings).param_groups(model.encoder, model.head, TrainConfig())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = _expected(model, name, top_k_blocks=1)
    assert expected and expected <= set(before)
    # LoRA's B matrices start at zero, so after one step A is still untouched by design;
    # two parameters per adapted layer must move over two steps.
    _one_step(model, groups, tmp_path)
    if name == "lora":
        _one_step(model, groups, tmp_path / "2")
    changed = _changed(before, model)
    assert changed == expected, f"unexpected: {sorted(changed - expected)[:5]}, unmoved: {sorted(expected - changed)[:5]}"


def test_llrd_rates_decay_layer_by_layer(vit_dir):
    model = _model(vit_dir)
    cfg = TrainConfig(lr=1e-3)
    groups = get_strategy("llrd", decay=0.5).param_groups(model.encoder, model.head, cfg)
    blocks = model.encoder.blocks()
    rates = {}
    for g in groups:
        if g["name"].startswith("encoder."):
            rates[g["name"].split(".")[1]] = g["lr"]
    names = [b.name for b in blocks]
    assert names == ["stem", "layer0", "layer1", "top"]
    expected = [1e-3 * 0.5 ** (len(names) - 1 - i) for i in range(len(names))]
    assert [rates[n] for n in names] == pytest.approx(expected)
    assert all(g["lr"] == cfg.head_lr for g in groups if g["name"].startswith("head"))


def test_lora_trains_under_five_percent(tmp_path):
    from conftest import tiny_vit

    path = tiny_vit(tmp_path / "vit64", hidden=64, layers=4)
    model = ClassificationModel(load_encoder(str(path)), num_labels=10)
    get_strategy("lora", r=4).param_groups(model.encoder, model.head, TrainConfig())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable / total < 0.05


def test_no_weight_decay_on_biases_and_norms(vit_dir):
    model = _model(vit_dir)
    groups = get_strategy("finetune").param_groups(model.encoder, model.head, TrainConfig(weight_decay=0.05))
    for g in groups:
        if g["weight_decay"] > 0:
            assert all(p.ndim > 1 for p in g["params"])
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, p in model.named_parameters():
        if name.endswith("bias") or "layernorm" in name:
            assert id(p) in no_decay, name


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_strategy(get_strategy("finetune"))
    with pytest.raises(ValueError, match="unknown strategy 'fine_tune'.*finetune"):
        get_strategy("fine_tune")


@pytest.mark.parametrize("name", ["finetune", "llrd", "partial"])
def test_pinned_parameters_stay_frozen_under_every_strategy(name, vit_dir, tmp_path):
    model = _model(vit_dir)
    stem = model.encoder.module.vit.embeddings
    model.encoder.pin_frozen(stem)
    groups = get_strategy(name, **({"top_k_blocks": 4} if name == "partial" else {})).param_groups(
        model.encoder, model.head, TrainConfig())
    grouped = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in grouped or p.requires_grad for p in stem.parameters())
    before = {k: v.clone() for k, v in stem.state_dict().items()}
    _one_step(model, groups, tmp_path)
    assert all(torch.equal(v, stem.state_dict()[k]) for k, v in before.items())


def test_strategy_settings_are_validated_by_their_own_config():
    with pytest.raises(ValueError, match="r must be >= 1"):
        get_strategy("lora", r=0)
    with pytest.raises(ValueError, match="decay must be <= 1"):
        get_strategy("llrd", decay=1.5)
    with pytest.raises(TypeError):
        get_strategy("partial", rank=3)  # no such setting


def test_fit_keywords_reach_the_strategy_by_prefix_or_bare_name():
    lpft = get_strategy("lp_ft")
    options = {"probe_epochs": 7, "lp_ft_feature_cache": "/tmp/x", "epochs": 3}
    assert pop_strategy_settings(lpft, options) == {"probe_epochs": 7, "feature_cache": "/tmp/x"}
    assert options == {"epochs": 3}  # loop settings stay for TrainConfig
    # a setting of another strategy would have no effect: it is an error that names the strategy it belongs to
    with pytest.raises(ValueError, match="lora_r=4 is a setting of strategy 'lora', not of 'lp_ft'"):
        pop_strategy_settings(lpft, {"lora_r": 4})
    lora = get_strategy("lora", **pop_strategy_settings(get_strategy("lora"), {"lora_r": 4, "lora_alpha": 8}))
    assert (lora.config.r, lora.config.alpha) == (4, 8)


def test_lp_ft_probe_stage_runs_its_own_epochs():
    probe, finetune = get_strategy("lp_ft", probe_epochs=7).stages()
    assert probe.name == "linear_probe" and finetune.name == "finetune"
    assert probe.stage_config(TrainConfig(epochs=2)).epochs == 7
    assert finetune.stage_config(TrainConfig(epochs=2)).epochs == 2


def test_legacy_trainconfig_strategy_fields_still_work(vit_dir, images, tmp_path):
    from transferkit.vision import ImageClassifier

    with pytest.warns(DeprecationWarning):
        cfg = TrainConfig(output_dir=str(tmp_path), epochs=1, batch_size=8, progress=False, plot=False,
                          save_checkpoints=False, lora_r=2, strategy="lora")
    assert cfg.replace(epochs=1).legacy["lora_r"] == 2
    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy="lora")
    clf.fit(images, config=cfg)
    assert clf.strategy.config.r == 2
    adapters = [m for m in clf.encoder.modules() if hasattr(m, "lora_A")]
    assert adapters and all(m.lora_A["default"].weight.shape[0] == 2 for m in adapters)
