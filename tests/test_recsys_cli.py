"""recsys CLI and configs: every flag comes from a dataclass, a CSV round trip, validation, config == keywords."""

import argparse
import dataclasses
import inspect
import json
import re
import typing

import numpy as np
import pandas as pd
import pytest

from transferkit.common.cli import main
from transferkit.recsys import (
    ALSConfig,
    BlendConfig,
    BPRConfig,
    ConfidenceConfig,
    EASEConfig,
    EvaluateConfig,
    FactorizationConfig,
    InteractionColumns,
    Interactions,
    ItemKNNConfig,
    LMFConfig,
    RecommendConfig,
    WarmStartConfig,
    pretrain,
    warm_start,
)
from transferkit.recsys.cli import (
    EvaluateArgs,
    PretrainArgs,
    PushTablesArgs,
    RecommendArgs,
    WarmStartArgs,
    register,
)

# the dataclasses behind each verb, stated here rather than read from the CLI module
VERB_CONFIGS = {
    "pretrain": [PretrainArgs, InteractionColumns, ConfidenceConfig, FactorizationConfig, ALSConfig, BPRConfig,
                 LMFConfig, ItemKNNConfig, EASEConfig],
    "warm-start": [WarmStartArgs, InteractionColumns, WarmStartConfig],
    "recommend": [RecommendArgs, InteractionColumns, RecommendConfig],
    "evaluate": [EvaluateArgs, InteractionColumns, EvaluateConfig],
    "push": [PushTablesArgs],
}
ALIASES = {"recommend": {"-n"}}  # short forms of a field's flag


def _help(verb, capsys):
    parser = argparse.ArgumentParser(prog="recsys")
    register(parser)
    with pytest.raises(SystemExit):
        parser.parse_args([verb, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("verb", list(VERB_CONFIGS))
def test_the_flags_of_each_verb_are_the_fields_of_its_dataclasses(verb, capsys):
    text = _help(verb, capsys)
    options = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", text.split("defaults of the model settings")[0]))
    expected = {"-h", "--help", *ALIASES.get(verb, ())}
    for cls in VERB_CONFIGS[verb]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            assert flag in options, (verb, cls.__name__, f.name)
            expected |= {flag, "--no-" + flag[2:]} if hints[f.name] in (bool, bool | None) else {flag}
    assert options == expected  # and nothing else: no hand-written option


def test_the_demo_verb_is_gone(capsys):
    parser = argparse.ArgumentParser(prog="recsys")
    register(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["demo"])
    assert "invalid choice: 'demo'" in capsys.readouterr().err


def _write_events(tmp_path):
    """Two groups of 4 users, each group on its own 4 items; user j of a group holds out item j."""
    train, test = [], []
    for g in range(2):
        for j in range(4):
            for m in range(4):
                (test if m == j else train).append({"uid": f"u{g}{j}", "sku": f"i{4 * g + m}", "clicks": 1 + m})
    pd.DataFrame(train).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(test).to_csv(tmp_path / "test.csv", index=False)
    return pd.DataFrame(train)


def _run(argv, capsys):
    assert main(["recsys", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_pretrain_recommend_evaluate_round_trip(tmp_path, capsys):
    train = _write_events(tmp_path)
    cols = ["--user", "uid", "--item", "sku", "--weight", "clicks"]
    out = _run(["pretrain", "--data", str(tmp_path / "train.csv"), *cols, "--factors", "2", "--iterations", "10",
                "--num-threads", "1", "--out", str(tmp_path / "t")], capsys)
    assert out == {"tables": str(tmp_path / "t"), "users": 8, "items": 8}
    resolved = json.loads((tmp_path / "t" / "config.json").read_text())
    assert resolved["config"] == "ALSConfig" and resolved["factors"] == 2 and resolved["regularization"] == 0.01
    assert resolved["columns"] == {"user": "uid", "item": "sku", "weight": "clicks", "time": None}

    recs = _run(["recommend", "--tables", str(tmp_path / "t"), "--users", "u00", "u13", "--history",
                 str(tmp_path / "train.csv"), *cols, "-n", "3"], capsys)
    for user, held_out in (("u00", "i0"), ("u13", "i7")):
        items = [r["item"] for r in recs[user]]
        seen = set(train.loc[train.uid == user, "sku"])
        assert len(items) == 3 and not seen & set(items)
        assert items[0] == held_out  # the group's one item the user has not seen ranks first

    metrics = _run(["evaluate", "--tables", str(tmp_path / "t"), "--train", str(tmp_path / "train.csv"),
                    "--test", str(tmp_path / "test.csv"), *cols, "--k", "2"], capsys)
    assert 0.0 <= metrics["ndcg@2"] <= 1.0 and metrics["ndcg@2"] == pytest.approx(1.0)
    assert metrics["n_users"] == 8 and metrics["filter_seen"] is True

    unfiltered = _run(["evaluate", "--tables", str(tmp_path / "t"), "--train", str(tmp_path / "train.csv"),
                       "--test", str(tmp_path / "test.csv"), *cols, "--k", "2", "--no-filter-seen"], capsys)
    assert unfiltered["filter_seen"] is False and unfiltered["ndcg@2"] < metrics["ndcg@2"]


def test_warm_start_verb_takes_its_config(tmp_path, capsys):
    _write_events(tmp_path)
    cols = ["--user", "uid", "--item", "sku"]
    _run(["pretrain", "--data", str(tmp_path / "train.csv"), *cols, "--model", "bpr", "--factors", "2",
          "--learning-rate", "0.05", "--num-threads", "1", "--out", str(tmp_path / "t")], capsys)
    _run(["warm-start", "--tables", str(tmp_path / "t"), "--data", str(tmp_path / "test.csv"), *cols,
          "--iterations", "2", "--num-threads", "1", "--no-keep-old", "--out", str(tmp_path / "w")], capsys)
    resolved = json.loads((tmp_path / "w" / "config.json").read_text())
    assert resolved["config"] == "WarmStartConfig" and resolved["iterations"] == 2 and resolved["keep_old"] is False
    meta = json.loads((tmp_path / "w" / "tables.json").read_text())["meta"]
    assert meta["learning_rate"] == 0.05 and meta["transfer"] == "warm_start"  # the pretrained settings carry on


@pytest.mark.parametrize(("model", "flags"), [("itemknn", ["--kind", "bm25", "--neighbors", "5"]),
                                              ("ease", ["--regularization", "1.0"])])
def test_item_item_models_round_trip_through_the_cli(tmp_path, capsys, model, flags):
    train = _write_events(tmp_path)
    cols = ["--user", "uid", "--item", "sku", "--weight", "clicks"]
    _run(["pretrain", "--data", str(tmp_path / "train.csv"), *cols, "--model", model, *flags,
          "--confidence", "log", "--out", str(tmp_path / "m")], capsys)
    resolved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert resolved["model"] == model and resolved["confidence"] == "log"
    recs = _run(["recommend", "--tables", str(tmp_path / "m"), "--users", "u00", "u13", "--history",
                 str(tmp_path / "train.csv"), *cols, "-n", "1"], capsys)
    assert recs["u00"][0]["item"] == "i0" and recs["u13"][0]["item"] == "i7"
    assert not set(train.loc[train.uid == "u00", "sku"]) & {r["item"] for r in recs["u00"]}
    metrics = _run(["evaluate", "--tables", str(tmp_path / "m"), "--train", str(tmp_path / "train.csv"),
                    "--test", str(tmp_path / "test.csv"), *cols, "--k", "1"], capsys)
    assert metrics["ndcg@1"] == pytest.approx(1.0)
    assert "--factors: not a setting of --model" in _error(["recsys", "pretrain", "--data", str(tmp_path / "train.csv"), *cols, "--model", model,
              "--factors", "4", "--out", str(tmp_path / "x")], capsys)


def _error(argv: list[str], capsys) -> str:
    """The one ``error:`` line of a command the CLI refuses (exit status 2)."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_warm_start_verb_trains_on_the_old_period_from_history(tmp_path, capsys):
    _write_events(tmp_path)
    cols = ["--user", "uid", "--item", "sku"]
    _run(["pretrain", "--data", str(tmp_path / "train.csv"), *cols, "--factors", "2", "--num-threads", "1",
          "--out", str(tmp_path / "t")], capsys)
    warm = ["warm-start", "--tables", str(tmp_path / "t"), "--data", str(tmp_path / "test.csv"), *cols,
            "--iterations", "1", "--num-threads", "1", "--old-weight", "0.5", "--out", str(tmp_path / "w")]
    assert "pass them with --history" in _error(["recsys", *warm], capsys)
    _run([*warm, "--history", str(tmp_path / "train.csv")], capsys)
    meta = json.loads((tmp_path / "w" / "tables.json").read_text())["meta"]
    assert meta["old_weight"] == 0.5 and meta["half_life"] is None


def test_a_flag_of_another_model_is_refused(tmp_path, capsys):
    _write_events(tmp_path)
    assert "--alpha: not a setting of --model bpr" in _error(["recsys", "pretrain", "--data", str(tmp_path / "train.csv"), "--user", "uid", "--item", "sku",
              "--model", "bpr", "--alpha", "2", "--out", str(tmp_path / "t")], capsys)


@pytest.mark.parametrize(
    ("cls", "values", "names"),
    [
        (ALSConfig, {"factors": 0}, ["factors"]),
        (ALSConfig, {"alpha": 0.0}, ["alpha"]),
        (ALSConfig, {"regularization": -1.0}, ["regularization"]),
        (BPRConfig, {"learning_rate": float("nan")}, ["learning_rate"]),
        (LMFConfig, {"iterations": 0}, ["iterations"]),
        (LMFConfig, {"num_threads": -1}, ["num_threads"]),
        (WarmStartConfig, {"iterations": -1}, ["iterations"]),
        (RecommendConfig, {"n": 0}, ["n"]),
        (EvaluateConfig, {"k": 0}, ["k"]),
        (EvaluateConfig, {"positive_threshold": -1.0}, ["positive_threshold"]),
        (InteractionColumns, {"user": ""}, ["user"]),
        (InteractionColumns, {"user": "id", "item": "id"}, ["user", "item"]),
        (InteractionColumns, {"weight": "item"}, ["item", "weight"]),
        (WarmStartConfig, {"old_weight": -0.5}, ["old_weight"]),
        (WarmStartConfig, {"half_life": 0.0}, ["half_life"]),
        (ConfidenceConfig, {"confidence": "tfidf"}, ["confidence"]),
        (ConfidenceConfig, {"half_life": -1.0}, ["half_life"]),
        (ItemKNNConfig, {"kind": "jaccard"}, ["kind"]),
        (ItemKNNConfig, {"neighbors": 0}, ["neighbors"]),
        (ItemKNNConfig, {"bm25_b": 1.5}, ["bm25_b"]),
        (EASEConfig, {"regularization": 0.0}, ["regularization"]),
        (BlendConfig, {"weights": []}, ["weights"]),
        (BlendConfig, {"half_lives": [0.0]}, ["half_lives"]),
        (BlendConfig, {"dev_fraction": 0.7}, ["dev_fraction"]),
    ],
)
def test_configs_reject_bad_values_naming_the_fields(cls, values, names):
    with pytest.raises(ValueError) as err:
        cls(**values)
    for name in names:
        assert re.search(rf"\b{name}\b", str(err.value)), (name, str(err.value))


def test_every_field_has_help_and_every_setting_a_default():
    for cls in {c for configs in VERB_CONFIGS.values() for c in configs}:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), (cls.__name__, f.name)
            if not cls.__name__.endswith("Args"):  # the files a verb reads and writes may be required
                assert f.default is not dataclasses.MISSING, (cls.__name__, f.name)


@pytest.fixture(scope="module")
def events():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 300), rng.integers(0, 20, 300)
    return Interactions.from_arrays([f"u{u}" for u in users], [f"i{i}" for i in items], weights=1 + users % 3)


@pytest.mark.parametrize("cls", [ALSConfig, BPRConfig, LMFConfig])
def test_a_config_gives_the_tables_the_keywords_give(events, cls):
    # the keyword call leaves the model's hyperparameters unset: the per-model defaults must agree
    by_keywords = pretrain(events, model=cls.model, factors=4, iterations=5, seed=3, num_threads=1)
    by_config = pretrain(events, config=cls(factors=4, iterations=5, seed=3, num_threads=1))
    np.testing.assert_array_equal(by_config.user_factors, by_keywords.user_factors)
    np.testing.assert_array_equal(by_config.item_factors, by_keywords.item_factors)
    assert by_config.meta.keys() == by_keywords.meta.keys()
    assert {k: by_config.meta[k] for k in cls().hyperparameters()} == cls().hyperparameters()


def test_keyword_defaults_are_the_config_defaults():
    for func, cls in ((pretrain, FactorizationConfig), (warm_start, WarmStartConfig)):
        params = inspect.signature(func).parameters
        for f in dataclasses.fields(cls):
            assert params[f.name].default == f.default, (func.__name__, f.name)


def test_warm_start_config_equals_keywords_and_mixing_raises(events):
    old = pretrain(events, factors=4, iterations=3, num_threads=1)
    new = Interactions.from_arrays(["u1", "u2", "new"], ["i1", "i9", "i1"])
    a = warm_start(old, new, iterations=2, num_threads=1)
    b = warm_start(old, new, config=WarmStartConfig(iterations=2, num_threads=1))
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    with pytest.raises(ValueError, match="config and iterations were both given"):
        warm_start(old, new, iterations=3, config=WarmStartConfig())
    with pytest.raises(ValueError, match="config and alpha, factors were both given"):
        pretrain(events, factors=8, alpha=2.0, config=ALSConfig())
    with pytest.raises(ValueError, match="ALSConfig, BPRConfig or LMFConfig"):
        pretrain(events, config=FactorizationConfig())
