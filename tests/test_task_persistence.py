"""Persistence of a task: save/load (export folder) and from_run (run folder) over one pair of hooks,
save_files(folder, kind) / load_files(folder, info, kind); a task written with the old hooks still works."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from transferkit.common import TransferTask


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def _old_style_classifier():
    """An ImageClassifier subclass written against the hooks before save_files/load_files."""
    from safetensors.torch import load_model, save_model

    from transferkit.vision import ImageClassifier

    class OldStyle(ImageClassifier):
        def export(self, folder):
            save_model(self.model, str(folder / "old.safetensors"))
            return {"labels": self.labels, "spec": str(self.encoder.spec)}

        @classmethod
        def restore(cls, folder, info):
            clf = cls.from_pretrained(info["spec"], labels=info["labels"])
            load_model(clf.model, str(folder / "old.safetensors"))
            return clf

        def run_meta(self):
            return {"labels": self.labels, "old_fact": 7}

        def write_run_assets(self, run_dir):
            (run_dir / "old-asset.txt").write_text("kept")

        @classmethod
        def from_run_meta(cls, meta, run_dir):
            assert (run_dir / "old-asset.txt").read_text() == "kept" and meta["old_fact"] == 7
            return cls.from_pretrained(meta["base_model"], labels=meta["labels"])

    return OldStyle


def test_a_task_written_with_the_old_hooks_warns_once_and_still_saves_loads_and_rebuilds_its_run(vit_dir, images, tmp_path):
    with pytest.warns(DeprecationWarning, match="save_files") as caught:
        OldStyle = _old_style_classifier()
    assert len([w for w in caught if issubclass(w.category, DeprecationWarning)]) == 1
    clf = OldStyle.from_pretrained(str(vit_dir), labels=["bright", "dark"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # using the old hooks warns no more
        clf.fit(images, output_dir=str(tmp_path / "run"), epochs=1, batch_size=8, lr=1e-2, progress=False)
        out = clf.save(tmp_path / "export")
        assert (out / "old.safetensors").exists()
        _states_equal(clf.model, OldStyle.load(out).model)
        run = json.loads((tmp_path / "run" / "transferkit-run.json").read_text())
        assert run["old_fact"] == 7
        _states_equal(clf.model, OldStyle.from_run(tmp_path / "run").model)


def test_a_task_with_neither_pair_of_hooks_cannot_be_built():
    class NoFiles(TransferTask):
        encoder = head = None

        def training_data(self, train, eval, config, **options): ...
        def loss_fn(self, config): ...
        def eval_fn(self): ...
        def predict(self, inputs, **kwargs): ...
        def evaluate(self, data, *, out_dir=None, **kwargs): ...

    with pytest.raises(TypeError, match="load_files.*save_files|save_files.*load_files"):
        NoFiles()


def test_a_classifier_round_trips_through_its_export_and_its_run_folder(vit_dir, images, tmp_path):
    from transferkit.vision import ImageClassifier

    clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy="lora")
    clf.fit(images, output_dir=str(tmp_path / "run"), epochs=1, batch_size=8, lr=1e-2, lora_r=2, progress=False)
    assert (tmp_path / "run" / "processor" / "preprocessor_config.json").exists()  # save_files(run_dir, "run")
    x = images[0][:4]
    expected = clf.logits(x)
    again = ImageClassifier.from_run(tmp_path / "run")  # LoRA adapters still separate here
    assert torch.allclose(again.logits(x), expected, atol=1e-5)
    loaded = ImageClassifier.load(clf.save(tmp_path / "export"))  # save merges the adapters
    assert loaded.labels == ["bright", "dark"] and torch.allclose(loaded.logits(x), expected, atol=1e-5)


def test_a_ctc_recognizer_round_trips_through_its_export_and_its_run_folder(tmp_path):
    from test_audio_models import tiny_wav2vec2

    from transferkit.audio import SpeechRecognizer

    texts = ["ab", "ba"] * 4
    waves = [(0.3 * np.sin(np.arange(4000) * (0.05 + 0.01 * i))).astype(np.float32) for i in range(len(texts))]
    asr = SpeechRecognizer.from_pretrained(tiny_wav2vec2(tmp_path / "w2v"), transcripts=texts, mask_time_prob=0.0)
    asr.fit((waves, texts), output_dir=str(tmp_path / "run"), epochs=1, batch_size=4, lr=1e-2, progress=False)
    run = json.loads((tmp_path / "run" / "transferkit-run.json").read_text())
    assert run["vocab"] == asr.tokenizer.get_vocab() and (tmp_path / "run" / "processor" / "vocab.json").exists()
    x = torch.as_tensor(np.stack(waves[:2]))
    with torch.no_grad():
        expected = asr.model.eval()(x).logits
        for again in (SpeechRecognizer.from_run(tmp_path / "run"), SpeechRecognizer.load(asr.save(tmp_path / "export"))):
            assert again.tokenizer.get_vocab() == asr.tokenizer.get_vocab()
            assert again.ctc_config == asr.ctc_config
            assert torch.allclose(again.model.eval()(x).logits, expected, atol=1e-5)


def test_a_whisper_recognizer_round_trips_through_its_export_and_its_run_folder(tmp_path):
    from test_whisper_recognizer import cfg, clips, tiny_whisper

    from transferkit.audio import WhisperRecognizer

    asr = WhisperRecognizer.from_pretrained(tiny_whisper(tmp_path / "tiny", False), max_new_tokens=6)
    waves, texts = clips()
    asr.fit((waves, texts), config=cfg(tmp_path))
    run = json.loads((tmp_path / "run" / "transferkit-run.json").read_text())
    assert run["whisper_config"]["max_new_tokens"] == 6
    for again in (WhisperRecognizer.from_run(tmp_path / "run"), WhisperRecognizer.load(asr.save(tmp_path / "export"))):
        assert again.asr_config == asr.asr_config
        _states_equal(asr.model, again.model)
