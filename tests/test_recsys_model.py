"""EmbeddingModel: starts exactly where the tables are, learns the checkerboard through the common Trainer."""

import numpy as np
import pytest
import torch

from transferkit.common import TrainConfig
from transferkit.demos.recsys_world import checkerboard
from transferkit.recsys import EmbeddingModel, Interactions, pretrain


@pytest.fixture(scope="module")
def board():
    return checkerboard()


def config(tmp_path, epochs=40, batch_size=16):
    return TrainConfig(output_dir=str(tmp_path), epochs=epochs, batch_size=batch_size, lr=0.1, weight_decay=0.0,
                       warmup_ratio=0.0, progress=False, save_checkpoints=False, seed=0)


def test_from_tables_scores_like_the_tables_even_with_a_content_tower(board):
    inter, _ = board
    tables = pretrain(inter, model="bpr", factors=4, iterations=20, num_threads=1)
    content = np.random.default_rng(0).standard_normal((len(tables.item_ids), 3))
    model = EmbeddingModel.from_tables(tables, item_content=content)
    back = model.to_tables()
    np.testing.assert_allclose(back.user_factors, tables.user_factors)
    np.testing.assert_allclose(back.item_factors, tables.item_factors, atol=1e-7)  # tower starts at 0
    with torch.no_grad():
        s = model(torch.tensor([0, 1]), torch.tensor([2, 3])).numpy()
    np.testing.assert_allclose(s, [tables.user_factors[0] @ tables.item_factors[2],
                                   tables.user_factors[1] @ tables.item_factors[3]], rtol=1e-5)


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
def test_training_through_the_common_loop_learns_the_checkerboard(tmp_path, board, loss):
    inter, expected = board
    model = EmbeddingModel(inter.user_ids, inter.item_ids, dim=4, seed=0)
    result = model.fit(inter, config(tmp_path, epochs=30, batch_size=40), loss=loss)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    ids, _ = model.to_tables(history=inter).recommend(list(expected), N=1)
    hits = np.mean([ids[r, 0] == expected[u] for r, u in enumerate(expected)])
    assert hits >= 0.9, hits
    assert (tmp_path / "metrics.jsonl").exists()  # the common loop wrote its log


def test_freeze_items_trains_only_users_and_eval_selects_best(tmp_path, board):
    inter, expected = board
    holes = Interactions.from_arrays(list(expected), list(expected.values()))  # each user's right answer
    tables = pretrain(inter, factors=4, iterations=3, num_threads=1)
    model = EmbeddingModel.from_tables(tables)
    before = model.item.weight.detach().clone()
    result = model.fit(inter, config(tmp_path, epochs=3), freeze_items=True, test=holes)
    torch.testing.assert_close(model.item.weight.detach(), before)
    curve = [h["ndcg@10"] for h in result.history]
    assert result.best_metric == max(curve) and result.history[result.best_epoch - 1]["ndcg@10"] == max(curve)


def test_fit_rejects_data_in_another_id_space(board):
    inter, _ = board
    model = EmbeddingModel(inter.user_ids[::-1], inter.item_ids, dim=2)
    with pytest.raises(ValueError, match="id spaces"):
        model.fit(inter)
    with pytest.raises(ValueError, match="one row per item"):
        EmbeddingModel(inter.user_ids, inter.item_ids, dim=2, item_content=np.ones((3, 2)))
