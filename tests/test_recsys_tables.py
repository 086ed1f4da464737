"""Pretraining on implicit, EmbeddingTables round trips, and recommend() on every bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from transferkit.demos.recsys_world import checkerboard
from transferkit.recsys import EmbeddingTables, Interactions, popularity, pretrain
from transferkit.recsys.pretrain import MODELS

SETTINGS = {
    "als": {"factors": 4, "iterations": 15},
    "bpr": {"factors": 4, "iterations": 200, "learning_rate": 0.05},
    "lmf": {"factors": 4, "iterations": 60},
}


@pytest.fixture(scope="module")
def board():
    return checkerboard()


@pytest.fixture(scope="module")
def trained(board):
    inter, _ = board
    return {m: pretrain(inter, model=m, num_threads=1, seed=0, **SETTINGS[m]) for m in MODELS}


@pytest.mark.parametrize("model", MODELS)
def test_every_model_finds_each_users_missing_item(board, trained, model):
    inter, expected = board
    users = list(expected)
    ids, scores = trained[model].recommend(users, N=3)
    assert [ids[i, 0] for i in range(len(users))] == [expected[u] for u in users]
    assert (np.diff(scores, axis=1) <= 0).all()  # sorted best first
    # filter_seen: nothing the user already has comes back
    for row, u in enumerate(users):
        seen = {inter.item_ids[i] for i in inter.matrix[inter.user_index[u]].indices}
        assert not seen & set(ids[row])


@pytest.mark.parametrize("model", MODELS)
def test_bias_columns_follow_implicits_layout(trained, model):
    t = trained[model]
    assert t.factors == 4 and t.model == model
    if model == "bpr":  # users hold a constant 1 where items hold their bias
        np.testing.assert_array_equal(t.user_factors[:, -1], 1.0)
    if model == "lmf":  # users [.., 1, user bias], items [.., item bias, 1]
        np.testing.assert_array_equal(t.user_factors[:, -2], 1.0)
        np.testing.assert_array_equal(t.item_factors[:, -1], 1.0)


@pytest.mark.parametrize("model", MODELS)
def test_tables_round_trip_through_safetensors_and_json(tmp_path, board, trained, model):
    inter, expected = board
    t = trained[model]
    t.save(tmp_path / model)
    info = json.loads((tmp_path / model / "tables.json").read_text())
    assert info["model"] == model and info["item_ids"] == t.item_ids  # ints stay ints
    back = EmbeddingTables.load(tmp_path / model)
    np.testing.assert_array_equal(back.user_factors, t.user_factors)
    np.testing.assert_array_equal(back.item_factors, t.item_factors)
    np.testing.assert_array_equal(back.item_counts, t.item_counts)
    assert (back.user_ids, back.item_ids, back.meta) == (t.user_ids, t.item_ids, t.meta)
    users = list(expected)
    a = t.recommend(users, N=4, history=inter)
    b = back.recommend(users, N=4, history=inter)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])
    # loaded tables carry no history: filtering must be asked for explicitly
    with pytest.raises(ValueError, match="filter_seen=True needs the users' history"):
        back.recommend(users, N=4)


def test_ids_that_json_cannot_hold_are_rejected_at_save(tmp_path):
    t = EmbeddingTables(np.ones((1, 2)), np.ones((1, 2)), [("a", 1)], ["x"])
    with pytest.raises(ValueError, match="cannot be saved as JSON"):
        t.save(tmp_path)
    with pytest.raises(ValueError, match="no tables.json"):
        EmbeddingTables.load(tmp_path / "nothing")


def test_shape_mismatches_are_rejected():
    with pytest.raises(ValueError, match="2 rows but there are 3 user ids"):
        EmbeddingTables(np.ones((2, 2)), np.ones((1, 2)), ["a", "b", "c"], ["x"])
    with pytest.raises(ValueError, match="differ in width"):
        EmbeddingTables(np.ones((1, 2)), np.ones((1, 3)), ["a"], ["x"])
    with pytest.raises(ValueError, match="not unique"):
        EmbeddingTables(np.ones((2, 2)), np.ones((1, 2)), ["a", "a"], ["x"])


def test_unknown_user_errors_or_cold_starts(board, trained):
    inter, expected = board
    t = trained["als"]
    with pytest.raises(ValueError, match="not in the model.*unknown='cold_start'"):
        t.recommend(["stranger"], N=1)
    # a stranger with history is folded in: behaving like group-0 user u0 gives u0's answer
    u0_items = [inter.item_ids[i] for i in inter.matrix[inter.user_index["u0"]].indices]
    hist = Interactions.from_arrays(["stranger"] * len(u0_items), u0_items)
    ids, _ = t.recommend(["stranger"], N=1, history=hist, unknown="cold_start")
    assert ids[0, 0] == expected["u0"]
    # without any history the stranger gets the most popular items
    ids, scores = t.recommend(["stranger"], N=2, filter_seen=False, unknown="cold_start")
    counts = inter.item_counts()
    top = [inter.item_ids[i] for i in np.argsort(-counts, kind="stable")[:2]]
    assert ids[0].tolist() == top and scores[0, 0] == counts.max()


@pytest.mark.parametrize("model", MODELS)
def test_cold_start_fold_in_recovers_each_users_answer_for_every_model(board, trained, model):
    # a stranger with exactly user u's history must get u's missing item (bias columns held constant)
    inter, expected = board
    for user, answer in expected.items():
        items = [inter.item_ids[i] for i in inter.matrix[inter.user_index[user]].indices]
        history = Interactions.from_arrays(["stranger"] * len(items), items)
        ids, _ = trained[model].recommend(["stranger"], N=1, history=history, unknown="cold_start")
        assert ids[0, 0] == answer, user


def test_user_with_no_interactions_is_an_error_or_popularity(board):
    inter, _ = board
    # "ghost" is in the id space (the frame had a zero-weight row) but has no interactions
    frame = inter.to_frame()
    frame.loc[len(frame)] = ["ghost", 0, 0.0]
    with_ghost = Interactions.from_frame(frame, weight="weight")
    assert "ghost" in with_ghost.user_ids and with_ghost.user_counts()[with_ghost.user_index["ghost"]] == 0
    t = pretrain(with_ghost, factors=4, iterations=5, num_threads=1)
    with pytest.raises(ValueError, match="no interactions in training"):
        t.recommend(["ghost"], N=1)
    ids, _ = t.recommend(["ghost"], N=1, filter_seen=False, unknown="cold_start")
    assert ids[0, 0] == popularity(with_ghost).recommend(["u0"], N=1, filter_seen=False)[0][0, 0]


def test_candidates_unknown_items_and_padding(board, trained):
    inter, expected = board
    t = trained["als"]
    ids, _ = t.recommend(["u0"], N=2, filter_seen=False, items=[7, 8])
    assert set(ids[0]) == {7, 8}
    with pytest.raises(ValueError, match="item ids are not in the model"):
        t.recommend(["u0"], N=2, items=[0, "nope"])
    ids, _ = t.recommend(["u0"], N=2, items=[0, "nope"], unknown="cold_start")
    assert ids[0, 0] == 0 and ids[0, 1] is None  # "nope" skipped; only one candidate left
    # more slots than unseen items: padded with None / -inf
    ids, scores = t.recommend(["u0"], N=12)
    assert ids[0, :6].tolist().count(None) == 0 and ids[0, -1] is None and scores[0, -1] == -np.inf
    with pytest.raises(ValueError, match="N must be >= 1"):
        t.recommend(["u0"], N=0)


def test_batched_recommend_equals_one_batch(board, trained):
    _, expected = board
    users = list(expected)
    a = trained["bpr"].recommend(users, N=5, batch_size=3)
    b = trained["bpr"].recommend(users, N=5)
    np.testing.assert_array_equal(a[0], b[0])


def test_similar_items_share_a_group(trained):
    ids, sims = trained["als"].similar_items(0, N=5)
    assert ids[0] == 0 and sims[0] == pytest.approx(1.0, abs=1e-5)
    assert set(ids) == {0, 1, 2, 3, 4}  # group-0 items are each other's neighbours


def test_push_to_hub_writes_card_and_uploads_the_folder(tmp_path, trained, monkeypatch):
    """Regression: this test replaced the upload function itself with a lambda. Only the Hub client is faked
    here: the real ``push_to_hub`` runs, and what it uploads is read back at upload time."""
    import huggingface_hub

    calls = {}

    class FakeApi:  # the network boundary, nothing of transferkit
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, folder_path, repo_id, commit_message):
            folder = Path(folder_path)
            calls["files"] = sorted(p.name for p in folder.iterdir())
            calls["card"] = (folder / "README.md").read_text()
            calls["item_ids"] = EmbeddingTables.load(folder).item_ids
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = trained["als"].push_to_hub("me/tables", tmp_path, token="hf_x", private=True, metrics={"ndcg@10": 0.5})
    assert url == "https://hub/me/tables/commit/1"
    assert calls["repo"] == ("me/tables", True, True) and calls["token"] == "hf_x"
    assert "README.md" in calls["files"] and any(f.endswith(".safetensors") for f in calls["files"])
    card = calls["card"]
    assert "recommendation" in card and "ndcg@10" in card and "EmbeddingTables.load" in card
    assert calls["item_ids"] == trained["als"].item_ids


def test_push_to_hub_offline_raises_and_keeps_the_export(tmp_path, trained, monkeypatch):
    from transferkit.common.hub import HubUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError):
        trained["als"].push_to_hub("me/tables", tmp_path)
    assert (tmp_path / "tables.safetensors").exists()


def test_unknown_model_is_rejected(board):
    with pytest.raises(ValueError, match="unknown model 'svd'"):
        pretrain(board[0], model="svd")


@pytest.mark.parametrize("module", ["data", "tables", "pretrain", "transfer", "content", "model", "splits", "baselines",
                                    "neighbors", "blend", "tuning", "config"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"transferkit.recsys.{module}"))
    assert result.failed == 0 and result.attempted > 0
