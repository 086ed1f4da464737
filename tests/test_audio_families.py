"""The Hugging Face audio families users reach for first, beyond wav2vec2: AST and Whisper's encoder.

Both read log-mel spectrograms that their feature extractor computes (AST: ``input_values`` of
``max_length`` frames; Whisper: ``input_features`` of exactly ``2 * max_source_positions`` frames,
3000 for the real 30 s window). Tiny random models are saved like Hub checkpoints (Whisper as
``WhisperForConditionalGeneration``, as ``openai/whisper-*`` are) and loaded through the real
``AudioClassifier.from_pretrained`` path.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from test_audio_models import SR, cfg, tones
from torch import nn

from transferkit.audio import AudioClassifier
from transferkit.common import list_strategies, load_encoder
from transferkit.common.encoders import take_head
from transferkit.common.strategies import lora_targets

FAMILIES = ("ast", "whisper")


def tiny_ast(path: Path) -> Path:
    """16 mel bins x 64 frames; 16x16 patches every 10 frames: 5 patches + 2 summary tokens."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_mel_bins=16, max_length=64, patch_size=16, frequency_stride=10, time_stride=10,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ASTForAudioClassification(config).save_pretrained(path)  # with a 2-label head the classifier drops
    ASTFeatureExtractor(num_mel_bins=16, max_length=64, sampling_rate=SR).save_pretrained(path)
    return path


def tiny_whisper(path: Path) -> Path:
    """A 1 s window: 16 000 samples / hop 160 = 100 mel frames = 2 x max_source_positions (the encoder's
    second convolution has stride 2), the small version of 30 s = 3000 frames = 2 x 1500."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                           max_source_positions=50, max_target_positions=16, vocab_size=64, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=3, classifier_proj_size=16)
    WhisperForConditionalGeneration(config).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=16, sampling_rate=SR, hop_length=160, chunk_length=1).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    return {"ast": tiny_ast(tmp_path_factory.mktemp("ast")), "whisper": tiny_whisper(tmp_path_factory.mktemp("whisper"))}


def trained(folder: Path, tmp_path: Path, strategy: str = "finetune", **kw) -> AudioClassifier:
    clf = AudioClassifier.from_pretrained(folder, labels=["lo", "hi"], strategy=strategy, **kw)
    clf.fit(tones(8), **cfg(tmp_path, lr=1e-3, head_lr=5e-2, **{"lp_ft": {"probe_epochs": 1}, "partial": {"top_k_blocks": 1}}.get(strategy, {})))
    return clf


# ---------------------------------------------------------------------------- finding the head
class _MLPHead(nn.Module):  # AST's ASTMLPHead
    def __init__(self) -> None:
        super().__init__()
        self.layernorm, self.dense = nn.LayerNorm(8), nn.Linear(8, 3)


class _TimmHead(nn.Module):  # timm's ClassifierHead: the Linear is followed by a Flatten
    def __init__(self) -> None:
        super().__init__()
        self.drop, self.fc, self.flatten = nn.Dropout(), nn.Linear(8, 3), nn.Flatten()


@pytest.mark.parametrize("name, head, path", [
    ("classifier", lambda: nn.Linear(8, 3), "classifier"),  # ViT, ConvNeXt, wav2vec2 (after its projector)
    ("classifier", lambda: nn.Sequential(nn.Dropout(), nn.Linear(8, 3)), "classifier.1"),  # torchvision
    ("classifier", _MLPHead, "classifier.dense"),  # AST
    ("head", _TimmHead, "head.fc"),
    ("fc", lambda: nn.Linear(8, 3), "fc"),  # torchvision ResNet
    ("heads", lambda: nn.Sequential(OrderedDict(head=nn.Linear(8, 3))), "heads.head"),  # torchvision ViT
])
def test_take_head_finds_the_final_linear_and_keeps_what_comes_before(name, head, path):
    model = nn.Module()
    model.body = nn.Linear(4, 8)
    setattr(model, name, head())
    kept = [n for n, _ in model.named_parameters() if not n.startswith(path + ".")]
    assert take_head(model) == (path, 8)
    assert isinstance(model.get_submodule(path), nn.Identity)
    assert [n for n, _ in model.named_parameters()] == kept  # e.g. AST's classifier.layernorm stays


def test_take_head_without_a_linear_says_where_it_looked():
    model = nn.Module()
    model.classifier = nn.Sequential(nn.LayerNorm(8), nn.Flatten())
    with pytest.raises(ValueError, match="cannot find the classification layer"):
        take_head(model)


# ---------------------------------------------------------------------------- loading
def test_ast_features_are_the_normed_pooled_output(family_dirs):
    enc = load_encoder(family_dirs["ast"])  # no task=: the audio task claims the config
    hf = enc.hf_model
    assert type(hf).__name__ == "ASTForAudioClassification" and hf.config.transferkit_head == "classifier.dense"
    inputs = enc.processor([tones(2)[0][0]], sampling_rate=SR, return_tensors="pt")
    assert inputs["input_values"].shape == (1, 64, 16)
    with torch.no_grad():
        expected = hf.classifier.layernorm(hf.audio_spectrogram_transformer(**inputs).pooler_output)
        torch.testing.assert_close(enc.eval()(**inputs), expected)
    blocks = AudioClassifier(enc, ["lo", "hi"]).encoder.blocks()
    assert [b.name for b in blocks] == ["stem", "layer0", "layer1", "top"]
    assert set(blocks[-1].params) == {f"{m}.{p}" for m in ("audio_spectrogram_transformer.layernorm",
                                                            "classifier.layernorm") for p in ("weight", "bias")}
    assert lora_targets(enc) == ["q_proj", "v_proj"]  # transformers 5 names them like Whisper does


def test_whisper_encoder_comes_from_the_speech_recognition_checkpoint(family_dirs):
    from safetensors.torch import load_file

    enc = load_encoder(family_dirs["whisper"])
    hf = enc.hf_model
    assert type(hf).__name__ == "WhisperForAudioClassification" and hf.config.transferkit_head == "classifier"
    saved = load_file(str(family_dirs["whisper"] / "model.safetensors"))
    torch.testing.assert_close(hf.encoder.layers[1].fc1.weight, saved["model.encoder.layers.1.fc1.weight"])
    clf = AudioClassifier(enc, ["lo", "hi"])
    batch = clf.prepare_inputs(tones(3)[0])
    assert set(batch) == {"input_features"} and batch["input_features"].shape == (3, 16, 100)
    blocks = clf.encoder.blocks()
    assert [b.name for b in blocks] == ["stem", "layer0", "layer1", "top"]
    assert set(blocks[-1].params) == {"encoder.layer_norm.weight", "encoder.layer_norm.bias", "projector.weight",
                                      "projector.bias"}
    assert "encoder.conv1.weight" in blocks[0].params  # the mel convolutions are ordinary layers
    assert "encoder.embed_positions.weight" not in blocks[0].params  # sinusoids: transformers keeps them fixed
    assert lora_targets(enc) == ["q_proj", "v_proj"]


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluation_under_bf16_autocast_computes_mel_features_in_full_precision(family_dirs, family, tmp_path):
    """Regression: the trainer evaluated under autocast, loader included; on a CPU with native bf16
    AST's Kaldi fbank then ran in bf16 and failed ("Got unsupported ScalarType BFloat16")."""
    clf = AudioClassifier.from_pretrained(family_dirs[family], labels=["lo", "hi"], strategy="finetune")
    waves, labels = tones(4)
    key = "input_values" if family == "ast" else "input_features"
    with torch.no_grad():
        reference = clf.prepare_inputs(waves)[key]  # fp32, no autocast anywhere
    seen = []  # (autocast on?, the features) of every evaluation forward

    def spy(module, args, kwargs):
        if not module.training:
            seen.append((torch.is_autocast_enabled("cpu"), kwargs[key].detach().clone()))

    clf.model.register_forward_pre_hook(spy, with_kwargs=True)
    results = clf.fit((waves, labels), (waves, labels), output_dir=str(tmp_path), epochs=1, batch_size=4,
                      mixed_precision="bf16", progress=False, plot=False, save_checkpoints=False)
    # The evaluation really ran under bf16 autocast, and the mel features it was fed are the fp32 ones.
    assert len(seen) == 1 and seen[0][0], "evaluation did not run under autocast: the test checks nothing"
    features = seen[0][1]
    assert features.dtype == torch.float32 and features.shape == reference.shape
    order = lambda f: f.flatten(1).sum(1).argsort()  # noqa: E731  (the loader may sort clips by length)
    torch.testing.assert_close(features[order(features)], reference[order(reference)], rtol=1e-5, atol=1e-5)
    assert math.isfinite(results["finetune"].final["eval_loss"])


@pytest.mark.parametrize("family", FAMILIES)
def test_clips_shorter_or_longer_than_the_window_are_padded_or_cut(family_dirs, family):
    """Regression: a clip under 25 ms (400 samples) failed inside AST's Kaldi fbank."""
    clf = AudioClassifier.from_pretrained(family_dirs[family], labels=["lo", "hi"])
    clips = [np.zeros(10, dtype=np.float32), np.full(SR * 3, 0.1, dtype=np.float32), tones(1)[0][0]]
    out = clf.predict(clips)
    assert len(out) == 3 and all(np.isfinite(o["score"]) for o in out)


def test_layer_sum_on_ast_is_refused_not_ignored(family_dirs):
    with pytest.raises(ValueError, match="use_weighted_layer_sum"):
        AudioClassifier.from_pretrained(family_dirs["ast"], labels=["lo", "hi"], layer_sum=True)


# ---------------------------------------------------------------------------- training and export
@pytest.mark.parametrize("strategy", list_strategies())
@pytest.mark.parametrize("family", FAMILIES)
def test_every_strategy_trains(family_dirs, tmp_path, family, strategy):
    """Regression: AST failed in from_pretrained ("cannot find the classification layer"), Whisper in fit
    ("expects the mel input features to be of length 3000")."""
    clf = AudioClassifier.from_pretrained(family_dirs[family], labels=["lo", "hi"], strategy=strategy)
    hf = clf.encoder.hf_model
    before = {n: p.detach().clone() for n, p in hf.named_parameters()}
    waves, labels = tones(8)
    results = clf.fit((waves, labels), eval=(waves[:4], labels[:4]),
                      **cfg(tmp_path, lr=1e-3, **{"lp_ft": {"probe_epochs": 1}, "partial": {"top_k_blocks": 1}}.get(strategy, {})))
    assert all(math.isfinite(r.final["train_loss"]) for r in results.values())
    moved = {n for n, p in hf.named_parameters() if n in before and not torch.equal(before[n], p)}
    assert bool(moved) == (strategy not in ("linear_probe", "lora"))  # lora moves only its adapters
    assert not any("embed_positions" in n for n in moved)


@pytest.mark.parametrize("family, layer_sum", [("ast", False), ("whisper", False), ("whisper", True)])
def test_export_gives_the_same_predictions_through_pipeline(family_dirs, tmp_path, family, layer_sum):
    from safetensors.torch import load_file
    from transformers import pipeline

    clf = trained(family_dirs[family], tmp_path, layer_sum=layer_sum)
    waves = tones(8)[0][:3]
    ours = clf.predict(waves)  # one batch: each clip's prediction must not depend on the others
    folder = clf.save(tmp_path / "export")
    head = "classifier.dense" if family == "ast" else "classifier"
    state = load_file(str(folder / "model.safetensors"))
    torch.testing.assert_close(state[f"{head}.weight"], clf.head.weight.detach())
    pipe = pipeline("audio-classification", model=str(folder))
    assert pipe.model.config.id2label == {0: "lo", 1: "hi"}
    for w, mine in zip(waves, ours):
        theirs = pipe(w, top_k=2)
        assert theirs[0]["label"] == mine["label"]
        assert {d["label"]: d["score"] for d in theirs} == pytest.approx(mine["scores"], abs=1e-4)
    again = AudioClassifier.load(folder)
    assert again.encoder.hf_model.config.transferkit_head == head
    assert [o["scores"] for o in again.predict(waves)] == [pytest.approx(o["scores"], abs=1e-5) for o in ours]


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_merged_export_predicts_like_the_adapter_model(family_dirs, tmp_path, family):
    from transformers import pipeline

    clf = trained(family_dirs[family], tmp_path, strategy="lora")
    waves = tones(8)[0][:3]
    with_adapters = clf.predict(waves)
    folder = clf.save(tmp_path / "export")
    pipe = pipeline("audio-classification", model=str(folder))
    for w, mine in zip(waves, with_adapters):
        assert {d["label"]: d["score"] for d in pipe(w, top_k=2)} == pytest.approx(mine["scores"], abs=1e-4)
