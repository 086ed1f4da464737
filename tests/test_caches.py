"""Decode and feature caches under a size budget (regression: the decode cache grew without bound and said
nothing of its size): least recently used entries are evicted, data sets too large are decoded per file."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest
import torch

from transferkit.common.cache_store import CacheFolder, parse_budget
from transferkit.common.decode_cache import DecodeCache, DecodedRows
from transferkit.common.features import FeatureCache

ROW = 1000  # bytes per decoded row below: (10, 100) uint8


def rows_of(value: int):
    return lambda i: np.full((10, 100), value, np.uint8)


def test_budgets_parse_sizes_fractions_and_the_environment(tmp_path, monkeypatch):
    assert parse_budget("20GB") == 20 * 10**9 and parse_budget("2 MiB") == 2 * 2**20 and parse_budget(1e6) == 10**6
    assert parse_budget("0.5", space=4000) == 2000
    with pytest.raises(ValueError, match="TRANSFERKIT_CACHE_BUDGET=20GB"):
        parse_budget("lots")
    monkeypatch.setenv("TRANSFERKIT_CACHE_BUDGET", "3kB")
    assert CacheFolder(tmp_path).budget == 3000 and CacheFolder(tmp_path, budget="5kB").budget == 5000


def test_a_cache_over_its_budget_evicts_the_least_recently_used_entry(tmp_path):
    from transferkit.common.cache_store import entries

    budget = int(2.5 * 10 * ROW)  # room for two data sets of 10 rows (and their headers), not three
    cache = DecodeCache(tmp_path, budget=budget)
    a = cache.fixed(("a",), 10, rows_of(1), (10, 100))
    (key_a,) = entries(tmp_path)
    time.sleep(0.01)
    cache.fixed(("b",), 10, rows_of(2), (10, 100))
    (key_b,) = set(entries(tmp_path)) - {key_a}
    assert cache.info().entries == 2 and cache.info().bytes > 20 * ROW
    time.sleep(0.01)
    again = DecodeCache(tmp_path, budget=budget)
    assert (again.fixed(("a",), 10, rows_of(9), (10, 100)) == a).all() and again.decoded == 0  # a read: a is newest
    time.sleep(0.01)
    c = again.fixed(("c",), 10, rows_of(3), (10, 100))
    after = set(entries(tmp_path))
    assert key_a in after and key_b not in after and len(after) == 2 and (c == 3).all()  # b, used longest ago, went
    assert again.fixed(("a",), 10, rows_of(9), (10, 100))[0, 0, 0] == 1  # a is still the stored one
    assert again.info().bytes <= again.info().budget


def test_a_data_set_larger_than_the_budget_is_decoded_per_read_with_one_warning(tmp_path, caplog):
    cache = DecodeCache(tmp_path / "c", budget=5 * ROW)
    calls = []

    def decode(i):
        calls.append(i)
        return np.full((10, 100), i, np.uint8)

    with caplog.at_level(logging.WARNING):
        rows = cache.fixed(("big",), 10, decode, (10, 100))
        cache.fixed(("big",), 10, decode, (10, 100))
    assert isinstance(rows, DecodedRows) and calls == [] and not (tmp_path / "c").exists()
    assert rows[3][0, 0] == 3 and rows[np.array([7, 2])][:, 0, 0].tolist() == [7, 2] and calls == [3, 7, 2]
    assert sum("exceed the decode cache's budget" in r.message for r in caplog.records) == 1
    # Rows of their own shapes: the estimate from the first rows decides.
    ragged = cache.rows(("big-ragged",), 10, lambda i: np.zeros((10, 100 + i), np.uint8), sample=2)
    assert isinstance(ragged, DecodedRows) and ragged[9].shape == (10, 109)


def test_rows_of_their_own_shapes_are_stored_and_read_back(tmp_path):
    cache = DecodeCache(tmp_path)
    rows = cache.rows(("shapes",), 40, lambda i: np.full((3, 2, 1 + i), i, np.uint8), sample=4)
    again = DecodeCache(tmp_path)
    back = again.rows(("shapes",), 40, lambda i: 1 / 0)
    assert again.decoded == 0 and cache.decoded == 40
    assert all(a.shape == (3, 2, 1 + i) and (a == i).all() and (b == a).all() for i, (a, b) in enumerate(zip(rows, back)))


def test_feature_cache_evicts_and_stores_nothing_too_large(tmp_path, caplog):
    from transferkit.common.cache_store import entries

    encoder = torch.nn.Linear(4, 8)
    data = [{"x": torch.full((4,), float(i)), "labels": torch.tensor(i % 2)} for i in range(16)]

    def collate(rows):
        return {"input": torch.stack([r["x"] for r in rows]), "labels": torch.stack([r["labels"] for r in rows])}

    class Enc(torch.nn.Module):
        def forward(self, input):
            return encoder(input)

    size = 16 * 8 * 4 + 16 * 8  # features + labels
    cache = FeatureCache(tmp_path, budget=int(1.5 * size) + 400)  # one entry (+ safetensors headers)
    f1, _ = cache.get_or_compute(Enc(), data, collate_fn=collate, key_parts=("one",), progress=False)
    time.sleep(0.01)
    f2, _ = cache.get_or_compute(Enc(), data[::-1], collate_fn=collate, key_parts=("two",), progress=False)
    assert len(entries(tmp_path)) == 1 and torch.equal(f2, f1.flip(0))
    small = FeatureCache(tmp_path / "small", budget=100)
    with caplog.at_level(logging.WARNING):
        f3, _ = small.get_or_compute(Enc(), data, collate_fn=collate, key_parts=("one",), progress=False)
    assert torch.equal(f3, f1) and not entries(tmp_path / "small")
    assert any("exceed the feature cache's budget" in r.message for r in caplog.records)


def _photos(root, n=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        label = "bright" if i % 2 else "dark"
        (root / label).mkdir(parents=True, exist_ok=True)
        arr = np.clip(rng.normal(190 if i % 2 else 60, 30, (20 + 2 * i, 24 + 3 * i, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / label / f"{i:02d}.jpg", quality=90)
    return root


def test_the_per_file_fallback_trains_the_same_weights(tmp_path, vit_dir, monkeypatch):
    from transferkit.common.cache_store import entries
    from transferkit.vision import ImageClassifier

    folder = _photos(tmp_path / "photos")
    weights = {}
    for budget in ("1GB", "2kB"):  # everything stored / nothing fits: every image decoded on every read
        monkeypatch.setenv("TRANSFERKIT_CACHE_BUDGET", budget)
        clf = ImageClassifier.from_pretrained(str(vit_dir), labels=["bright", "dark"], strategy="finetune")
        clf.fit(folder, eval=folder, epochs=1, batch_size=4, progress=False, plot=False, save_checkpoints=False,
                output_dir=str(tmp_path / f"run-{budget}"), decode_cache=str(tmp_path / f"cache-{budget}"), lr=1e-3)
        weights[budget] = {k: v.clone() for k, v in clf.model.state_dict().items()}
        stored = entries(tmp_path / f"cache-{budget}")
        assert (len([k for k in stored if not k.startswith("checked")]) > 0) == (budget == "1GB")
    assert weights["1GB"].keys() == weights["2kB"].keys()
    for k in weights["1GB"]:
        torch.testing.assert_close(weights["1GB"][k], weights["2kB"][k], atol=0, rtol=0)


def test_cache_info_and_clear_on_the_command_line(tmp_path, monkeypatch, capsys):
    from transferkit.common.cli import main

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    DecodeCache(None, budget="1MB").fixed(("a",), 10, rows_of(1), (10, 100))
    assert main(["cache", "info", "--json", "--budget", "1MB"]) == 0
    import json

    (info,) = json.loads(capsys.readouterr().out)
    assert info["entries"] == 1 and 10 * ROW < info["bytes"] < 11 * ROW and info["budget"] == 10**6
    assert info["root"] == str(tmp_path / "decoded")
    assert main(["cache", "clear"]) == 0
    assert "freed 10.1 KB" in capsys.readouterr().out and os.listdir(tmp_path / "decoded") == []
