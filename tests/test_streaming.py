"""Streams (iterables without a length, ``datasets.IterableDataset``) through the one Trainer and fit:
steps instead of epochs, a seeded shuffle buffer, evaluation on a stream, and exact resume mid-stream."""

from __future__ import annotations

import pytest
import torch
from conftest import noisy_collate, toy_loss, toy_model, toy_rows, two_class_images, write_folder

from transferkit.common import Callback, TrainConfig, Trainer
from transferkit.common.streams import StreamReader, is_stream


class _Iterable:
    """Re-iterable, no length: what a stream looks like to the Trainer."""

    def __init__(self, rows):
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)


class _Kill(Callback):
    """Raises after ``kill_at`` trained batches, as a kill -9 would stop the run; records the batches' labels."""

    def __init__(self, kill_at=None, key="x"):
        self.batches, self.kill_at, self.key, self.seen = 0, kill_at, key, []

    def on_batch_begin(self, trainer, model, batch):
        self.seen.append((batch[self.key].detach().cpu(), batch["labels"].detach().cpu()))

    def on_batch_end(self, trainer, loss):
        self.batches += 1
        if self.batches == self.kill_at:
            raise KeyboardInterrupt


def test_buffer_shuffle_is_seeded_per_pass_and_keeps_every_example():
    reader = StreamReader(range(20), batch_size=20, collate=list, seed=3, shuffle_buffer=5)
    first, again, second = (next(reader.batches(e)) for e in (1, 1, 2))
    assert sorted(first) == list(range(20)) and first != list(range(20))
    assert first == again and first != second


def test_a_stream_without_max_steps_is_refused_naming_it(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), batch_size=4, progress=False, plot=False)
    with pytest.raises(ValueError, match="max_steps"):
        Trainer(toy_model(), cfg, compute_loss=toy_loss).fit(_Iterable(toy_rows()), collate_fn=noisy_collate)


def test_max_steps_overrides_epochs_on_a_map_style_set(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), epochs=10, batch_size=5, max_steps=7, progress=False, plot=False)
    result = Trainer(toy_model(), cfg, compute_loss=toy_loss).fit(toy_rows(), collate_fn=noisy_collate)
    assert result.steps == 7 and [r["epoch"] for r in result.history] == [1, 2]  # 5 steps an epoch


def test_a_one_shot_generator_is_refused_on_its_second_pass(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), batch_size=8, max_steps=5, progress=False, plot=False)
    with pytest.raises(ValueError, match="read again"):
        Trainer(toy_model(), cfg, compute_loss=toy_loss).fit((r for r in toy_rows()), collate_fn=noisy_collate)


def test_evaluation_on_a_stream_equals_evaluation_on_the_same_list(tmp_path):
    def run(eval_data, name):
        cfg = TrainConfig(output_dir=str(tmp_path / name), batch_size=5, max_steps=6, progress=False, plot=False,
                          metric_for_best="eval_loss", greater_is_better=False)
        return Trainer(toy_model(), cfg, compute_loss=toy_loss).fit(_Iterable(toy_rows()), eval_data,
                                                                    collate_fn=noisy_collate,
                                                                    eval_collate_fn=torch.utils.data.default_collate)

    streamed, listed = run(_Iterable(toy_rows(7, seed=1)), "stream"), run(toy_rows(7, seed=1), "list")
    assert streamed.steps == listed.steps == 6
    # After pass 1 both models are the same (a map-style eval loader then draws a seed, so pass 2 differs).
    assert streamed.history[0]["eval_loss"] == pytest.approx(listed.history[0]["eval_loss"], abs=1e-6)
    assert streamed.history[0]["eval_loss"] > 0
    assert len(streamed.history) == 2  # 24 examples in batches of 5: pass 1 has 5 steps, pass 2 ends at step 6


@pytest.mark.parametrize("buffer", [0, 7])
def test_trainer_stream_killed_mid_pass_resumes_to_the_same_weights(tmp_path, buffer):
    def fit(path, **kw):
        cfg = TrainConfig(output_dir=str(path), batch_size=5, max_steps=9, save_steps=3, shuffle_buffer=buffer,
                          lr=1e-2, progress=False, plot=False, **{k: v for k, v in kw.items() if k != "callbacks"})
        trainer = Trainer(toy_model(), cfg, compute_loss=toy_loss, callbacks=kw.get("callbacks", ()))
        result = trainer.fit(_Iterable(toy_rows()), collate_fn=noisy_collate)
        return trainer.model, result

    whole, result = fit(tmp_path / "whole")
    assert result.steps == 9
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "killed", callbacks=[_Kill(kill_at=8)])  # step checkpoint at 6 (pass 2, batch 1)
    counter = _Kill()
    resumed, result = fit(tmp_path / "killed", resume=True, callbacks=[counter])
    assert result.steps == 9
    assert counter.batches == 3  # only steps 7-9: it went on from the step-6 checkpoint rather than starting again
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# -- datasets' streaming imagefolder through ImageClassifier.fit ---------------------------------------------

@pytest.fixture()
def image_stream(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = write_folder(tmp_path / "pngs", *two_class_images(n=20))

    def load():
        return datasets.load_dataset("imagefolder", data_dir=str(folder), streaming=True)["train"]

    return load


def _classifier(vit_dir, strategy="finetune"):
    from transferkit.vision import ImageClassifier

    return ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy=strategy)


def _opts(path, **kw):
    return {"output_dir": str(path), "batch_size": 4, "lr": 1e-3, "head_lr": 1e-2, "progress": False,
            "plot": False} | kw


def test_streaming_imagefolder_trains_n_steps_with_the_right_labels(vit_dir, image_stream, tmp_path):
    stream = image_stream()
    assert is_stream(stream)
    clf, spy = _classifier(vit_dir), _Kill(key="pixel_values")
    result = clf.fit(stream, eval=image_stream(), callbacks=[spy], **_opts(tmp_path / "run", max_steps=7,
                                                                             shuffle_buffer=8))["finetune"]
    assert result.steps == 7 and len(spy.seen) == 7
    assert sum(len(labels) for _, labels in spy.seen) == 20 + 2 * 4  # a pass of 20 images, then 2 batches of 4
    for pixels, labels in spy.seen:  # bright images (label 0) are above the processor's mean, dark ones below
        assert ((pixels.mean(dim=(1, 2, 3)) > 0) == (labels == 0)).all()
    assert "accuracy" in result.history[-1] and len(result.history) == 2


def test_a_broken_file_in_a_streaming_imagefolder_is_skipped_and_counted(vit_dir, tmp_path):
    """Regression: datasets decoded the image column itself and raised on a broken JPEG inside its iterator;
    the stream is now read undecoded, so the file is skipped and counted like any undecodable example."""
    datasets = pytest.importorskip("datasets")
    folder = write_folder(tmp_path / "pngs", *two_class_images(n=8))
    (folder / "bright" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    stream = datasets.load_dataset("imagefolder", data_dir=str(folder), streaming=True)["train"]
    clf, spy = _classifier(vit_dir), _Kill(key="pixel_values")
    data = clf.training_data(stream, None, clf.default_config())
    clf.fit(stream, callbacks=[spy], **_opts(tmp_path / "run", max_steps=2, shuffle_buffer=0))
    assert sum(len(labels) for _, labels in spy.seen) == 8  # the 8 good images: 2 steps of 4
    list(data.train)  # a full pass of the same stream through the same reader
    assert data.train.skipped == 1


def test_streaming_imagefolder_without_max_steps_says_so(vit_dir, image_stream, tmp_path):
    with pytest.raises(ValueError, match="max_steps"):
        _classifier(vit_dir).fit(image_stream(), **_opts(tmp_path / "run"))


def test_linear_probe_on_a_stream_writes_feature_shards_as_it_passes(vit_dir, image_stream, tmp_path, monkeypatch):
    from transferkit.common import features

    monkeypatch.setattr(features, "SHARD_ROWS", 8)  # 20 images: shards of 8, 8 and 4 rows
    clf = _classifier(vit_dir, "linear_probe")
    result = clf.fit(image_stream(), eval=image_stream(), **_opts(tmp_path / "run", epochs=3))["linear_probe"]
    shards = features.ShardedFeatures(tmp_path / "run" / "features" / "stream" / "train")
    assert [len(s) for s in shards.shards] == [8, 8, 4]
    rows = list(image_stream())  # the stream's own order: labels and encoder outputs row by row
    assert shards.labels.tolist() == [r["label"] for r in rows]
    with torch.no_grad():
        expected = clf.encoder(**clf.prepare_inputs([r["image"] for r in rows[:5]]))
    assert torch.allclose(shards.__getitems__(list(range(5)))["features"],
                          expected, atol=1e-5)
    assert result.steps == 3 * 5 and len(result.history) == 3 and "accuracy" in result.history[-1]


def test_lp_ft_on_a_stream_probes_for_its_epochs_then_fine_tunes_for_max_steps(vit_dir, image_stream, tmp_path):
    results = _classifier(vit_dir, "lp_ft").fit(image_stream(), **_opts(tmp_path / "run", max_steps=6, probe_epochs=2))
    assert results["linear_probe"].steps == 2 * 5 and results["finetune"].steps == 6  # 20 images in batches of 4


@pytest.mark.parametrize("buffer", [0, 6])  # 0: the source's state_dict; 6: the pass read again up to the position
def test_streaming_imagefolder_killed_after_a_step_checkpoint_resumes_exactly(vit_dir, image_stream, tmp_path, buffer):
    opts = _opts(tmp_path / "killed", max_steps=8, save_steps=3, shuffle_buffer=buffer)
    whole = _classifier(vit_dir)
    whole.fit(image_stream(), **{**opts, "output_dir": str(tmp_path / "whole")})
    with pytest.raises(KeyboardInterrupt):
        _classifier(vit_dir).fit(image_stream(), callbacks=[_Kill(kill_at=7, key="pixel_values")], **opts)
    resumed = _classifier(vit_dir)
    counter = _Kill(key="pixel_values")
    result = resumed.fit(image_stream(), resume=True, callbacks=[counter], **opts)["finetune"]
    assert result.steps == 8
    assert counter.batches == 2  # only steps 7-8: it went on from the step-6 checkpoint rather than starting again
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_audio_stream_of_pairs_trains_with_crops_of_max_seconds(tmp_path):
    from test_audio_models import SR, tiny_wav2vec2, tones

    from transferkit.audio import AudioClassifier

    waves, labels = tones(n=12)  # 1600 to 3360 samples
    clf = AudioClassifier.from_pretrained(str(tiny_wav2vec2(tmp_path / "w2v")), labels=["hi", "lo"])
    spy = _Kill(key="input_values")
    result = clf.fit(_Iterable(list(zip(waves, labels))), callbacks=[spy], max_seconds=1600 / SR,
                     **_opts(tmp_path / "run", max_steps=4, shuffle_buffer=0))["finetune"]
    assert result.steps == 4
    assert max(x.shape[-1] for x, _ in spy.seen) == 1600  # every clip cropped to max_seconds
    order = [lab for _, batch in spy.seen for lab in batch.tolist()]  # unshuffled: the stream's own order
    assert order == [clf.label2id[t] for t in labels + labels[:4]]
