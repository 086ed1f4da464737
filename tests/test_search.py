"""strategy="auto": the recipe search picks from a dev split, never sees eval data, and resumes after a kill."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.common import load_encoder
from transferkit.common.search import stratified_split
from transferkit.vision import ImageClassifier

# Only the search needs optuna: the label curve, the split and the export run without it.
# (Regression: a module-level importorskip skipped the label-curve tests too.)
needs_optuna = pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                                  reason="the recipe search needs optuna (pip install '.[search]')")

FAST = {"epochs": 3, "batch_size": 8, "progress": False, "plot": False}


def _frozen_random_encoder():
    """Random features that already separate bright from dark images: a probe needs nothing more."""
    from transformers import ViTImageProcessor

    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.Tanh())
    proc = ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return load_encoder(body, feature_dim=16, processor=proc)


def _images(n=40, seed=0):
    rng = np.random.default_rng(seed)
    imgs = [np.clip(rng.normal(190 if i % 2 == 0 else 60, 25, (8, 8, 3)), 0, 255).astype(np.uint8) for i in range(n)]
    return imgs, ["bright" if i % 2 == 0 else "dark" for i in range(n)]


def test_stratified_split_is_disjoint_seeded_and_keeps_every_class():
    labels = ["a"] * 10 + ["b"] * 5
    tr, dev = stratified_split(labels, 0.2, seed=3)
    assert set(tr).isdisjoint(dev) and sorted([*tr, *dev]) == list(range(15))
    assert sorted(labels[i] for i in dev) == ["a", "a", "b"]
    assert (tr == stratified_split(labels, 0.2, seed=3)[0]).all()
    with pytest.raises(ValueError, match="at least 2 per class"):
        stratified_split(["a", "a", "b"], 0.2, seed=0)


@needs_optuna
def test_auto_picks_the_probe_when_the_frozen_features_already_separate(tmp_path):
    train = _images()
    clf = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="auto")
    clf.fit(train, output_dir=str(tmp_path), n_trials=6, time_budget=300, **FAST)
    rows = list(csv.DictReader(open(tmp_path / "trials.csv")))
    assert len(rows) == 6 and {r["strategy"] for r in rows} == {"linear_probe", "finetune", "lp_ft", "partial", "llrd", "lora"}
    best = max(float(r["dev_score"]) for r in rows if r["dev_score"])
    recipe = clf.train_info["recipe"]
    assert recipe["strategy"] == "linear_probe" and recipe["dev_score"] == best
    assert clf.strategy.name == "linear_probe"  # the kept trial's model
    assert (tmp_path / "search.png").exists()
    assert json.loads((tmp_path / "transferkit-run.json").read_text())["recipe"]["strategy"] == "linear_probe"
    assert "linear_probe" in (clf.save(tmp_path / "model") / "README.md").read_text()


@needs_optuna
def test_trials_never_see_the_eval_data(tmp_path):
    train, held_out = _images(40, seed=0), _images(20, seed=1)
    clf = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="auto")
    clf.fit(train, held_out, output_dir=str(tmp_path), n_trials=2, search_strategies=["linear_probe", "finetune"],
            retrain=True, **FAST)
    for trial in sorted((tmp_path / "trials").iterdir()):
        run = json.loads((trial / "transferkit-run.json").read_text())
        assert (run["train_examples"], run["eval_examples"]) == (32, 8)  # the dev split of train, not held_out
    assert clf.train_info["eval_examples"] == 20  # only the final fit sees it, to pick its best epoch


@needs_optuna
def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path, monkeypatch):
    import optuna

    from transferkit.common import search

    train = _images()
    real, calls = search.suggest, {"n": 0}

    def dies_on_the_third(trial, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(trial, *a, **k)

    monkeypatch.setattr(search, "suggest", dies_on_the_third)
    clf = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="auto")
    with pytest.raises(KeyboardInterrupt):
        clf.fit(train, output_dir=str(tmp_path), n_trials=4, search_strategies=["linear_probe", "finetune"], **FAST)
    study = optuna.load_study(study_name="recipe", storage=f"sqlite:///{tmp_path / 'search.db'}")
    first = {t.number: t.params for t in study.trials
             if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)}
    assert len(first) == 2

    monkeypatch.setattr(search, "suggest", real)
    ran = {"n": 0}

    def counting(trial, *a, **k):
        ran["n"] += 1
        return real(trial, *a, **k)

    monkeypatch.setattr(search, "suggest", counting)
    clf = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="auto")
    clf.fit(train, output_dir=str(tmp_path), n_trials=4, search_strategies=["linear_probe", "finetune"], retrain=True,
            **FAST)
    study = optuna.load_study(study_name="recipe", storage=f"sqlite:///{tmp_path / 'search.db'}")
    ran_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = {t.number: t.params for t in study.trials if t.state in ran_states}
    assert len(done) == 4 and all(done[n] == p for n, p in first.items())
    assert ran["n"] == 2 + 1  # the two missing trials, then the chosen recipe's final fit


def test_label_curve_has_a_point_per_budget_strategy_and_seed(tmp_path):
    from transferkit.common.curve import label_curve

    clf = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="linear_probe")
    points = label_curve(clf, _images(40, seed=0), _images(20, seed=1), out_dir=tmp_path, budgets=(1, 5, None),
                         strategies=("linear_probe", "finetune"), seeds=(0, 1), progress=False, epochs=2, batch_size=8)
    keys = {(p["labels_per_class"], p["method"], p["seed"]) for p in points}
    assert keys == {(b, m, s) for b in (1, 5, "all") for m in ("linear_probe", "finetune", "reference") for s in (0, 1)}
    assert len(points) == 18 and all(0.0 <= p["accuracy"] <= 1.0 for p in points)
    assert {p["train_examples"] for p in points} == {2, 10, 40}
    assert (tmp_path / "curve.png").exists() and "linear_probe" in (tmp_path / "curve.md").read_text()
    # with every label, bright vs dark is easy for the probe and for pixels
    assert all(p["accuracy"] == 1.0 for p in points if p["labels_per_class"] == "all" and p["method"] != "finetune")


@needs_optuna
def test_without_retraining_the_best_trial_is_kept(tmp_path):
    clf = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="auto")
    results = clf.fit(_images(), output_dir=str(tmp_path), n_trials=2, retrain=False,
                      search_strategies=["linear_probe", "finetune"], **FAST)
    assert clf.train_info["recipe"]["strategy"] == clf.strategy.name
    assert list(results) == [s.name for s in clf.strategy.stages()]
    assert clf.evaluate(_images(20, seed=1))["accuracy"] == 1.0


@needs_optuna
def test_retraining_without_eval_runs_for_the_best_trials_epochs(tmp_path):
    """No eval data to pick an epoch on: the retrain stops where the chosen trial peaked on dev."""
    clf = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="auto")
    results = clf.fit(_images(), output_dir=str(tmp_path), n_trials=2, search_strategies=["finetune"], retrain=True,
                      **{**FAST, "epochs": 4})
    recipe = clf.train_info["recipe"]
    best = next(r for r in csv.DictReader(open(tmp_path / "trials.csv")) if float(r["lr"]) == recipe["lr"])
    assert recipe["epochs"] == int(best["best_epoch"]) == len(results["finetune"].history)
    assert 1 <= recipe["epochs"] <= 4


def test_export_of_a_module_encoder_keeps_its_processor(tmp_path):
    """Regression: a non-Hugging-Face export kept only the weights, so a processor changed after loading
    (a searched input size, other normalisation) came back as the spec's default."""
    enc = _frozen_random_encoder()
    enc.processor.image_mean = [0.25, 0.5, 0.75]
    clf = ImageClassifier(enc, labels=["bright", "dark"], strategy="linear_probe")
    clf.fit(_images(), output_dir=str(tmp_path / "run"), **FAST)
    folder = clf.save(tmp_path / "model")
    body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.Tanh())
    again = ImageClassifier.load(folder, encoder=body)
    assert list(again.encoder.processor.image_mean) == [0.25, 0.5, 0.75]
    test = _images(6, seed=2)[0]
    assert torch.allclose(again.logits(test), clf.logits(test), atol=1e-6)


def _small_cnn():
    """A global-pooling CNN with a 16 px input: it also runs at 32 px, so the search may try that."""
    from transformers import ViTImageProcessor

    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    proc = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return load_encoder(body, feature_dim=8, processor=proc)


@needs_optuna
def test_first_trials_use_the_domains_defaults_unless_the_user_set_rates(tmp_path):
    from transferkit.common import TrainConfig

    clf = ImageClassifier(_small_cnn(), labels=["bright", "dark"], strategy="auto")
    assert clf.search_defaults("finetune", TrainConfig()) == {"augment": True, "image_size": 32, "lr": 5e-4,
                                                             "head_lr": 5e-3}
    assert clf.search_defaults("finetune", TrainConfig(lr=1e-4)) == {"augment": True, "image_size": 32, "head_lr": 5e-3}
    assert clf.search_defaults("linear_probe", TrainConfig()) == {"augment": True, "image_size": 32}
    vit_like = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="auto")
    assert vit_like.search_defaults("finetune", TrainConfig()) == {"augment": True}  # flattening: one input size
    clf.fit(_images(), output_dir=str(tmp_path), n_trials=2, search_strategies=["linear_probe", "finetune"],
            retrain=False, **FAST)
    rows = {r["strategy"]: r for r in csv.DictReader(open(tmp_path / "trials.csv"))}
    assert float(rows["linear_probe"]["head_lr"]) == 1e-2  # a probe's rate: ten times the fine-tuning head's
    # the probe on cached features runs its own, longer epoch count (30), every epoch (no early stopping)
    assert rows["linear_probe"]["probe_epochs"] == "30" and not rows["finetune"]["probe_epochs"]
    probe_dir = tmp_path / "trials" / f"{int(rows['linear_probe']['trial']):03d}"
    assert len((probe_dir / "metrics.jsonl").read_text().splitlines()) == 30
    assert (float(rows["finetune"]["lr"]), float(rows["finetune"]["head_lr"])) == (5e-4, 5e-3)
    assert {rows[s]["image_size"] for s in rows} == {"32"}


@needs_optuna
def test_a_kept_trial_is_in_the_run_folder_with_its_searched_input_size(tmp_path):
    """Regression: keeping the best trial left no checkpoint or run file behind, and ``from_run`` rebuilt
    the encoder with the spec's processor, not the searched input size."""
    clf = ImageClassifier(_small_cnn(), labels=["bright", "dark"], strategy="auto")
    clf.fit(_images(), output_dir=str(tmp_path), n_trials=2, search_strategies=["finetune"], retrain=False, **FAST)
    assert clf.encoder.processor.size == {"height": 32, "width": 32}
    back = ImageClassifier.from_run(tmp_path, encoder=_small_cnn())
    assert back.encoder.processor.size == {"height": 32, "width": 32}
    test = _images(10, seed=2)[0]
    assert torch.equal(back.logits(test), clf.logits(test))


def test_curve_probe_points_encode_once_and_equal_a_direct_fit(tmp_path):
    """Probe points train heads on rows of one feature matrix: the encoder runs once over train and once
    over test for the whole curve, and a point's accuracy equals a plain fit on the same subset."""
    from transferkit.common.curve import budget_subset, label_curve

    train, test = _images(40, seed=0), _images(20, seed=1)
    # labels that the features separate only in part: accuracies below 1 make the comparison mean something
    noisy = (train[0], [lab if i % 5 else ("dark" if lab == "bright" else "bright") for i, lab in enumerate(train[1])])
    clf = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="linear_probe")
    calls = {"rows": 0}
    body = clf.encoder.module
    body.register_forward_hook(lambda m, args, out: calls.__setitem__("rows", calls["rows"] + len(out)))
    points = label_curve(clf, noisy, test, out_dir=tmp_path, budgets=(2, 10), strategies=("linear_probe",),
                         seeds=(0, 1), reference=False, progress=False, epochs=3, batch_size=8, head_lr=0.05)
    assert calls["rows"] == 40 + 20  # every training and test image once, for 4 points
    direct = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="linear_probe")
    idx = budget_subset(noisy[1], 10, seed=1)
    direct.fit(([noisy[0][i] for i in idx], [noisy[1][i] for i in idx]), output_dir=str(tmp_path / "direct"), seed=1,
               epochs=3, batch_size=8, head_lr=0.05, progress=False, plot=False)
    point = next(p for p in points if p["labels_per_class"] == 10 and p["seed"] == 1)
    assert point["accuracy"] == direct.evaluate(test)["accuracy"]


@needs_optuna
def test_a_trial_running_when_the_budget_ends_is_cut_at_its_next_epoch(tmp_path, monkeypatch):
    """The search's clock reads one second later at every look: a 30-second budget ends inside the second
    trial, which stops at its next epoch (pruned) instead of running its 100 epochs."""
    import optuna

    from transferkit.common import search

    class Clock:
        now = 0.0

        def perf_counter(self):
            self.now += 1.0
            return self.now

    monkeypatch.setattr(search, "time", Clock())
    clf = ImageClassifier(_frozen_random_encoder(), labels=["bright", "dark"], strategy="auto")
    clf.fit(_images(), output_dir=str(tmp_path), n_trials=2, search_strategies=["linear_probe", "finetune"],
            time_budget=30.0, trial_patience=1000, **{**FAST, "epochs": 100})
    study = optuna.load_study(study_name="recipe", storage=f"sqlite:///{tmp_path / 'search.db'}")
    probe, finetune = sorted(study.trials, key=lambda t: t.number)
    # the first trial runs to its end whatever the clock says: a search always has a completed trial
    assert probe.state == optuna.trial.TrialState.COMPLETE and probe.params["strategy"] == "linear_probe"
    assert finetune.state == optuna.trial.TrialState.PRUNED and finetune.params["strategy"] == "finetune"
    assert 0 < max(finetune.intermediate_values) < 100


@needs_optuna
def test_trials_csv_lists_only_trials_that_ran(tmp_path):
    import optuna

    from transferkit.common.search import _write_trials

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"strategy": "linear_probe", "head_lr": 0.01})
    study.enqueue_trial({"strategy": "finetune", "head_lr": 0.001})  # still queued when the budget ended
    study.optimize(lambda t: t.suggest_float("head_lr", 1e-4, 1e-1) + 0 * len(t.suggest_categorical(
        "strategy", ["linear_probe", "finetune"])), n_trials=1)
    _write_trials(study, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "trials.csv")))
    assert [(r["trial"], r["state"], r["strategy"]) for r in rows] == [("0", "complete", "linear_probe")]
