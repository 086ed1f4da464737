"""Training under several processes, run for real: ``accelerate launch --cpu --num_processes 2`` (gloo).

One launch runs every scenario below in two processes with batch 4 each; the test then runs the
same scenarios in this process with batch 8 (the same global batch) and compares. Checked:

- the final weights match one process within float tolerance (image and audio classification,
  CTC, the recsys ``EmbeddingModel``);
- evaluation scores each of the 9 examples exactly once on every process (9 does not divide by 2,
  so Accelerate pads a shard; ``gather_for_metrics`` drops the padding again);
- the second process writes nothing in a run folder but its own random-generator states (a
  checkpoint needs them), and the linear probe's feature cache is written once, by the main
  process, and read by both (the second process never runs the encoder);
- a run killed after a mid-epoch step checkpoint resumes under two processes to the exact weights
  of the uninterrupted two-process run, training only the remaining batches.

This file is also the script the launch runs (``python tests/test_multiprocess.py <out> <vit> <w2v>``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SR = 16_000
LABELS = ["bright", "dark"]
KILLED = 86  # the exit status of a process the test kills


def _images(n, seed):
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import two_class_images

    return two_class_images(n, seed=seed)


def _waves(n, seed):
    """Clips of one length (no padding differs between a batch of 8 and two of 4), two tones."""
    rng = np.random.default_rng(seed)
    t = np.arange(1600) / SR
    waves = [(0.3 * np.sin(2 * np.pi * (300.0 if i % 2 else 2000.0) * t) + 0.01 * rng.standard_normal(1600))
             .astype(np.float32) for i in range(n)]
    return waves, ["lo" if i % 2 else "hi" for i in range(n)]


def _opts(out, batch, **kw):
    return {"output_dir": str(out), "epochs": 2, "batch_size": batch, "progress": False, "plot": False,
            "mixed_precision": "no", **kw}


class _Count:
    """Counts trained batches; with ``kill_at`` the process dies after that many, with no clean-up
    (``os._exit``, as under kill -9)."""

    def __new__(cls, kill_at=None):
        from transferkit.common import Callback

        class Count(Callback):
            def __init__(self):
                self.batches = 0

            def on_batch_end(self, trainer, loss):
                self.batches += 1
                if self.batches == kill_at:
                    os._exit(KILLED)

        return Count()


def image(out, vit, batch, **kw):
    from transferkit.vision import AugmentConfig, ImageClassifier

    torch.manual_seed(0)
    clf = ImageClassifier.from_pretrained(str(vit), labels=LABELS)
    result = clf.fit(_images(16, 0), eval=_images(9, 1), augment=AugmentConfig(crop_scale=(1.0, 1.0), hflip=False),
                     lr=1e-3, **_opts(out, batch, **kw))
    return clf.model, result["finetune"].history


def probe(out, vit, batch):
    from transferkit.vision import ImageClassifier

    torch.manual_seed(0)
    clf = ImageClassifier.from_pretrained(str(vit), labels=LABELS, strategy="linear_probe")
    calls = []
    clf.encoder.module.register_forward_hook(lambda *a: calls.append(1))
    result = clf.fit(_images(16, 0), eval=_images(9, 1), feature_cache=str(out / "features"), head_lr=5e-2,
                     **_opts(out / "run", batch))
    return clf.model, result["linear_probe"].history, len(calls)


def audio(out, w2v, batch):
    from transferkit.audio import AudioClassifier

    torch.manual_seed(0)
    clf = AudioClassifier.from_pretrained(str(w2v), labels=["lo", "hi"], mask_time_prob=0.0)
    result = clf.fit(_waves(16, 0), eval=_waves(9, 1), lr=1e-3, **_opts(out, batch))
    return clf.model, result["finetune"].history


def ctc(out, w2v, batch):
    from transferkit.audio import SpeechRecognizer

    waves, labels = _waves(16, 0)
    texts = ["ab" if x == "hi" else "ba" for x in labels]
    ev_waves, ev_labels = _waves(9, 1)
    torch.manual_seed(0)
    asr = SpeechRecognizer.from_pretrained(str(w2v), transcripts=texts, mask_time_prob=0.0)
    result = asr.fit((waves, texts), eval=(ev_waves, ["ab" if x == "hi" else "ba" for x in ev_labels]), lr=1e-3,
                     **_opts(out, batch))
    return asr.model, result["finetune"].history


def pretraining(out, w2v, batch):
    """wav2vec2 pretraining (masking differs per process, so it is compared across processes, not to one)."""
    from transferkit.audio.pretrain import pretrain

    waves, _ = _waves(8, 0)
    res = pretrain(waves, str(w2v), output_dir=out, num_negatives=4, mask_time_length=2, lr=1e-3,
                   **{k: v for k, v in _opts(out, batch).items() if k != "output_dir"})
    from transformers import Wav2Vec2ForPreTraining

    return Wav2Vec2ForPreTraining.from_pretrained(res.folder), res.result.history


def recsys(out, batch):
    from transferkit.common import TrainConfig
    from transferkit.recsys import EmbeddingModel, Interactions

    pairs = [(u, (u + d) % 9) for u in range(8) for d in (0, 3, 5, 7)]  # 32 distinct events (no merging)
    train = Interactions.from_arrays([f"u{u}" for u, _ in pairs], [f"i{i}" for _, i in pairs])
    assert len(train) == 32
    model = EmbeddingModel(train.user_ids, train.item_ids, dim=4)
    cfg = TrainConfig(lr=0.05, weight_decay=0.0, warmup_ratio=0.0, **_opts(out, batch))
    model.fit(train, cfg, loss="bpr")
    return model, []


def _state(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------ the launched side
def _audit_writes(root: Path) -> list:
    """Every file this process creates, replaces or deletes under ``root``: Python-level opens for
    writing, renames and deletions (audit hooks), plus the writers that bypass them (torch.save,
    safetensors)."""
    import safetensors.torch

    writes: list = []
    root = str(root.resolve())

    def note(path):
        path = os.path.abspath(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else ""
        if path.startswith(root):
            writes.append(os.path.relpath(path, root))

    def hook(event, args):
        if event == "open" and (args[1] and any(c in args[1] for c in "wax+") or
                                args[1] is None and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
            note(args[0])
        elif event in ("os.rename", "os.remove", "shutil.rmtree"):
            note(args[1] if event == "os.rename" else args[0])

    def wrap(fn, arg=1):
        def wrapped(*a, **k):
            note(a[arg] if len(a) > arg else k.get("filename", k.get("f", "")))
            return fn(*a, **k)
        return wrapped

    sys.addaudithook(hook)
    torch.save = wrap(torch.save)
    safetensors.torch.save_file = wrap(safetensors.torch.save_file)
    safetensors.torch.save_model = wrap(safetensors.torch.save_model)
    import accelerate.utils.other

    accelerate.utils.other.safe_save_file = wrap(accelerate.utils.other.safe_save_file)
    return writes


def main(mode: str, out: Path, vit: Path, w2v: Path) -> None:
    from safetensors.torch import save_file

    from transferkit.audio.ctc import StreamingCTCEval
    from transferkit.common.metrics import ConfusionMatrix
    from transferkit.common.trainer import Trainer, process_state

    runs = out / "runs"
    writes = _audit_writes(runs)
    state = process_state()
    rank = state.process_index
    counts: dict = {}  # examples each evaluation scored on this process
    update, add = ConfusionMatrix.update, StreamingCTCEval.add

    def counting_update(self, labels, predicted):
        counts.setdefault(current, []).append(len(labels))
        return update(self, labels, predicted)

    def counting_add(self, refs, hyps):
        counts.setdefault(current, []).append(len(refs))
        return add(self, refs, hyps)

    ConfusionMatrix.update, StreamingCTCEval.add = counting_update, counting_add
    checksums: dict = {}  # the weights' sum after each epoch's training, before any best-epoch reload
    train_epoch = Trainer._train_epoch

    def summing_train_epoch(self, model, *args):
        row = train_epoch(self, model, *args)
        weights = self.accelerator.unwrap_model(model).parameters()
        checksums.setdefault(current, []).append(float(sum(p.detach().double().sum() for p in weights)))
        return row

    Trainer._train_epoch = summing_train_epoch
    report: dict = {"rank": rank, "world": state.num_processes, "seconds": {}}
    weights: dict = {}
    if mode == "resume":  # new processes pick the killed run up
        current, counter = "resume", _Count()
        model, history = image(runs / "killed", vit, 4, save_steps=1, resume=True, callbacks=[counter])
        report |= {"batches": counter.batches, "history": history, "eval_counts": counts, "writes": sorted(set(writes))}
        (out / f"resume{rank}.json").write_text(json.dumps(report))
        if state.is_main_process:
            save_file(_state(model), str(out / "resumed.safetensors"))
        return
    for current, run in [("image", lambda: image(runs / "image", vit, 4, save_steps=1)),
                         ("probe", lambda: probe(runs / "probe", vit, 4)),
                         ("audio", lambda: audio(runs / "audio", w2v, 4)),
                         ("ctc", lambda: ctc(runs / "ctc", w2v, 4)),
                         ("pretraining", lambda: pretraining(runs / "pretraining", w2v, 4)),
                         ("recsys", lambda: recsys(runs / "recsys", 4))]:
        t0 = time.perf_counter()
        model, history, *extra = run()
        report["seconds"][current] = time.perf_counter() - t0
        weights |= {f"{current}/{k}": v for k, v in _state(model).items()}
        report[current] = {"history": history, "encoder_calls": extra[0] if extra else None}

    report["eval_counts"], report["writes"], report["checksums"] = counts, sorted(set(writes)), checksums
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    if state.is_main_process:
        save_file(weights, str(out / "weights.safetensors"))
    # 16 images / (2 x 4) = 2 steps per epoch, 4 in all. Both processes die in batch 2, before its
    # checkpoint: the newest is the step checkpoint after batch 1, in the middle of epoch 1.
    current = "killed"
    image(runs / "killed", vit, 4, save_steps=1, callbacks=[_Count(kill_at=2)])


if __name__ == "__main__":
    main(sys.argv[1], *map(Path, sys.argv[2:5]))
    sys.exit(0)


# ------------------------------------------------------------------------------------------ the test side
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    from conftest import tiny_vit
    from test_audio_models import tiny_wav2vec2

    root = tmp_path_factory.mktemp("multiprocess")
    vit, w2v = tiny_vit(root / "vit"), tiny_wav2vec2(root / "w2v")
    out = root / "out"
    out.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with socket.socket() as s:  # a free port for the processes to meet on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --multi_gpu is Accelerate's launcher for several processes; without a GPU they train on the CPU
    # over gloo. (--cpu --num_processes 2 would start one process: Accelerate reserves it for MPI.)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           __file__]
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "train", str(out), str(vit), str(w2v)], env=env, capture_output=True, text=True,
                          timeout=600)
    # Every scenario ran, then the killed run took both processes down.
    assert (out / "rank0.json").exists() and (out / "rank1.json").exists(), proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.returncode != 0 and f"exitcode  : {KILLED}" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    resumed = subprocess.run([*cmd, "resume", str(out), str(vit), str(w2v)], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-6000:]
    from safetensors.torch import load_file

    return {"root": root, "vit": vit, "w2v": w2v, "seconds": time.perf_counter() - t0,
            "reports": [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)],
            "resumed": [json.loads((out / f"resume{r}.json").read_text()) for r in (0, 1)],
            "weights": load_file(str(out / "weights.safetensors")),
            "resumed_weights": load_file(str(out / "resumed.safetensors"))}


def _close(two: dict, name: str, model) -> None:
    one = _state(model)
    assert {k.split("/", 1)[1] for k in two if k.startswith(name + "/")} == set(one)
    for k, v in one.items():
        torch.testing.assert_close(two[f"{name}/{k}"], v, rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")


def test_two_processes_train_as_one_with_the_same_global_batch(launched, tmp_path):
    two, (r0, r1) = launched["weights"], launched["reports"]
    assert r0["world"] == r1["world"] == 2
    model, history = image(tmp_path / "image", launched["vit"], 8)
    _close(two, "image", model)
    for h2, h1 in zip(r0["image"]["history"], history):
        assert h2["accuracy"] == h1["accuracy"] and h2["eval_loss"] == pytest.approx(h1["eval_loss"], rel=1e-4)
    model, history, _ = probe(tmp_path / "probe", launched["vit"], 8)
    _close(two, "probe", model)
    model, history = audio(tmp_path / "audio", launched["w2v"], 8)
    _close(two, "audio", model)
    model, history = ctc(tmp_path / "ctc", launched["w2v"], 8)
    _close(two, "ctc", model)
    assert [h["wer"] for h in r0["ctc"]["history"]] == [h["wer"] for h in history]
    model, _ = recsys(tmp_path / "recsys", 8)
    _close(two, "recsys", model)


def test_processes_keep_identical_replicas(launched):
    """Regression: pretraining called the model inside Accelerate's wrapper, so the processes' gradients
    were never averaged and each process drifted on its own data."""
    r0, r1 = launched["reports"]
    for name in ("image", "probe", "audio", "ctc", "pretraining", "recsys"):
        assert len(r0["checksums"][name]) == 2 and r0["checksums"][name] == r1["checksums"][name], name


def test_evaluation_scores_every_example_once_on_every_process(launched):
    """Regression: the metrics were compared after the loop over tasks, so only the probe's were compared."""
    r0, r1 = launched["reports"]
    for name in ("image", "audio", "ctc", "probe"):
        for report in (r0, r1):
            # 9 eval examples, 2 epochs: each evaluation adds up to 9 (the padded copy dropped), on both ranks.
            assert sum(report["eval_counts"][name]) == 2 * 9, (name, report["rank"], report["eval_counts"][name])
        # The same metrics on both ranks, every epoch, timings aside.
        assert len(r0[name]["history"]) == len(r1[name]["history"]) == 2, name
        for a, b in zip(r0[name]["history"], r1[name]["history"]):
            assert a == {**b, "seconds": a["seconds"], "samples_per_s": a["samples_per_s"]}, name


def test_only_the_main_process_writes_run_files_and_the_feature_cache_is_shared(launched):
    r0, r1 = launched["reports"]
    # The second process writes only its own generator states, which its resume reads back.
    assert r1["writes"] and all(Path(w).name in ("rng-1.json", "random_states_1.pkl") for w in r1["writes"]), r1["writes"]
    main = r0["writes"]
    assert "image/config.json" in main and "image/transferkit-run.json" in main and "image/metrics.jsonl" in main
    cache = [w for w in main if w.startswith("probe/features/") and w.endswith(".safetensors")]
    assert len(cache) == 2  # train and eval features, each written once
    assert r0["probe"]["encoder_calls"] > 0 and r1["probe"]["encoder_calls"] == 0  # rank 1 read the cache


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(launched):
    (r0, r1), w, resumed = launched["resumed"], launched["weights"], launched["resumed_weights"]
    assert r0["world"] == r1["world"] == 2
    assert r0["batches"] == r1["batches"] == 3  # of 4: resumed after batch 1, in new processes
    assert resumed.keys() == {k.split("/", 1)[1] for k in w if k.startswith("image/")}
    for k, v in resumed.items():  # the same run uninterrupted (save_steps=1 too)
        assert torch.equal(w["image/" + k], v), k
    uninterrupted = launched["reports"][0]["image"]["history"]
    assert [{**h, "seconds": 0, "samples_per_s": 0} for h in r0["history"]] == \
        [{**h, "seconds": 0, "samples_per_s": 0} for h in uninterrupted]
    assert all(Path(p).name in ("rng-1.json", "random_states_1.pkl") for p in r1["writes"]), r1["writes"]
