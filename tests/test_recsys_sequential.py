"""SequentialRecommender: finds an order a bag of items cannot see, starts from the right table rows,
and resumes a killed run to the uninterrupted run's exact weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.common import Callback, TrainConfig
from transferkit.recsys import EASE, EmbeddingTables, Interactions, ItemKNN, evaluate
from transferkit.recsys.sasrec import SequentialConfig
from transferkit.recsys.sequential import SequentialRecommender, sequences, windows

SMALL = SequentialConfig(dim=32, layers=1, heads=2, max_len=10, dropout=0.0)


def cycle_world(n_users: int = 300, n_items: int = 40, length: int = 8, seed: int = 0):
    """Every user walks ``length`` steps along one random cycle through the catalogue; the right answer
    is the item after their last one. As a set, a walk is a stretch of the cycle whose two ends look
    alike: only the order says which end is the last."""
    rng = np.random.default_rng(seed)
    cycle = rng.permutation(n_items)
    users, items, times, answer = [], [], [], {}
    for u in range(n_users):
        start = rng.integers(n_items)
        walk = [f"item{cycle[(start + t) % n_items]}" for t in range(length + 1)]
        users += [f"user{u}"] * length
        items += walk[:-1]
        times += list(range(length))
        answer[f"user{u}"] = walk[-1]
    return Interactions.from_arrays(users, items, times=times), answer


def hits_at_1(model, answer, **kw) -> float:
    users = list(answer)
    ids, _ = model.recommend(users, N=1, **kw)
    return float(np.mean([ids[r, 0] == answer[u] for r, u in enumerate(users)]))


@pytest.fixture(scope="module")
def world():
    return cycle_world()


@pytest.fixture(scope="module")
def trained(world):
    inter, _ = world
    model = SequentialRecommender(inter.item_ids, SMALL)
    model.fit(inter, epochs=8, batch_size=64, lr=1e-2, save_checkpoints=False)
    return model


def test_sequences_follow_time_and_windows_shift_by_one():
    inter = Interactions.from_arrays(["a", "a", "a", "b"], ["z", "x", "y", "x"], times=[3, 1, 2, 5])
    seqs = sequences(inter)
    assert [inter.item_ids[i] for i in seqs[inter.user_index["a"]]] == ["x", "y", "z"]
    x, y = windows(seqs, max_len=2)  # a's three items give one window; b's single item none
    assert x.tolist() == [[inter.item_index["x"] + 1, inter.item_index["y"] + 1]]
    assert y.tolist() == [[inter.item_index["y"] + 1, inter.item_index["z"] + 1]]
    x, y = windows([np.arange(5)], max_len=2)  # items 1..5 (0 pads): windows [3, 4, 5] and [1, 2, 3]
    assert x.tolist() == [[3, 4], [1, 2]] and y.tolist() == [[4, 5], [2, 3]]
    x, y = windows([np.arange(5)], max_len=2, latest=True)  # only the latest, as in the SASRec paper
    assert x.tolist() == [[3, 4]] and y.tolist() == [[4, 5]]
    with pytest.raises(ValueError, match="time="):
        sequences(Interactions.from_arrays(["a"], ["x"]))


def test_the_sequential_model_finds_the_next_item_and_a_bag_of_items_cannot(world, trained):
    inter, answer = world
    assert hits_at_1(trained, answer) >= 0.95
    # a bag of items sees a stretch of the cycle and cannot tell its last end from its first
    for bag in (EASE(regularization=10).fit(inter), ItemKNN(kind="cosine", num_threads=1).fit(inter)):
        assert hits_at_1(bag, answer) <= 0.65, type(bag).__name__
    test = Interactions.from_arrays(list(answer), list(answer.values()), times=[99] * len(answer))
    assert evaluate(trained, inter, test, k=10)["ndcg@10"] >= 0.95


def test_unknown_users_are_served_from_the_history_given_at_call_time(world, trained):
    inter, answer = world
    # two newcomers whose walks are those of known users: their answers are known
    u0, u1 = list(answer)[:2]
    frame = inter.to_frame()
    frame = frame[frame.user.isin([u0, u1])].assign(user=lambda f: "new-" + f.user)
    today = Interactions.from_frame(frame, weight="weight", time="time")
    ids, _ = trained.recommend([f"new-{u0}", f"new-{u1}"], N=1, history=today, unknown="cold_start")
    assert ids[:, 0].tolist() == [answer[u0], answer[u1]]
    with pytest.raises(ValueError, match="cold_start"):
        trained.recommend(["new-x"], N=1, history=today)
    # a newcomer with no events gets popularity; seen items are never returned
    ids, _ = trained.recommend(["nobody"], N=3, history=today, unknown="cold_start")
    np.testing.assert_array_equal(ids[0], np.array(trained.item_ids, dtype=object)[np.argsort(-trained.popularity(),
                                                                                        kind="stable")[:3]])
    ids, _ = trained.recommend([u0], N=len(trained.item_ids))
    seen = set(frame[frame.user == f"new-{u0}"].item)
    assert not seen & set(ids[0]) and None in set(ids[0])


def test_table_initialisation_copies_the_rows_of_the_same_string_ids():
    rng = np.random.default_rng(0)
    tables = EmbeddingTables(rng.standard_normal((3, 4)), rng.standard_normal((4, 4)), ["u0", "u1", "u2"],
                             ["apple", "pear", "fig", "kiwi"], model="als")
    catalogue = ["kiwi", "plum", "apple", "fig"]  # another order, one item the tables lack
    model = SequentialRecommender.from_tables(tables, item_ids=catalogue, config=SequentialConfig(dim=4, heads=2))
    base = model.net.base.detach().numpy()
    for row, item in enumerate(catalogue):
        expected = tables.item_factors[tables.item_index[item]] if item in tables.item_index else np.zeros(4)
        np.testing.assert_array_equal(base[row], expected)
    assert model.net.proj is None  # same width: no projection, the rows are used as they are (rescaled)
    # with content, the missing item's row is predicted from it (ridge on the shared items)
    content = np.eye(4) + 0.1
    with_content = SequentialRecommender.from_tables(tables, item_ids=catalogue, item_content=content,
                                                     config=SequentialConfig(dim=8, heads=2))
    predicted = with_content.content_mapper.predict(content[[1]])[0]
    np.testing.assert_allclose(with_content.net.base[1].detach().numpy(), predicted, rtol=1e-5)
    np.testing.assert_array_equal(with_content.net.base[0].detach().numpy(), tables.item_factors[3])
    assert with_content.net.proj.weight.shape == (8, 4)  # widths differ: projected


@pytest.mark.parametrize("mode", ["frozen", "partial", "finetune"])
def test_item_training_modes_move_only_what_they_say(tmp_path, world, mode):
    inter, _ = world
    rng = np.random.default_rng(1)
    content = rng.standard_normal((len(inter.item_ids), 12)).astype(np.float32)
    config = SequentialConfig(dim=16, layers=1, heads=2, max_len=10, dropout=0.0, item_training=mode)
    model = SequentialRecommender.from_content(inter.item_ids, content, config)
    proj = model.net.proj.weight.detach().clone()
    model.fit(inter, epochs=1, batch_size=100, lr=1e-2, output_dir=str(tmp_path), save_checkpoints=False)
    base_moved = not np.allclose(model.net.base.detach().numpy(), content)
    assert base_moved == (mode == "finetune")
    assert not torch.equal(model.net.proj.weight.detach(), proj)  # the projection always learns
    assert (model.net.delta is not None) == (mode == "partial")
    if mode == "partial":
        assert model.net.delta.detach().abs().sum() > 0  # the residual table started at zero and learned


def test_new_items_from_content_are_served_through_the_same_projection(world):
    inter, _ = world
    content = np.random.default_rng(2).standard_normal((len(inter.item_ids), 6)).astype(np.float32)
    model = SequentialRecommender.from_content(inter.item_ids, content, SequentialConfig(
        dim=8, heads=2, max_len=10, item_training="frozen"))
    model.fit(inter, epochs=1, batch_size=100, save_checkpoints=False)
    model.add_items(["twin-of-item0", "other"], np.stack([content[inter.item_index["item0"]], content[1] + 5]))
    vectors = model.item_matrix()
    np.testing.assert_allclose(vectors[-2], vectors[inter.item_index["item0"]], rtol=1e-5, atol=1e-7)
    ids, _ = model.recommend(["user0"], N=len(model.item_ids), filter_seen=True)
    assert "twin-of-item0" in set(ids[0])  # served at once
    with pytest.raises(ValueError, match="no content path"):
        SequentialRecommender(inter.item_ids, SMALL).add_items(["x"], np.ones((1, 6)))


def test_save_and_load_give_the_same_recommendations(tmp_path, world, trained):
    inter, answer = world
    trained.save(tmp_path / "seq")
    loaded = SequentialRecommender.load(tmp_path / "seq")
    users = list(answer)[:20]
    a_ids, a_scores = trained.recommend(users, N=5)
    b_ids, b_scores = loaded.recommend(users, N=5, history=inter)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-5)


class _KillAt(Callback):
    def __init__(self, kill_at):
        self.batches, self.kill_at = 0, kill_at

    def on_batch_end(self, trainer, loss):
        self.batches += 1
        if self.batches == self.kill_at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("time_features", ["none", "gap+period"])
def test_resume_after_a_kill_mid_epoch_gives_the_same_weights(tmp_path, world, time_features):
    inter, _ = world
    config = SequentialConfig(dim=16, layers=1, heads=2, max_len=10, dropout=0.3,  # dropout draws: RNG must resume
                              time_features=time_features, period_days=1 / 86400, periods=4)

    def run(folder, callbacks=(), resume=False):
        model = SequentialRecommender(inter.item_ids, config)
        loop = TrainConfig(output_dir=str(folder), epochs=2, batch_size=64, lr=1e-2, weight_decay=0.0,
                           progress=False, plot=False, save_steps=2, resume=resume)
        model.fit(inter, loop, callbacks=callbacks)
        return model.net.state_dict()

    whole = run(tmp_path / "whole")  # 300 windows / 64 = 5 batches per epoch
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", [_KillAt(8)])  # epoch 2, batch 3; last step checkpoint after batch 6
    counter = _KillAt(None)
    resumed = run(tmp_path / "killed", [counter], resume=True)
    assert counter.batches == 4  # it continued after batch 6 of 10 rather than starting again
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="heads"):
        SequentialConfig(dim=10, heads=3)
    with pytest.raises(ValueError, match="item_training"):
        SequentialConfig(item_training="lora")
    model = SequentialRecommender(["a", "b"], SequentialConfig(dim=4, heads=2))
    with pytest.raises(ValueError, match="TrainConfig or keyword"):
        model.fit(Interactions.from_arrays(["u", "u"], ["a", "b"], times=[0, 1]), TrainConfig(), epochs=1)


# -- time ----------------------------------------------------------------------------------------------
DAY = 86400.0


def return_world(n_users: int = 160, n_items: int = 20, length: int = 8, seed: int = 0):
    """Users walk a cycle one minute per step; a user who comes back after a month goes to the item
    "welcome-back" first. Every user's last event is at the same time ``end``, so one serving time asks
    the same question of every user: after a minute the right answer is the next item on the cycle,
    after a month it is "welcome-back"."""
    rng = np.random.default_rng(seed)
    cycle = rng.permutation(n_items)
    users, items, times = [], [], []
    end = 1_000 * DAY
    for u in range(n_users):
        start = rng.integers(n_items)
        walk = [f"item{cycle[(start + t) % n_items]}" for t in range(length)]
        stamps = [60.0 * t for t in range(length)]
        if u % 2:  # half the users came back once: a month's gap, then welcome-back, then the walk again
            at = int(rng.integers(2, length - 1))
            walk = walk[:at] + ["welcome-back"] + walk[at:]
            stamps = stamps[:at] + [stamps[at - 1] + 30 * DAY] + [s + 30 * DAY + 60 for s in stamps[at:]]
        shift = end - stamps[-1]
        users += [f"user{u}"] * len(walk)
        items += walk
        times += [s + shift for s in stamps]
    answer = {f"user{u}": f"item{cycle[(start_of(items, users, f'user{u}', cycle) + 1) % n_items]}"
              for u in range(n_users)}
    return Interactions.from_arrays(users, items, times=times), answer, end


def start_of(items, users, user, cycle) -> int:
    """Position on the cycle of ``user``'s last item."""
    last = [i for i, u in zip(items, users) if u == user][-1]
    return int(np.flatnonzero(cycle == int(last[4:]))[0])


@pytest.mark.parametrize("time_features", ["none", "gap"])
def test_the_gap_since_the_last_event_changes_the_answer_only_for_a_time_model(time_features):
    inter, answer, end = return_world()
    config = SequentialConfig(dim=32, layers=1, heads=2, max_len=12, dropout=0.0, time_features=time_features)
    model = SequentialRecommender(inter.item_ids, config)
    model.fit(inter, epochs=40, batch_size=32, lr=1e-2, save_checkpoints=False)
    users = list(answer)[::2]  # the users who never came back (welcome-back is not filtered as seen)
    answer = {u: answer[u] for u in users}
    model.serve_time = end + 60  # a minute later: the walk goes on
    soon = hits_at_1(model, answer)
    model.serve_time = end + 30 * DAY  # a month later: welcome-back first
    ids, _ = model.recommend(users, N=1)
    back = float(np.mean(ids[:, 0] == "welcome-back"))
    model.serve_time = "last_event"  # within the session: no gap, as a minute later
    session = hits_at_1(model, answer)
    if time_features == "gap":
        assert soon >= 0.9 and back >= 0.9 and session >= 0.9, (soon, back, session)
        model.serve_time = "tomorrow"
        with pytest.raises(ValueError, match="last_event"):
            model.recommend(users, N=1)
    else:  # the same question twice: one answer, right at most for one of the two times
        assert soon + back <= 1.0 + 1e-9, (soon, back)


def test_time_buckets_count_back_from_the_end_of_training():
    from transferkit.recsys.sasrec import GAP_BUCKETS, gap_buckets, period_buckets

    hour = 3600.0
    assert gap_buckets(np.array([-5.0, 0.0, 0.5 * hour, 1 * hour, 3 * hour, 1e12])).tolist() == [
        0, 0, 0, 1, 2, GAP_BUCKETS - 1]
    end = 100 * DAY
    times = np.array([end + 5 * DAY, end, end - 6.9 * DAY, end - 7.1 * DAY, end - 300 * DAY])
    assert period_buckets(times, end, period_days=7, periods=4).tolist() == [3, 3, 3, 2, 0]


def test_targets_below_the_threshold_are_history_but_never_learned():
    x, y, w = windows([np.array([0, 1, 2, 3])], max_len=3, aligned=([np.array([5.0, 1.0, 5.0, 2.0])],))
    assert y.tolist() == [[2, 3, 4]] and w.tolist() == [[1.0, 5.0, 2.0]]  # each target's own weight
    # item "low" always follows "a" with a rating of 1: with the threshold it is never the next item learned
    users, items, ratings = [], [], []
    for u in range(60):
        users += [f"u{u}"] * 3
        items += ["a", "low", "b"] if u % 2 else ["a", "b", "c"]
        ratings += [5.0, 1.0, 5.0] if u % 2 else [5.0, 5.0, 5.0]
    inter = Interactions.from_arrays(users, items, weights=ratings, times=[0, 1, 2] * 60)
    probe = Interactions.from_arrays(["new"], ["a"], times=[0])
    for threshold, learns_low in ((0.0, True), (4.0, False)):
        model = SequentialRecommender(inter.item_ids, SequentialConfig(dim=16, layers=1, heads=2, max_len=4,
                                                                       dropout=0.0, target_threshold=threshold))
        model.fit(inter, epochs=30, batch_size=32, lr=1e-2, save_checkpoints=False)
        scores = dict(zip(*[v[0] for v in model.recommend(["new"], N=4, history=probe, filter_seen=False,
                                                          unknown="cold_start")]))
        assert (scores["low"] > scores["c"]) == learns_low, (threshold, scores)
    with pytest.raises(ValueError, match="target_threshold"):
        SequentialRecommender(inter.item_ids, SequentialConfig(dim=8, heads=2, target_threshold=9.0)).fit(
            inter, epochs=1, save_checkpoints=False)


def test_a_time_model_with_item_bias_saves_loads_and_adds_items(tmp_path):
    inter, answer, end = return_world(n_users=60)
    content = np.random.default_rng(3).standard_normal((len(inter.item_ids), 6)).astype(np.float32)
    config = SequentialConfig(dim=16, layers=1, heads=2, max_len=12, dropout=0.0, time_features="gap+period",
                              item_bias=True, period_days=1.0, periods=4)
    model = SequentialRecommender.from_content(inter.item_ids, content, config)
    model.fit(inter, epochs=2, batch_size=64, lr=1e-2, save_checkpoints=False)
    assert model.time_end == end and model.net.bias.detach().abs().sum() > 0
    model.save(tmp_path / "seq")
    loaded = SequentialRecommender.load(tmp_path / "seq")
    assert loaded.time_end == end
    users = list(answer)[:10]
    a = model.recommend(users, N=5)
    b = loaded.recommend(users, N=5, history=inter)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5)
    model.add_items(["fresh"], content[:1] + 1)
    assert model.net.bias.shape[0] == len(model.item_ids)
    np.testing.assert_allclose(float(model.net.bias[-1].detach()), float(model.net.bias[:-1].detach().mean()), rtol=1e-6)
    with pytest.raises(ValueError, match="last_times"):
        model.user_vectors([np.array([0, 1])])
