"""One classification flow over modality adapters.

A toy "vectors" modality written here (files of comma-separated numbers, decoded to float arrays) gets
fit, evaluate, predict, export, audit and the command-line verbs from the shared flow with no further
code; and the audit and training read the same junk-containing folder into the same items and skips.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.common import Encoder, TransferClassifier, load_encoder, register_encoder_scheme
from transferkit.common.audit_driver import audit_data
from transferkit.common.cli_verbs import add_classifier_verbs
from transferkit.common.encoders import ENCODER_SCHEMES
from transferkit.common.modality import Modality

DIM = 6


class Vectors(Modality):
    """A vector per ``.vec`` file: comma-separated numbers."""

    kind = "vectors"
    extensions = (".vec",)

    def decode(self, item, *, strict=True):
        if isinstance(item, (str, Path)):
            try:
                values = [float(v) for v in Path(item).read_text().split(",")]
            except ValueError as err:
                raise ValueError(f"{item}: not a vector ({err})") from err
            item = values
        arr = np.asarray(item, dtype=np.float32)
        if arr.shape != (DIM,):
            raise ValueError(f"expected {DIM} numbers, got shape {arr.shape}")
        return arr

    def collate(self, examples):
        return {"inputs": torch.as_tensor(np.stack(examples))}


class VectorClassifier(TransferClassifier):
    task = "vectors-classification"
    encoder_task = "vectors"
    modality = Vectors

    @classmethod
    def from_pretrained(cls, spec, labels, strategy="finetune", **kwargs):
        return cls(load_encoder(spec, **kwargs), labels, strategy)


class Identity(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(DIM))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs * self.scale


@pytest.fixture(autouse=True)
def toyvec_scheme():
    if "toyvec" not in ENCODER_SCHEMES.names():
        register_encoder_scheme("toyvec", lambda name, weights=None: Encoder(Identity(), DIM, spec=f"toyvec:{name}"))
    yield


def _write(root: Path, n: int, seed: int) -> Path:
    """Two classes told apart by the sign of the first coordinate."""
    rng = np.random.default_rng(seed)
    for label, sign in (("neg", -1.0), ("pos", 1.0)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            v = rng.normal(0, 0.3, DIM)
            v[0] = sign * (2 + abs(v[0]))
            (root / label / f"{i:03d}.vec").write_text(",".join(f"{x:.5f}" for x in v))
    return root


def _junk(root: Path) -> None:
    (root / "pos" / "notes.txt").write_text("not a vector file")  # other extension: skipped by the reader
    (root / "neg" / "broken.vec").write_text("1,2,oops")  # right extension, refused by the decoder
    (root / "pos" / "short.vec").write_text("1,2")


def test_a_new_modality_gets_fit_evaluate_predict_export_and_audit(tmp_path):
    train, test = _write(tmp_path / "train", 20, 0), _write(tmp_path / "test", 10, 1)
    clf = VectorClassifier.from_pretrained("toyvec:id", labels=VectorClassifier.labels_of(train), strategy="linear_probe")
    assert clf.labels == ["neg", "pos"]
    results = clf.fit(train, eval=test, epochs=15, lr=0.1, head_lr=0.1, batch_size=8,
                      output_dir=str(tmp_path / "run"), progress=False)
    assert results["linear_probe"].best_metric == 1.0
    assert float(clf.encoder.module.scale.sum()) == DIM  # linear_probe: the encoder did not move
    assert clf.evaluate(test)["accuracy"] == 1.0
    assert [p["label"] for p in clf.predict([[3, 0, 0, 0, 0, 0], [-3, 0, 0, 0, 0, 0]])] == ["pos", "neg"]
    back = VectorClassifier.load(clf.save(tmp_path / "model"))
    assert torch.equal(back.head.weight, clf.head.weight) and back.evaluate(test)["accuracy"] == 1.0
    ref = clf.reference()
    assert ref is None  # the toy modality names no reference

    m = Vectors(clf.encoder)
    copy = Path(train / "pos" / "000.vec").read_text()
    (train / "neg" / "dup.vec").write_text(copy)  # the same bytes under another label
    report = audit_data(m, train, test, progress=False)
    flagged = {(Path(f.source).name, f.reason) for f in report.flags if f.kind in ("file", "duplicate")}
    assert ("dup.vec", "exact_duplicate") in flagged or ("000.vec", "exact_duplicate") in flagged


def test_audit_and_training_read_a_junk_folder_into_the_same_items_and_skips(tmp_path, caplog):
    train = _write(tmp_path / "train", 8, 0)
    _junk(train)
    clf = VectorClassifier.from_pretrained("toyvec:id", labels=["neg", "pos"], strategy="linear_probe")
    with caplog.at_level(logging.WARNING):
        data = clf.training_data(train, None, clf.default_config())
    report = audit_data(Vectors(clf.encoder), train, progress=False)
    usable = [report.train.sources[i] for i in report.train.usable]
    assert usable == data.train.items and len(usable) == 16
    assert data.info["skipped_train"] == {"not_vectors": 1, "undecodable": 2}
    assert {Path(f.source).name: f.reason for f in report.flags if f.kind == "file"} == {
        "broken.vec": "unreadable", "short.vec": "unreadable"}
    assert any("notes.txt" in note for note in report.notes)  # the reader's skip, in the report too
    assert any("notes.txt" in r.getMessage() for r in caplog.records)


def test_image_and_audio_readers_follow_the_same_rules(tmp_path):
    """A non-media file is skipped and counted, and an empty label folder is an error, in both domains."""
    import soundfile as sf
    from PIL import Image

    from transferkit.audio import AudioDataset
    from transferkit.vision import ImageSet

    for label in ("a", "b"):
        (tmp_path / "img" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "img" / label / "x.png")
        (tmp_path / "img" / label / "readme.md").write_text("x")
        (tmp_path / "wav" / label).mkdir(parents=True)
        sf.write(tmp_path / "wav" / label / "x.wav", 0.1 * np.sin(np.arange(1600) / 5.0), 16_000)
        (tmp_path / "wav" / label / "readme.md").write_text("x")
    images, clips = ImageSet.from_folder(tmp_path / "img"), AudioDataset.from_folder(tmp_path / "wav", cache=False)
    assert images.skipped["not_image"] == 2 and clips.report.skipped["not_audio"] == 2
    assert len(images) == len(clips) == 2 and images.labels == clips.labels == ["a", "b"]
    for kind in ("img", "wav"):
        (tmp_path / kind / "c").mkdir()
    with pytest.raises(ValueError, match="contains no image files"):
        ImageSet.from_folder(tmp_path / "img")
    with pytest.raises(ValueError, match="contains no audio files"):
        AudioDataset.from_folder(tmp_path / "wav")
    (tmp_path / "m.csv").write_text("path,label\nwav/a/x.wav,a\nwav/a/gone.wav,a\n")
    assert AudioDataset.from_manifest(tmp_path / "m.csv", cache=False).report.skipped["missing"] == 1
    (tmp_path / "i.csv").write_text("path,label\nimg/a/x.png,a\nimg/a/gone.png,a\n")
    assert ImageSet.from_csv(tmp_path / "i.csv").skipped["missing"] == 1


def test_the_cli_verbs_come_from_the_adapter(tmp_path, capsys):
    train, test = _write(tmp_path / "train", 12, 0), _write(tmp_path / "test", 6, 1)
    parser = argparse.ArgumentParser()
    verbs = parser.add_subparsers(dest="verb", required=True)
    add_classifier_verbs(verbs, VectorClassifier, noun="vector")
    assert set(verbs.choices) == {"fit", "audit", "evaluate", "predict", "export", "push", "curve"}

    def run(*argv: str) -> dict:
        args = parser.parse_args(list(argv))
        assert args.func(args) == 0
        out = capsys.readouterr().out
        return json.loads(out) if out.lstrip().startswith("{") else out

    out = run("fit", "--model", "toyvec:id", "--train", str(train), "--eval", str(test), "--strategy", "linear_probe",
              "--epochs", "15", "--lr", "0.1", "--head-lr", "0.1", "--batch-size", "8", "--output-dir",
              str(tmp_path / "run"), "--no-progress")
    assert out["metrics"]["accuracy"] == 1.0
    model = out["model"]
    assert run("evaluate", "--model", model, "--data", str(test))["accuracy"] == 1.0
    assert run("predict", "--model", model, str(test / "pos" / "000.vec"))["label"] == "pos"  # one JSON line per file
    assert Path(run("export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "exp"))["model"]).is_dir()
    audit = run("audit", str(train), "--model", "toyvec:id", "--test", str(test), "--out", str(tmp_path / "audit"))
    assert (tmp_path / "audit" / "audit.md").exists() and audit


class LengthyVectors(Vectors):
    """Vectors whose 'length' is their first value: the audit encodes them shortest first."""

    def length(self, example):
        return float(example[0])


def test_audit_features_come_back_in_item_order_when_encoded_shortest_first(tmp_path):
    """Regression: the audit sorts items by length before encoding; the rows must return to item order
    (a double argsort once put each clip's features on another clip, and the spoken-digit near-copies
    were found 0.35 of the time instead of always)."""
    from transferkit.common.audit_driver import audit_split
    from transferkit.common.features import FeatureCache
    from transferkit.common.sources import LabelledSource

    rng = np.random.default_rng(0)
    items = [rng.normal(size=DIM).astype(np.float32) for _ in range(7)]
    for k, x in enumerate(items):
        x[0] = [5, 1, 6, 0, 3, 2, 4][k]  # a length order that is no involution of the item order
    modality = LengthyVectors(load_encoder("toyvec:lengths"))
    split = audit_split(modality, LabelledSource(items, ["a"] * 7, origin="memory"), FeatureCache(tmp_path),
                        batch_size=2, progress=False)
    np.testing.assert_allclose(split.features, np.stack(items), atol=1e-6)  # Identity encoder: features = items
