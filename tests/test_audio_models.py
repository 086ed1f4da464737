"""AudioClassifier, SpeechRecognizer and continued pretraining on tiny random wav2vec2 models (offline)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.audio import AudioClassifier, AudioDataset, SpeechRecognizer, pretrain
from transferkit.audio.encoder import AudioCollator
from transferkit.common import TrainConfig, Trainer, list_strategies

SR = 16_000


def tiny_wav2vec2(path: Path, seed: int = 0) -> Path:
    """A random 2-layer, 32-wide wav2vec2 (with quantiser) and its feature extractor, saved like a Hub model."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_kernel=(10, 4, 4), conv_stride=(5, 4, 4), conv_bias=True,
        feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, classifier_proj_size=16, codevector_dim=16, proj_codevector_dim=16,
        num_codevectors_per_group=8, num_codevector_groups=2, num_negatives=8,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0,
    )
    Wav2Vec2ForPreTraining(cfg).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True, return_attention_mask=True).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def w2v_dir(tmp_path_factory) -> Path:
    return tiny_wav2vec2(tmp_path_factory.mktemp("w2v"))


def tones(n: int = 12, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Low tones are 'lo', high tones 'hi'; lengths vary so batches need padding."""
    rng = np.random.default_rng(seed)
    waves, labels = [], []
    for i in range(n):
        f = 300.0 if i % 2 else 2000.0
        t = np.arange(1600 + 160 * i) / SR
        waves.append((0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32))
        labels.append("lo" if i % 2 else "hi")
    return waves, labels


# Each strategy's own small settings (a setting of another strategy is an error).
OWN_SETTINGS = {"lp_ft": {"probe_epochs": 1}, "partial": {"top_k_blocks": 1}}


def cfg(tmp_path, **kw) -> dict:
    return {"output_dir": str(tmp_path / "run"), "batch_size": 4, "epochs": 1, "progress": False,
            "save_checkpoints": False, **kw}


# ---------------------------------------------------------------------------- classification
def test_pooling_ignores_padding(w2v_dir):
    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"])
    enc = clf.encoder.eval()
    waves, _ = tones(6)
    collate = AudioCollator(enc.processor, SR)
    with torch.no_grad():
        alone = enc(**collate([{"input_values": waves[0]}]))[0]
        padded = enc(**collate([{"input_values": waves[0]}, {"input_values": waves[5]}]))[0]
    assert collate([{"input_values": waves[0]}, {"input_values": waves[5]}])["input_values"].shape[1] > len(waves[0])
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)


def test_feature_encoder_frozen_by_default_and_everything_else_learns(w2v_dir, tmp_path):
    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"], strategy="finetune")
    hf = clf.encoder.hf_model
    before = {n: p.detach().clone() for n, p in hf.named_parameters()}
    clf.fit(tones(8), **cfg(tmp_path, lr=1e-3))
    moved = {n for n, p in hf.named_parameters() if not torch.equal(before[n], p)}
    assert not any(n.startswith("wav2vec2.feature_extractor") for n in moved)
    assert any(n.startswith("wav2vec2.encoder.layers.1") for n in moved)
    unfrozen = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"], freeze_feature_encoder=False)
    assert any("feature_extractor" in n for n, _ in unfrozen.encoder.named_parameters())


@pytest.mark.parametrize("strategy", list_strategies())
def test_every_strategy_trains_and_evaluates(w2v_dir, tmp_path, strategy):
    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"], strategy=strategy)
    waves, labels = tones(8)
    results = clf.fit((waves, labels), eval=(waves[:4], labels[:4]),
                      **cfg(tmp_path, lr=1e-3, **OWN_SETTINGS.get(strategy, {})))
    assert all(math.isfinite(r.final["train_loss"]) for r in results.values())
    out = clf.evaluate((waves, labels), out_dir=tmp_path)
    assert out["examples"] == 8 and 0.0 <= out["accuracy"] <= 1.0
    assert (tmp_path / "confusion_matrix.png").exists()


def test_linear_probe_learns_tones_from_cached_features(w2v_dir, tmp_path):
    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"], strategy="linear_probe")
    waves, labels = tones(12)
    clf.fit((waves, labels), **cfg(tmp_path, epochs=40, head_lr=0.05, batch_size=12))
    assert clf.evaluate((waves, labels))["accuracy"] == 1.0
    assert list((tmp_path / "run" / "features").glob("*.safetensors"))


@pytest.mark.parametrize("layer_sum", [False, True])
def test_classifier_export_gives_the_same_output_through_pipeline(w2v_dir, tmp_path, layer_sum):
    from transformers import pipeline

    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"], layer_sum=layer_sum)
    waves, labels = tones(8)
    clf.fit((waves, labels), **cfg(tmp_path, lr=1e-3, head_lr=1e-2))
    folder = clf.save(tmp_path / "export")
    pipe = pipeline("audio-classification", model=str(folder))
    for w in waves[:3]:
        ours = clf.predict(w)[0]["scores"]
        theirs = {d["label"]: d["score"] for d in pipe(w, top_k=2)}
        assert theirs == pytest.approx(ours, abs=1e-4)
    again = AudioClassifier.load(folder)
    assert again.predict(waves[0])[0]["scores"] == pytest.approx(clf.predict(waves[0])[0]["scores"], abs=1e-5)
    assert (folder / "README.md").read_text().count("audio-classification") >= 1


def test_time_masks_that_would_hide_short_clips_are_flagged(w2v_dir):
    """Regression: default SpecAugment (2 masks x 10 frames) hid whole 0.4 s words; the demo learned nothing."""
    from transferkit.audio.encoder import warn_if_masks_hide_clips

    masked = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"])
    assert warn_if_masks_hide_clips(masked.encoder.hf_model, [1600] * 4)
    unmasked = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"], mask_time_prob=0.0)
    assert not warn_if_masks_hide_clips(unmasked.encoder.hf_model, [1600] * 4)
    assert not warn_if_masks_hide_clips(masked.encoder.hf_model, [SR * 10])  # 10 s clips: 20 frames is little


def test_unknown_label_at_evaluation_is_named(w2v_dir):
    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"])
    with pytest.raises(ValueError, match=r"\['mid'\]"):
        clf.evaluate(([tones(1)[0][0]], ["mid"]))


def test_clip_shorter_than_the_receptive_field_is_padded_not_a_crash(w2v_dir):
    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"])
    out = clf.predict([np.zeros(10, dtype=np.float32), np.full(30, 0.1, dtype=np.float32)])
    assert len(out) == 2 and all(np.isfinite(o["score"]) for o in out)


# ---------------------------------------------------------------------------- CTC
def spoken(n: int = 8) -> tuple[list[np.ndarray], list[str]]:
    """Two 'words' as tone sequences: 'ab' = low then high, 'ba' = high then low."""
    waves, labels = tones(2 * n)
    out, texts = [], []
    for i in range(n):
        lo, hi = waves[2 * i + 1][:2400], waves[2 * i][:2400]
        out.append(np.concatenate([lo, hi]) if i % 2 else np.concatenate([hi, lo]))
        texts.append("ab" if i % 2 else "b a")
    return out, texts


def test_recognizer_export_transcribes_the_same_through_pipeline(w2v_dir, tmp_path):
    from transformers import pipeline

    waves, texts = spoken()
    asr = SpeechRecognizer.from_pretrained(w2v_dir, transcripts=texts)
    assert asr.tokenizer.get_vocab() == {"a": 0, "b": 1, "|": 2, "[UNK]": 3, "[PAD]": 4}
    asr.fit((waves, texts), eval=(waves, texts), **cfg(tmp_path, lr=1e-3))
    folder = asr.save(tmp_path / "export")
    assert (folder / "vocab.json").exists()
    pipe = pipeline("automatic-speech-recognition", model=str(folder))
    ours = asr.transcribe(waves)
    assert [pipe(w)["text"] for w in waves] == ours
    assert SpeechRecognizer.load(folder).transcribe(waves) == ours
    metrics = asr.evaluate((waves, texts))
    assert set(metrics) >= {"wer", "cer", "exact_match"} and metrics["examples"] == len(waves)


@pytest.mark.parametrize("strategy", ["lp_ft", "lora", "llrd"])
def test_recognizer_strategies_train_only_what_they_should(w2v_dir, tmp_path, strategy):
    waves, texts = spoken(4)
    asr = SpeechRecognizer.from_pretrained(w2v_dir, transcripts=texts, strategy=strategy)
    conv = asr.model.wav2vec2.feature_extractor.conv_layers[0].conv.weight.detach().clone()
    head = asr.model.lm_head.weight.detach().clone()
    results = asr.fit((waves, texts), **cfg(tmp_path, lr=1e-3, **OWN_SETTINGS.get(strategy, {})))
    assert list(results) == (["linear_probe", "finetune"] if strategy == "lp_ft" else [strategy])
    assert torch.equal(conv, asr.model.wav2vec2.feature_extractor.conv_layers[0].conv.weight)
    assert not torch.equal(head, asr.model.lm_head.weight)
    folder = asr.save(tmp_path / "export")  # LoRA adapters are merged: a plain Wav2Vec2ForCTC comes back
    assert SpeechRecognizer.load(folder).transcribe(waves[:1]) == asr.transcribe(waves[:1])


def test_non_finite_ctc_loss_skips_the_step_and_leaves_weights_unchanged(w2v_dir, tmp_path):
    from transferkit.audio.modality import TokenizedClips

    asr = SpeechRecognizer.from_pretrained(w2v_dir, transcripts=["ab"], ctc_zero_infinity=False, mask_time_prob=0.0)
    # 400 samples give 4 frames; 12 labels cannot be aligned to them, so CTC without zero_infinity is inf.
    clips = AudioDataset([np.full(400, 0.1, dtype=np.float32)] * 2, ["x", "x"], SR)
    data = TokenizedClips(clips, [[0, 1] * 6] * 2)
    before = {n: p.detach().clone() for n, p in asr.model.named_parameters()}
    groups = [{"params": [p for p in asr.model.parameters() if p.requires_grad], "lr": 1e-2}]
    trainer = Trainer(asr.model, TrainConfig(**cfg(tmp_path, batch_size=2, epochs=1)), compute_loss=asr.ctc_loss, param_groups=groups)
    result = trainer.fit(data, collate_fn=asr._collator())
    assert result.skipped_steps == 1
    assert all(torch.equal(before[n], p) for n, p in asr.model.named_parameters())


def test_ctc_loss_stays_fp32_under_autocast(w2v_dir):
    waves, texts = spoken(2)
    asr = SpeechRecognizer.from_pretrained(w2v_dir, transcripts=texts)
    batch = asr._collator()([asr._dataset((waves, texts), training=True)[i] for i in range(2)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = asr.ctc_loss(asr.model, batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bad_transcripts_are_counted_and_skipped(w2v_dir):
    from transferkit.audio.vocab import build_vocab

    waves, _ = spoken(4)
    asr = SpeechRecognizer.from_pretrained(w2v_dir, vocab=build_vocab(["ab"]))
    ds = asr._dataset((waves, ["a b", "", "a c", "ab" * 40]), training=True)
    assert len(ds) == 1
    assert asr.skip_report.skipped == {"empty transcript": 1, "characters outside the vocabulary": 1,
                                       "transcript too long for the clip": 1}


def test_vocabulary_and_head_size_mismatch_is_refused(w2v_dir):
    from transferkit.audio.vocab import build_vocab, make_processor

    asr = SpeechRecognizer.from_pretrained(w2v_dir, transcripts=["ab"])
    with pytest.raises(ValueError, match="CTC head has 5 outputs but the tokenizer has 6"):
        SpeechRecognizer(asr.model, make_processor(build_vocab(["abc"])))


def test_time_masking_on_clips_shorter_than_the_mask_does_not_crash(w2v_dir, tmp_path):
    """Regression: HF's SpecAugment raised on clips barely longer than mask_time_length frames."""
    asr = SpeechRecognizer.from_pretrained(w2v_dir, transcripts=["a"], mask_time_prob=0.5, mask_time_length=10)
    waves = [np.full(400, 0.1, dtype=np.float32), np.full(900, 0.2, dtype=np.float32)]
    result = asr.fit((waves, ["a", "a"]), **cfg(tmp_path, batch_size=2))
    assert math.isfinite(result["finetune"].final["train_loss"])


# ---------------------------------------------------------------------------- continued pretraining
def test_continued_pretraining_adapts_the_encoder_and_feeds_both_tasks(w2v_dir, tmp_path):
    import soundfile as sf

    waves, labels = tones(8)
    (tmp_path / "unlabelled").mkdir()
    for i, w in enumerate(waves):  # a flat folder: unlabelled audio needs no label sub-folders
        sf.write(tmp_path / "unlabelled" / f"{i}.wav", w, SR)
    res = pretrain(tmp_path / "unlabelled", w2v_dir, output_dir=tmp_path / "pt", eval_audio=waves[:4], num_negatives=4,
                   mask_time_length=2, epochs=2, batch_size=4, lr=1e-3, progress=False, save_checkpoints=False)
    assert math.isfinite(res.result.final["train_loss"]) and math.isfinite(res.result.final["eval_loss"])
    assert res.final["gumbel_temperature_steps"] == 4
    from safetensors.torch import load_file

    old, new = load_file(str(w2v_dir / "model.safetensors")), load_file(str(Path(res.folder) / "model.safetensors"))
    conv = "wav2vec2.feature_extractor.conv_layers.0.conv.weight"
    assert torch.equal(old[conv], new[conv])  # front end frozen by default
    assert not torch.equal(old["wav2vec2.encoder.layers.0.attention.k_proj.weight"],
                           new["wav2vec2.encoder.layers.0.attention.k_proj.weight"])
    clf = AudioClassifier.from_pretrained(res.folder, labels=["lo", "hi"])
    assert len(clf.predict(waves[:2])) == 2
    assert SpeechRecognizer.from_pretrained(res.folder, transcripts=["ab"]).transcribe(waves[:1])[0] is not None


# ---------------------------------------------------------------------------- CLI
def test_cli_fit_evaluate_predict(w2v_dir, tmp_path, capsys):
    import json

    import soundfile as sf

    from transferkit.common.cli import main

    waves, labels = tones(8)
    for i, (w, label) in enumerate(zip(waves, labels)):
        (tmp_path / "clips" / label).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "clips" / label / f"{i}.wav", w, SR)
    run = tmp_path / "cli"
    assert main(["audio", "fit", "--model", str(w2v_dir), "--train", str(tmp_path / "clips"), "--epochs", "1",
                 "--batch-size", "4", "--output-dir", str(run), "--no-progress", "--no-save-checkpoints"]) == 0
    exported = json.loads(capsys.readouterr().out)["model"]
    assert main(["audio", "evaluate", "--model", exported, "--data", str(tmp_path / "clips")]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 8
    clip = str(tmp_path / "clips" / "lo" / "1.wav")
    assert main(["audio", "predict", "--model", exported, clip]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["label"] in ("lo", "hi")

