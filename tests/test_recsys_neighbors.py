"""Item-item models (implicit's neighbours, EASE): the checkerboard's known answer, serving users from
their history without refitting, the closed form, and the settings contract."""

import numpy as np
import pytest

from transferkit.demos.recsys_world import checkerboard
from transferkit.recsys import EASE, EASEConfig, Interactions, ItemKNN, ItemKNNConfig, evaluate, popularity

MODELS = {
    "cosine": lambda: ItemKNN(kind="cosine", neighbors=50, num_threads=1),
    "bm25": lambda: ItemKNN(kind="bm25", neighbors=50, num_threads=1),
    "tfidf": lambda: ItemKNN(kind="tfidf", neighbors=50, num_threads=1),
    "ease": lambda: EASE(regularization=1.0),
}


@pytest.fixture(scope="module")
def board():
    return checkerboard()


@pytest.fixture(scope="module")
def fitted(board):
    return {name: make().fit(board[0]) for name, make in MODELS.items()}


def _items_of(inter, user):
    return [inter.item_ids[i] for i in inter.matrix[inter.user_index[user]].indices]


@pytest.mark.parametrize("name", MODELS)
def test_every_model_finds_each_users_missing_item(board, fitted, name):
    inter, expected = board
    users = list(expected)
    ids, scores = fitted[name].recommend(users, N=3)
    assert ids[:, 0].tolist() == [expected[u] for u in users]
    assert (np.diff(scores, axis=1) <= 0).all()
    for row, u in enumerate(users):  # filter_seen: nothing the user has comes back
        assert not set(_items_of(inter, u)) & set(ids[row])


@pytest.mark.parametrize("name", MODELS)
def test_a_stranger_is_served_from_their_history_without_refitting(board, fitted, name):
    inter, expected = board
    model = fitted[name]
    before = model.weights_.copy()
    for user in ("u0", "u7"):
        history = Interactions.from_arrays(["stranger"] * 4, _items_of(inter, user))
        ids, _ = model.recommend(["stranger"], N=1, history=history, unknown="cold_start")
        assert ids[0, 0] == expected[user]
    same = (model.weights_ != before).nnz == 0 if hasattr(before, "nnz") else np.array_equal(model.weights_, before)
    assert same and "stranger" not in model.user_ids
    with pytest.raises(ValueError, match="not in the model.*unknown='cold_start'"):
        model.recommend(["stranger"], N=1, history=history)
    # no history at all: the popularity fallback, as for tables
    ids, _ = model.recommend(["nobody"], N=1, filter_seen=False, unknown="cold_start")
    assert ids[0, 0] == popularity(inter).recommend(["u0"], N=1, filter_seen=False)[0][0, 0]


def test_cosine_similarity_is_the_cosine_of_the_item_columns(board, fitted):
    x = board[0].matrix.toarray()
    unit = x / np.linalg.norm(x, axis=0)
    np.testing.assert_allclose(fitted["cosine"].weights_.toarray(), unit.T @ unit, atol=1e-6)


def test_ease_solves_each_columns_ridge_regression_with_a_zero_diagonal():
    # EASE's closed form must equal, column by column, the ridge regression of item j on the other items
    rng = np.random.default_rng(0)
    users, items = np.nonzero(rng.random((30, 6)) < 0.4)
    inter = Interactions.from_arrays(users, items, weights=1 + rng.integers(0, 3, len(users)))
    lam = 2.0
    b = EASE(regularization=lam).fit(inter).weights_
    x = inter.matrix.toarray().astype(np.float64)
    for j in range(x.shape[1]):
        rest = np.arange(x.shape[1]) != j
        coef = np.linalg.solve(x[:, rest].T @ x[:, rest] + lam * np.eye(rest.sum()), x[:, rest].T @ x[:, j])
        np.testing.assert_allclose(b[rest, j], coef, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(np.diag(b), 0.0)


def test_evaluate_treats_item_item_models_like_tables(board, fitted):
    inter, expected = board
    test = Interactions.from_arrays(list(expected), list(expected.values()))
    for model in fitted.values():
        result = evaluate(model, inter, test, k=1)
        assert result["ndcg@1"] == 1.0 and result["n_users"] == 20


def test_config_and_keywords_agree_and_mixing_raises(board):
    inter, _ = board
    a = ItemKNN(kind="bm25", neighbors=5, num_threads=1).fit(inter)
    b = ItemKNN(ItemKNNConfig(kind="bm25", neighbors=5, num_threads=1)).fit(inter)
    assert (a.weights_ != b.weights_).nnz == 0 and a.meta["kind"] == "bm25"
    with pytest.raises(ValueError, match="config and neighbors were both given"):
        ItemKNN(ItemKNNConfig(), neighbors=5)
    assert EASE(EASEConfig(regularization=3.0)).config.regularization == 3.0
    with pytest.raises(ValueError, match="not fitted"):
        EASE().recommend(["u0"], N=1, filter_seen=False)


def test_a_refit_rebuilds_the_id_maps(board):
    inter, _ = board
    model = EASE(regularization=1.0).fit(inter)
    assert model.user_index["u3"] == inter.user_index["u3"]
    other = Interactions.from_arrays(["zed", "zed", "amy"], ["p", "q", "p"])
    model.fit(other)
    assert set(model.user_index) == {"zed", "amy"} and model.recommend(["amy"], N=1)[0].tolist() == [["q"]]


@pytest.mark.parametrize("name", ["bm25", "ease"])
def test_save_and_load_round_trip_without_pickle(tmp_path, board, fitted, name):
    from transferkit.recsys.neighbors import load_item_item

    inter, expected = board
    fitted[name].save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neighbors.json", "neighbors.safetensors"]
    loaded = load_item_item(tmp_path)
    assert type(loaded) is type(fitted[name]) and loaded.config == fitted[name].config
    ids, _ = loaded.recommend(list(expected), N=1, history=inter)
    assert ids[:, 0].tolist() == list(expected.values())
    with pytest.raises(ValueError, match="load it with"):
        (EASE if name == "bm25" else ItemKNN).load(tmp_path)
