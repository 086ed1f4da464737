"""Long clips and Hugging Face audio columns (regressions: one 40-second clip among 1-second clips made fit
allocate 32 GB; ``load_dataset("audiofolder")`` failed without torchcodec)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from test_audio_models import SR, cfg, tiny_wav2vec2, tones

from transferkit.audio import AudioClassifier, AudioDataset
from transferkit.audio.data import clip_windows, decode_any, load_audio

FFMPEG_REASON = "torchcodec with FFmpeg's libraries is not installed (.ci/setup installs both: apt-get install -y ffmpeg)"


def _torchcodec_works() -> bool:
    try:
        import torchcodec.decoders  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return False
    return True


@pytest.fixture(scope="module")
def w2v_dir(tmp_path_factory):
    return tiny_wav2vec2(tmp_path_factory.mktemp("w2v"))


def tone(freq: float, seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def count_samples(clf: AudioClassifier) -> list[int]:
    """Samples per clip (the padded batch width) of every batch the encoder sees from now on."""
    seen: list[int] = []
    clf.encoder.register_forward_pre_hook(lambda mod, args, kw: seen.append(kw["input_values"].shape[-1]),
                                          with_kwargs=True)
    return seen


def test_windows_cover_a_long_clip_and_leave_short_ones_whole():
    clip = np.arange(10)
    windows, owner = clip_windows([clip, clip[:3]], 4)
    assert [w.tolist() for w in windows] == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9], [0, 1, 2]]
    assert owner == [0, 0, 0, 1]
    assert clip_windows([clip], None)[1] == [0]


@pytest.mark.parametrize("strategy, crop", [("finetune", None), ("linear_probe", 5.0)])
def test_a_40_second_clip_among_1_second_clips_trains_and_predicts_in_bounded_memory(w2v_dir, tmp_path, strategy, crop):
    """``crop`` None: the default (20 s); the probe runs 5-s windows to stay fast."""
    waves, labels = tones(12)  # 0.1-0.8 s tones: 300 Hz "lo", 2000 Hz "hi"
    waves += [tone(2000.0, 40.0, seed=1), tone(300.0, 1.0, seed=2)]
    labels += ["hi", "lo"]
    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"], strategy=strategy)
    seen = count_samples(clf)
    options = {"epochs": 40, "head_lr": 0.05, "batch_size": 14} if strategy == "linear_probe" else {"lr": 1e-3}
    if crop is not None:
        options["max_seconds"] = crop
    clf.fit((waves, labels), eval=(waves, labels), **cfg(tmp_path, **options))
    window = crop or 20.0
    assert clf.window_seconds == window and clf.train_info["max_seconds"] == window
    assert max(seen) == window * SR  # training and per-epoch evaluation: never the whole 40 s (640,000 samples)
    seen.clear()
    long_clip = tone(2000.0, 40.0, seed=3)
    pred = clf.predict(long_clip)[0]
    assert max(seen) == window * SR and len(seen) == 1  # all its windows in one batch, their scores averaged
    if strategy == "linear_probe":
        assert pred["label"] == "hi"
        assert clf.evaluate((waves, labels))["accuracy"] == 1.0
    # The pooled score is the mean of the windows' logits (here whole windows: 40 s is a multiple of both).
    n = int(window * SR)
    parts = clf.logits([long_clip[k:k + n] for k in range(0, len(long_clip), n)])
    torch.testing.assert_close(clf.logits([long_clip])[0], parts.mean(0), atol=1e-5, rtol=1e-5)


def test_whole_clips_when_max_seconds_is_none(w2v_dir, tmp_path):
    waves, labels = tones(4)
    waves[0] = tone(2000.0, 3.0)
    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"], strategy="finetune")
    seen = count_samples(clf)
    clf.fit((waves, labels), max_seconds=None, **cfg(tmp_path, batch_size=4))
    assert max(seen) == 3 * SR and clf.window_seconds is None


# ---------------------------------------------------------------------------- Hugging Face audio columns
def _folder(root, n: int = 8):
    """root/<label>/<k>.wav: 8 kHz tones, so every reader has to resample."""
    waves, labels = tones(n)
    paths = []
    for k, (w, label) in enumerate(zip(waves, labels)):
        (root / label).mkdir(parents=True, exist_ok=True)
        path = root / label / f"{k}.wav"
        sf.write(path, w[::2], SR // 2)
        paths.append(path)
    return paths, labels


def test_audio_decode_false_columns_of_bytes_or_paths(tmp_path):
    from datasets import Audio, ClassLabel, Dataset, Features

    paths, labels = _folder(tmp_path / "clips", 4)
    features = Features({"audio": Audio(decode=False), "label": ClassLabel(names=["hi", "lo"])})
    ids = [["hi", "lo"].index(x) for x in labels]
    want = [load_audio(str(p), SR) for p in paths]
    as_bytes = Dataset.from_dict({"audio": [{"bytes": p.read_bytes(), "path": None} for p in paths], "label": ids},
                                 features=features)
    as_paths = Dataset.from_dict({"audio": [{"bytes": None, "path": str(p)} for p in paths], "label": ids},
                                 features=features)
    for ds in (as_bytes, as_paths):
        got = AudioDataset.from_hf(ds, target_rate=SR)
        assert got.targets == labels
        assert all(np.array_equal(a, b) for a, b in zip(got.waveforms, want))


def test_a_cast_column_audio_16000_trains_with_the_right_labels(w2v_dir, tmp_path):
    """Works without FFmpeg: the column is read as its files and decoded here."""
    from datasets import Audio, ClassLabel, Dataset

    paths, labels = _folder(tmp_path / "clips", 12)
    ds = Dataset.from_dict({"audio": [str(p) for p in paths], "label": [["hi", "lo"].index(x) for x in labels]})
    ds = ds.cast_column("label", ClassLabel(names=["hi", "lo"])).cast_column("audio", Audio(sampling_rate=SR))
    clips = AudioDataset.from_hf(ds, target_rate=SR)
    assert clips.targets == labels and clips.sources == [str(p) for p in paths]
    assert all(np.array_equal(w, load_audio(p, SR)) for w, p in zip(clips.waveforms, paths))
    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"], strategy="linear_probe")
    clf.fit(ds, **cfg(tmp_path, epochs=40, head_lr=0.05, batch_size=12))
    assert clf.evaluate(ds)["accuracy"] == 1.0


@pytest.mark.skipif(not _torchcodec_works(), reason=FFMPEG_REASON)
def test_an_audiofolder_data_set_trains_with_the_right_labels(w2v_dir, tmp_path):
    from datasets import Audio, load_dataset

    paths, labels = _folder(tmp_path / "clips", 12)
    ds = load_dataset("audiofolder", data_dir=str(tmp_path / "clips"), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.features["label"].names == ["hi", "lo"]
    resampled = ds.cast_column("audio", Audio(sampling_rate=SR))
    for data in (ds, resampled):
        clips = AudioDataset.from_hf(data, target_rate=SR)
        by_name = dict(zip(clips.sources, clips.targets))
        assert by_name == {str(p): label for p, label in zip(paths, labels)}  # each file keeps its folder's label
        assert all(np.array_equal(w, load_audio(s, SR)) for w, s in zip(clips.waveforms, clips.sources))
    clf = AudioClassifier.from_pretrained(w2v_dir, labels=["lo", "hi"], strategy="linear_probe")
    clf.fit(resampled, **cfg(tmp_path, epochs=40, head_lr=0.05, batch_size=12))
    assert clf.evaluate(ds)["accuracy"] == 1.0


@pytest.mark.skipif(not _torchcodec_works(), reason=FFMPEG_REASON)
def test_a_decoded_audio_decoder_reads_as_the_file(tmp_path):
    from datasets import Audio, load_dataset

    _folder(tmp_path / "clips", 4)
    ds = load_dataset("audiofolder", data_dir=str(tmp_path / "clips"), split="train", cache_dir=str(tmp_path / "hf"))
    files = [a["path"] for a in ds.cast_column("audio", Audio(decode=False))["audio"]]
    for k, path in enumerate(files):
        decoder = ds[k]["audio"]
        assert hasattr(decoder, "get_all_samples")  # datasets hands decoded columns over as AudioDecoder objects
        want, rate = sf.read(path, dtype="float32")
        np.testing.assert_allclose(decode_any(decoder, rate, source=path), want, atol=1e-6)
        assert np.array_equal(decode_any(decoder, SR), load_audio(path, SR))  # resampled here, as the file is


@pytest.mark.skipif(not _torchcodec_works() or shutil.which("ffmpeg") is None, reason=FFMPEG_REASON)
def test_a_format_soundfile_cannot_read_is_decoded_through_torchcodec(tmp_path):
    """AAC in an M4A file: soundfile refuses it, the folder reader falls back on torchcodec (FFmpeg)."""
    (tmp_path / "clips" / "beep").mkdir(parents=True)
    path = tmp_path / "clips" / "beep" / "a.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1:sample_rate=8000",
                    "-c:a", "aac", str(path)], check=True, timeout=60)
    with pytest.raises(sf.LibsndfileError):
        sf.read(path)
    ds = AudioDataset.from_folder(tmp_path / "clips", target_rate=SR, cache=False)
    assert ds.targets == ["beep"] and ds.report.n_skipped == 0
    wave = ds.waveforms[0]
    assert abs(len(wave) - SR) < SR // 10  # one second at 16 kHz (AAC adds a little priming)
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * SR / len(wave) - 440) < 5  # the tone survived decoding and resampling
    # every reader of a path goes through load_audio, so predict and the audit read the file the same way
    np.testing.assert_array_equal(load_audio(path, SR), wave)
