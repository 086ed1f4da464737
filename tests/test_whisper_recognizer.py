"""WhisperRecognizer on a tiny random Whisper saved like a Hub checkpoint and loaded through from_pretrained.

The fixture's window is 1 s (100 mel frames = 2 x max_source_positions), its tokenizer byte-level
with no merges (one token per character) plus Whisper's special tokens, so every transcript's ids
are known. One fit step per strategy, then export -> ``pipeline`` with identical transcripts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.audio import WhisperConfig, WhisperRecognizer
from transferkit.common import Callback, TrainConfig

SR = 16_000
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
EOT, SOT, EN, FR, TRANSLATE, TRANSCRIBE, NO_TS = 256, 257, 258, 259, 260, 261, 265


def tiny_whisper(path: Path, multilingual: bool) -> Path:
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers import WhisperConfig as HFConfig
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    torch.manual_seed(0)
    tok = WhisperTokenizer(vocab={c: i for i, c in enumerate(bytes_to_unicode().values())}, merges=[])
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS], special_tokens=True)
    assert tok.convert_tokens_to_ids("<|notimestamps|>") == NO_TS
    config = HFConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, decoder_layers=2, decoder_attention_heads=2,
                      encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=50,
                      max_target_positions=40, vocab_size=266, pad_token_id=EOT, bos_token_id=EOT, eos_token_id=EOT,
                      decoder_start_token_id=SOT, suppress_tokens=[], begin_suppress_tokens=[EOT])
    model = WhisperForConditionalGeneration(config)
    gen = GenerationConfig(decoder_start_token_id=SOT, eos_token_id=EOT, pad_token_id=EOT, bos_token_id=EOT,
                           max_length=40, no_timestamps_token_id=NO_TS, is_multilingual=multilingual,
                           begin_suppress_tokens=[EOT], suppress_tokens=[])
    if multilingual:
        gen.lang_to_id, gen.task_to_id = {"<|en|>": EN, "<|fr|>": FR}, {"transcribe": TRANSCRIBE, "translate": TRANSLATE}
    model.generation_config = gen
    model.save_pretrained(path)
    fe = WhisperFeatureExtractor(feature_size=16, sampling_rate=SR, hop_length=160, chunk_length=1)
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def whisper_dirs(tmp_path_factory) -> dict[str, Path]:
    return {"en": tiny_whisper(tmp_path_factory.mktemp("tiny_en"), False),
            "multi": tiny_whisper(tmp_path_factory.mktemp("tiny_multi"), True)}


def clips(n: int = 6, seconds: float = 0.5) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(0)
    words = ["one two", "three", "four five", "six", "seven", "eight nine"]
    waves = [(0.1 * rng.standard_normal(int(SR * seconds))).astype(np.float32) for _ in range(n)]
    return waves, [words[i % len(words)] for i in range(n)]


def cfg(tmp_path: Path, **kw) -> TrainConfig:
    return TrainConfig(**{"output_dir": str(tmp_path / "run"), "epochs": 1, "batch_size": 3, "lr": 1e-3, "progress": False,
                          "plot": False, "metric_for_best": "wer", "greater_is_better": False, **kw})


def test_labels_hold_the_start_token_once_and_the_prompt_is_not_a_target(whisper_dirs):
    """Regression for the recipe's doubled <|startoftranscript|>: it is the decoder's first input only."""
    for key, prompt in (("en", [SOT, NO_TS]), ("multi", [SOT, FR, TRANSCRIBE, NO_TS])):
        asr = WhisperRecognizer.from_pretrained(whisper_dirs[key], language="fr" if key == "multi" else None)
        ids = asr.encode("ab")
        assert ids == prompt + [220, 64, 65, EOT]  # byte-level, printable bytes first: " " is 220, "a" 64, "b" 65
        assert ids.count(SOT) == 1
        batch = asr._collator()([{"input_values": np.zeros(800, np.float32), "target": ids},
                                 {"input_values": np.zeros(400, np.float32), "target": ids[:-2] + [EOT]}])
        assert batch["decoder_input_ids"][0].tolist() == ids[:-1]
        assert batch["labels"][0].tolist() == [-100] * (len(prompt) - 1) + ids[len(prompt):]
        assert batch["labels"][1].tolist()[-2:] == [EOT, -100]  # the end is a target, padding never
        assert batch["input_features"].shape == (2, 16, 100)


def test_language_rules(whisper_dirs):
    with pytest.raises(ValueError, match="multilingual: pass language="):
        WhisperRecognizer.from_pretrained(whisper_dirs["multi"])
    with pytest.raises(ValueError, match="English-only"):
        WhisperRecognizer.from_pretrained(whisper_dirs["en"], language="fr")
    with pytest.raises(ValueError, match="task"):
        WhisperConfig(task="summarise")


def test_over_long_clip_is_refused_with_its_message(whisper_dirs):
    asr = WhisperRecognizer.from_pretrained(whisper_dirs["en"])
    with pytest.raises(ValueError, match=r"lasts 1\.5 s but Whisper hears 1 s at a time: split it"):
        asr.transcribe(np.zeros(int(1.5 * SR), np.float32))
    waves, texts = clips(3)
    train = asr._dataset((waves + [np.zeros(int(1.5 * SR), np.float32)], texts + ["x"]), training=True)
    assert len(train) == 3 and asr.skip_report.n_skipped == 1  # training skips it and counts it


def test_labels_over_the_decoder_length_are_skipped_and_counted(whisper_dirs):
    asr = WhisperRecognizer.from_pretrained(whisper_dirs["en"])
    waves, texts = clips(3)
    ds = asr._dataset((waves, texts[:2] + ["x" * 60]), training=True)
    assert len(ds) == 2 and "over 40 tokens" in str(asr.skip_report)


@pytest.mark.parametrize("strategy", ["finetune", "partial", "lora", "llrd"])
def test_each_strategy_trains_exports_and_pipeline_transcribes_identically(whisper_dirs, tmp_path, strategy):
    from transformers import pipeline

    asr = WhisperRecognizer.from_pretrained(whisper_dirs["multi"], strategy=strategy, language="en", max_new_tokens=8)
    encoder_layer0 = asr.model.model.encoder.layers[0].fc1.weight.detach().clone()
    waves, texts = clips()
    result = asr.fit((waves, texts), eval=(waves[:3], texts[:3]), config=cfg(tmp_path))
    assert np.isfinite(result[strategy].history[-1]["train_loss"]) and "wer" in result[strategy].history[-1]
    moved = not torch.equal(encoder_layer0, asr.model.model.encoder.layers[0].fc1.weight)
    assert moved == (strategy in ("finetune", "llrd"))  # partial trains top decoder blocks; lora only adapters
    expected = asr.transcribe(waves[:3])
    out = asr.save(tmp_path / "export")
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["language"] == "en" and gen["task"] == "transcribe" and gen["max_new_tokens"] == 8
    pipe = pipeline("automatic-speech-recognition", model=str(out))
    assert [pipe({"raw": w, "sampling_rate": SR})["text"].strip() for w in waves[:3]] == expected
    assert [p["text"] for p in WhisperRecognizer.load(out).predict(waves[:3])] == expected


def test_partial_freezes_the_encoder_and_trains_the_top_decoder_blocks(whisper_dirs):
    from transferkit.common import get_strategy

    asr = WhisperRecognizer.from_pretrained(whisper_dirs["en"])
    names = [b.name for b in asr.encoder.blocks()]
    assert names == ["encoder.stem", "encoder.layer0", "encoder.layer1", "encoder.norm", "decoder.stem",
                     "decoder.layer0", "decoder.layer1", "top"]
    get_strategy("partial", top_k_blocks=1).param_groups(asr.encoder, asr.head, TrainConfig())
    trainable = {n for n, p in asr.model.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("decoder.layers.1.", "decoder.layer_norm")) for n in trainable)
    assert not asr.model.model.encoder.embed_positions.weight.requires_grad  # fixed sinusoids stay pinned


def test_lora_merged_export_equals_the_adapter_model(whisper_dirs, tmp_path):
    from transformers import WhisperForConditionalGeneration

    asr = WhisperRecognizer.from_pretrained(whisper_dirs["en"], strategy="lora")
    waves, texts = clips()
    asr.fit((waves, texts), config=cfg(tmp_path, epochs=2), lora_dropout=0.0)
    batch = asr._collator()([{"input_values": w, "target": asr.encode(t)} for w, t in zip(waves[:2], texts[:2])])
    asr.model.eval()
    with torch.no_grad():
        before = asr.model(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"]).logits
    merged = WhisperForConditionalGeneration.from_pretrained(asr.save(tmp_path / "export")).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        after = merged(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"]).logits
    assert torch.allclose(before, after, atol=1e-5)


class _KillAt(Callback):
    """Raises after ``n`` trained batches, as a kill -9 would stop the run."""

    def __init__(self, n: int) -> None:
        self.n, self.batches = n, 0

    def on_batch_end(self, trainer, loss):
        self.batches += 1
        if self.batches == self.n:
            raise KeyboardInterrupt


def test_killed_run_resumes_to_the_uninterrupted_weights(whisper_dirs, tmp_path):
    waves, texts = clips()
    full = WhisperRecognizer.from_pretrained(whisper_dirs["en"])
    full.fit((waves, texts), config=cfg(tmp_path / "a", epochs=2))
    with pytest.raises(KeyboardInterrupt):  # 2 batches per epoch: killed in epoch 2, after epoch 1's checkpoint
        WhisperRecognizer.from_pretrained(whisper_dirs["en"]).fit((waves, texts), config=cfg(tmp_path / "b", epochs=2),
                                                                 callbacks=[_KillAt(3)])
    torch.manual_seed(123)  # a new process starts from other generator states
    resumed = WhisperRecognizer.from_pretrained(whisper_dirs["en"])
    resumed.fit((waves, texts), config=cfg(tmp_path / "b", epochs=2, resume=True))
    for (n, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), n
    again = WhisperRecognizer.from_run(tmp_path / "b" / "run")
    assert again.transcribe(waves[:2]) == resumed.transcribe(waves[:2])
