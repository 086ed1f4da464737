"""Audio data, augmentation, vocabulary, CTC decoding and the MFCC reference: no model needed."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from transferkit.audio.augment import WaveAugment, add_noise, apply_gain, speed_perturb
from transferkit.audio.ctc import StreamingCTCEval, collapse, ctc_loss_fp32, error_rates, greedy_decode
from transferkit.audio.data import AudioDataError, AudioDataset, load_audio, receptive_field
from transferkit.audio.reference import MfccLogReg, mfcc_stats
from transferkit.audio.vocab import build_vocab, encode_transcripts, make_processor, normalize_transcript

SR = 16_000


def tone(seconds: float = 0.25, sr: int = SR, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def folder(tmp_path):
    """A label folder holding one good clip per label plus each kind of bad file from the issue."""
    root = tmp_path / "clips"
    for label in ("no", "yes"):
        (root / label).mkdir(parents=True)
        sf.write(root / label / "good.wav", tone(freq=300 if label == "yes" else 600), SR)
    sf.write(root / "yes" / "empty.wav", np.zeros(0, dtype=np.float32), SR)
    (root / "yes" / "notes.wav").write_text("this is not audio")
    sf.write(root / "no" / "nan.wav", np.full(800, np.nan, dtype=np.float32), SR, subtype="FLOAT")
    clipped = np.clip(tone(amp=3.0), -1, 1)
    sf.write(root / "no" / "clipped.wav", clipped, SR, subtype="FLOAT")
    return root


# ---------------------------------------------------------------------------- bad input
def test_folder_skips_and_counts_each_bad_file(folder, caplog):
    with caplog.at_level(logging.WARNING):
        ds = AudioDataset.from_folder(folder)
    assert sorted(ds.targets) == ["no", "yes"]
    assert ds.report.skipped == {
        "empty audio (zero samples)": 1,
        "unreadable or not audio": 1,
        "NaN or infinite samples": 1,
        "clipped": 1,
    }
    # Each skip is logged with the file it concerns.
    for name in ("empty.wav", "notes.wav", "nan.wav", "clipped.wav"):
        assert any(name in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("name", "reason"), [("empty.wav", "empty"), ("notes.wav", "unreadable"),
                                              ("nan.wav", "NaN"), ("clipped.wav", "clipped")])
def test_strict_mode_raises_naming_the_file(folder, name, reason):
    path = next(folder.rglob(name))
    with pytest.raises(AudioDataError, match=rf"{name}: .*{reason}"):
        load_audio(path, SR)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(AudioDataError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")


def test_stereo_is_downmixed(tmp_path):
    left, right = tone(freq=300), tone(freq=500, amp=0.2)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), SR, subtype="FLOAT")
    wave = load_audio(tmp_path / "st.wav", SR)
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("sr", [8_000, 22_050, 44_100, 48_000])
def test_any_rate_is_resampled_keeping_duration_and_pitch(tmp_path, sr):
    sf.write(tmp_path / "x.wav", tone(0.5, sr=sr, freq=440), sr)
    ds = AudioDataset.from_files([tmp_path / "x.wav"], ["a"], target_rate=SR)
    wave = ds[0]["input_values"]
    assert abs(len(wave) - SR // 2) <= 1
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * SR / len(wave) - 440) < 4  # still a 440 Hz tone
    assert ds.report.repaired == ({f"resampled {sr} -> {SR} Hz": 1})


def test_int16_pcm_scales_to_unit_range():
    ds = AudioDataset.from_arrays([np.array([0, 16384, -16384, 8192] * 100, dtype=np.int16)], ["a"], sampling_rate=SR)
    np.testing.assert_allclose(ds.waveforms[0][:4], [0.0, 0.5, -0.5, 0.25])


def test_short_clip_is_padded_to_the_receptive_field():
    cfg = SimpleNamespace(conv_kernel=[10, 3, 3], conv_stride=[5, 2, 2])
    rf = receptive_field(cfg)
    assert rf == 1 + 9 + 2 * 5 + 2 * 10  # each layer adds (k - 1) x the stride below it
    ds = AudioDataset.from_arrays([tone(0.001)], ["a"], sampling_rate=SR).with_options(min_samples=rf)
    assert len(ds[0]["input_values"]) == rf
    assert ds.lengths == [rf]


def test_random_crop_and_duration_filters():
    ds = AudioDataset.from_arrays([tone(1.0), tone(0.1), tone(3.0)], ["a", "b", "c"], sampling_rate=SR)
    kept = ds.filter_duration(min_seconds=0.2, max_seconds=2.0)
    assert kept.targets == ["a"]
    assert ds.report.skipped == {"shorter than min_seconds=0.2": 1, "longer than max_seconds=2.0": 1}
    cropped = ds.with_options(max_seconds=0.5)
    assert len(cropped[2]["input_values"]) == SR // 2
    chunks = ds.chunk(1.0)
    assert chunks.targets.count("c") == 3 and len(chunks) == 5


def test_manifest_csv_and_tsv(tmp_path):
    sf.write(tmp_path / "a.wav", tone(), SR)
    (tmp_path / "m.csv").write_text("path,transcript\na.wav,Hello world\n")
    (tmp_path / "m.tsv").write_text("path\tlabel\na.wav\tyes\n")
    assert AudioDataset.from_manifest(tmp_path / "m.csv").targets == ["Hello world"]
    assert AudioDataset.from_manifest(tmp_path / "m.tsv").targets == ["yes"]
    (tmp_path / "bad.csv").write_text("file,label\na.wav,yes\n")
    with pytest.raises(ValueError, match="'path'"):
        AudioDataset.from_manifest(tmp_path / "bad.csv")


def test_hf_dataset_decodes_with_soundfile(tmp_path):
    datasets = pytest.importorskip("datasets")
    sf.write(tmp_path / "a.wav", tone(sr=8000), 8000)
    (tmp_path / "b.wav").write_text("junk")
    # Encoding Audio values needs torchcodec; casting a bytes/path struct to Audio does not.
    rows = [{"path": str(p), "bytes": p.read_bytes()} for p in (tmp_path / "a.wav", tmp_path / "b.wav")]
    hf = datasets.Dataset.from_dict({"audio": rows, "label": [1, 0]})
    hf = hf.cast_column("audio", datasets.Audio()).cast_column("label", datasets.ClassLabel(names=["no", "yes"]))
    ds = AudioDataset.from_hf(hf)
    assert ds.targets == ["yes"] and ds.report.skipped == {"unreadable or not audio": 1}
    assert len(ds.waveforms[0]) == SR // 4


# ---------------------------------------------------------------------------- augmentation
def test_noise_hits_the_requested_snr():
    w = tone(1.0)
    out = add_noise(w, 5.0, rng=np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(w**2) / np.mean((out - w) ** 2))
    assert abs(snr - 5.0) < 1e-3
    np.testing.assert_array_equal(add_noise(np.zeros(100, np.float32), 5.0), np.zeros(100))


def test_speed_and_gain():
    w = tone(1.0)
    assert abs(len(speed_perturb(w, 1.1, SR)) - SR / 1.1) < 2
    np.testing.assert_allclose(apply_gain(w, 6.0206), np.clip(w * 2, -1, 1), atol=1e-4)
    aug = WaveAugment(SR, seed=1)
    assert aug(w).dtype == np.float32


# ---------------------------------------------------------------------------- vocabulary
def test_vocab_round_trips_text():
    texts = ["Three, seven!", "one  TWO"]
    vocab = build_vocab(texts)
    assert list(vocab)[-3:] == ["|", "[UNK]", "[PAD]"] and "," not in vocab
    proc = make_processor(vocab)
    tok = proc.tokenizer
    for t in texts:
        ids = tok(normalize_transcript(t)).input_ids
        # group_tokens=False: labels are not CTC paths, so doubled letters must not merge.
        assert tok.decode(ids, group_tokens=False) == normalize_transcript(t)
    assert len(tok) == len(vocab)  # no hidden <s>/</s> growing the head


def test_processor_save_load_keeps_normalisation(tmp_path):
    from transformers import Wav2Vec2Processor

    make_processor(build_vocab(["ab"]), chars_to_ignore="!", lowercase=False).save_pretrained(tmp_path)
    loaded = Wav2Vec2Processor.from_pretrained(tmp_path)
    ids = encode_transcripts(["ab!", "AB"], loaded.tokenizer)
    assert ids[0] == [0, 1] and ids[1] is None  # upper case is out of vocabulary when lowercase=False


def test_bad_transcripts_are_skipped_and_counted():
    tok = make_processor(build_vocab(["abc"])).tokenizer
    from transferkit.audio.data import SkipReport

    report = SkipReport()
    out = encode_transcripts(["ab c", "", "  ?! ", "abz"], tok, ["x1", "x2", "x3", "x4"], report)
    assert out[0] == [0, 1, 3, 2] and out[1:] == [None, None, None]
    assert report.skipped == {"empty transcript": 2, "characters outside the vocabulary": 1}


# ---------------------------------------------------------------------------- CTC
def test_greedy_decoding_of_a_hand_built_path():
    vocab = {"e": 0, "n": 1, "o": 2, "|": 3, "[UNK]": 4, "[PAD]": 5}
    id2tok = {i: s for s, i in vocab.items()}
    # frames: o o _ n e | | o n n _ n e  -> "one one" only if the blank separates the doubled n
    path = [2, 2, 5, 1, 0, 3, 3, 2, 1, 1, 5, 1, 0]
    logits = torch.full((len(path), len(vocab)), -5.0)
    logits[torch.arange(len(path)), torch.tensor(path)] = 5.0
    assert greedy_decode(logits, id2token=id2tok, blank_id=5) == ["one onne"]
    # With padding frames past each example's length ignored:
    batch = torch.stack([logits, logits.roll(1, 0)])
    assert greedy_decode(batch, id2token=id2tok, blank_id=5, lengths=[5, 0]) == ["one", ""]
    assert collapse([5, 1, 1, 5, 1], 5) == [1, 1]


def test_greedy_decoding_matches_the_tokenizer():
    proc = make_processor(build_vocab(["one two"]))
    tok = proc.tokenizer
    ids = tok("two one").input_ids
    logits = torch.nn.functional.one_hot(torch.tensor(ids), len(tok)).float()
    assert greedy_decode(logits, tok) == ["two one"] == [tok.decode(ids)]


def test_ctc_loss_fp32_equals_torch_and_survives_half_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 12, 6)
    labels = torch.tensor([[1, 2, 3], [4, -100, -100]])
    lengths = torch.tensor([12, 9])
    ref = torch.nn.functional.ctc_loss(logits.log_softmax(-1).transpose(0, 1), torch.tensor([1, 2, 3, 4]),
                                       lengths, torch.tensor([3, 1]), blank=0)
    assert torch.allclose(ctc_loss_fp32(logits, labels, lengths, blank_id=0), ref)
    half = ctc_loss_fp32(logits.half(), labels, lengths, blank_id=0)
    assert half.dtype == torch.float32 and torch.isfinite(half)
    # A label longer than the frames is infeasible: zero_infinity keeps the batch loss finite.
    long = torch.tensor([[1, 2, 3, 4, 5] * 3, [4] + [-100] * 14])
    assert torch.isfinite(ctc_loss_fp32(logits, long, lengths, blank_id=0))


def test_wer_cer_and_streaming():
    assert error_rates(["one two"], ["one three"]) == {"wer": 0.5, "cer": pytest.approx(4 / 7)}
    ev = StreamingCTCEval()
    ev.add(["a b", "c"], ["a b", ""])
    ev.add([""], ["x"])  # empty references are not scored
    res = ev.result()
    assert res["wer"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------- reference
def test_mfcc_logistic_regression_separates_two_tones():
    rng = np.random.default_rng(0)
    waves = [tone(0.3, freq=f) + 0.01 * rng.standard_normal(4800).astype(np.float32) for f in [300] * 5 + [1200] * 5]
    labels = ["low"] * 5 + ["high"] * 5
    assert mfcc_stats(waves).shape == (10, 80)
    clf = MfccLogReg().fit(waves, labels)
    assert clf.predict([tone(0.3, freq=310), tone(0.3, freq=1150)]) == ["low", "high"]

