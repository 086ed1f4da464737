"""Interactions: validation of every bad input, duplicates, id handling, weighting and splits."""

import numpy as np
import pandas as pd
import pytest

from transferkit.recsys import (
    Interactions,
    confidence,
    decay,
    dev_split,
    half_known_split,
    item_popularity,
    leave_k_out,
    popularity,
    random_split,
    split_by_time,
)


def frame():
    return pd.DataFrame(
        {
            "user": ["a", "a", "b", "b", "a", "c"],
            "item": [1, 2, 1, 3, 1, 2],
            "w": [1.0, 2.0, 3.0, 1.0, 4.0, 5.0],
            "t": [0.0, 1.0, 2.0, 3.0, 5.0, 4.0],
        }
    )


def test_matrix_is_users_by_items_with_ids_kept_and_duplicates_summed():
    inter = Interactions.from_frame(frame(), weight="w", time="t")
    assert inter.user_ids == ["a", "b", "c"] and inter.item_ids == [1, 2, 3]
    assert all(type(i) is int for i in inter.item_ids)  # numpy int64 -> the int the user wrote
    dense = inter.matrix.toarray()
    assert dense.shape == (3, 3)
    # ("a", 1) appears twice (weights 1 and 4): summed to 5; its time is the latest (5.0)
    np.testing.assert_array_equal(dense, [[5, 2, 0], [3, 0, 1], [0, 5, 0]])
    row = np.flatnonzero((inter.users == 0) & (inter.items == 0))[0]
    assert inter.times[row] == 5.0
    assert len(inter) == 5


def test_tuple_ids_are_kept_as_given():
    inter = Interactions.from_arrays([("x", 1), ("x", 2)], ["i", "i"])
    assert inter.user_ids == [("x", 1), ("x", 2)]


@pytest.mark.parametrize("bad, rows", [(np.nan, [1, 3]), (-1.0, [1, 3]), (np.inf, [1, 3])])
def test_bad_weights_name_the_offending_rows(bad, rows):
    df = frame()
    df.loc[rows, "w"] = bad
    with pytest.raises(ValueError, match=r"rows \[1, 3\]"):
        Interactions.from_frame(df, weight="w")


def test_zero_weights_are_dropped_not_kept_as_explicit_zeros():
    df = frame()
    df["w"] = [0.0, 1, 1, 1, 0.0, 1]  # ("a", 1) sums to zero
    inter = Interactions.from_frame(df, weight="w")
    assert inter.matrix.nnz == 4 and inter.matrix[0, 0] == 0


def test_mixed_id_types_are_rejected_with_the_fix():
    df = pd.DataFrame({"user": [1, "1", 2], "item": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="mix types.*astype\\(str\\)"):
        Interactions.from_frame(df)


def test_empty_frame_missing_column_and_missing_ids():
    with pytest.raises(ValueError, match="empty"):
        Interactions.from_frame(pd.DataFrame({"user": [], "item": []}))
    with pytest.raises(ValueError, match="'rating' not in the frame"):
        Interactions.from_frame(frame(), weight="rating")
    df = frame()
    df.loc[2, "user"] = None
    with pytest.raises(ValueError, match=r"missing ids \(rows \[2\]\)"):
        Interactions.from_frame(df)


def test_csv_parquet_and_datasets_sources_give_the_same_matrix(tmp_path):
    df = frame()
    df.to_csv(tmp_path / "x.csv", index=False)
    df.to_parquet(tmp_path / "x.parquet")
    datasets = pytest.importorskip("datasets")
    ref = Interactions.from_frame(df, weight="w").matrix.toarray()
    for source in (tmp_path / "x.csv", str(tmp_path / "x.parquet"), datasets.Dataset.from_pandas(df)):
        np.testing.assert_array_equal(Interactions.from_frame(source, weight="w").matrix.toarray(), ref)
    with pytest.raises(ValueError, match="cannot read interactions"):
        Interactions.from_frame([1, 2, 3])


def test_datetime_times_become_seconds():
    df = frame()
    df["t"] = pd.to_datetime(df["t"], unit="D")
    inter = Interactions.from_frame(df, time="t")
    # ("a", 1) keeps its latest time (day 5), so the pair times are days 1..5
    assert sorted(inter.times) == [d * 86400.0 for d in range(1, 6)]


def test_concat_and_to_frame_round_trip():
    inter = Interactions.from_frame(frame(), weight="w", time="t")
    other = Interactions.from_arrays(["d", "a"], [9, 1], weights=[1.0, 1.0], times=[6.0, 7.0])
    both = Interactions.concat([inter, other])
    assert both.user_ids == ["a", "b", "c", "d"] and both.item_ids == [1, 2, 3, 9]
    assert both.matrix[0, 0] == 6.0  # 5 + 1 summed across parts
    again = Interactions.from_frame(both.to_frame(), weight="weight", time="time")
    np.testing.assert_array_equal(again.matrix.toarray(), both.matrix.toarray())


def test_confidence_schemes():
    inter = Interactions.from_frame(frame(), weight="w")
    lin = confidence(inter, "linear", alpha=3.0)
    np.testing.assert_allclose(lin.weights, 3 * inter.weights)
    log = confidence(inter, "log", alpha=2.0, eps=1.0)
    np.testing.assert_allclose(log.weights, 1 + 2 * np.log1p(inter.weights), rtol=1e-6)
    bm25 = confidence(inter, "bm25")
    assert (bm25.weights > 0).all() and bm25.info["confidence"] == "bm25"
    # BM25's idf: an item seen by fewer users gets more weight for the same raw count
    users = [f"u{i}" for i in range(10)]
    skewed = Interactions.from_arrays(users + ["u0"], ["x"] * 10 + ["y"])  # x: everyone, y: one user
    w = confidence(skewed, "bm25").weights
    assert w[skewed.items == 1][0] > 100 * w[skewed.items == 0].max()
    with pytest.raises(ValueError, match="unknown confidence scheme"):
        confidence(inter, "tfidf")


def test_split_by_time_puts_late_events_in_test():
    inter = Interactions.from_frame(frame(), weight="w", time="t")
    train, test = split_by_time(inter, cutoff=3.0)
    assert set(test.times) == {3.0, 4.0, 5.0} and set(train.times) == {1.0, 2.0}
    assert test.user_ids == inter.user_ids  # same id space, matrices align
    split = split_by_time(inter, test_fraction=0.4)
    assert split.info["split"] == "time" and len(split.test) == 2
    with pytest.raises(ValueError, match="needs timestamps"):
        split_by_time(Interactions.from_frame(frame()))


def test_leave_k_out_holds_out_k_per_user_and_keeps_small_users_whole():
    users = ["a"] * 5 + ["b"] * 3 + ["c"] * 1
    items = list(range(5)) + list(range(3)) + [0]
    times = [0, 4, 2, 3, 1, 9, 8, 7, 0]
    inter = Interactions.from_arrays(users, items, times=times)
    split = leave_k_out(inter, k=2, by_time=True)
    held = {(split.test.user_ids[u], split.test.item_ids[i]) for u, i in zip(split.test.users, split.test.items)}
    assert held == {("a", 1), ("a", 3), ("b", 0), ("b", 1)}  # the two latest per user; c is too small
    r1, r2 = leave_k_out(inter, k=1, seed=7), leave_k_out(inter, k=1, seed=7)
    np.testing.assert_array_equal(r1.test.items, r2.test.items)
    assert np.bincount(r1.test.users, minlength=3).tolist() == [1, 1, 0]


def test_random_split_is_seeded_and_exact():
    inter = Interactions.from_arrays(np.arange(100) % 10, np.arange(100))
    a, b = random_split(inter, 0.25, seed=1), random_split(inter, 0.25, seed=1)
    assert len(a.test) == 25 and len(a.train) == 75
    np.testing.assert_array_equal(a.test.items, b.test.items)
    assert a.info == {"split": "random", "test_fraction": 0.25, "seed": 1}
    assert not np.array_equal(random_split(inter, 0.25, seed=2).test.items, a.test.items)


def test_time_decay_weights_by_hand():
    times = np.array([0.0, 10.0, 20.0])
    # one half-life (10) before the newest event counts 1/2, two count 1/4
    np.testing.assert_allclose(decay(times, half_life=10), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(decay(times, half_life=20, now=40), [2**-2, 2**-1.5, 2**-1])
    # datetimes are stored as seconds, so a half-life can be given as a duration
    dated = Interactions.from_frame(pd.DataFrame({"user": ["a", "b", "c"], "item": [1, 2, 3],
                                                  "t": pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-05"])}),
                                    time="t")
    np.testing.assert_allclose(decay(dated.times, half_life="2D"), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(decay(dated.times, half_life=pd.Timedelta(days=2)), [0.25, 0.5, 1.0])
    inter = Interactions.from_arrays(["a", "a", "b"], ["x", "y", "x"], weights=[2.0, 4.0, 1.0], times=[0, 10, 20])
    lin = confidence(inter, "linear", alpha=3.0, half_life=10)
    np.testing.assert_allclose(lin.weights, [3 * 2 * 0.25, 3 * 4 * 0.5, 3 * 1 * 1.0])
    assert lin.info == {"confidence": "linear", "half_life": 10.0}
    np.testing.assert_allclose(confidence(inter, "none", half_life=10, now=30).weights, [2 / 8, 4 / 4, 1 / 2])
    with pytest.raises(ValueError, match="half_life must be > 0"):
        decay(times, half_life=0)
    with pytest.raises(ValueError, match="2 events are later than now=5"):
        decay(times, half_life=1, now=5)
    with pytest.raises(ValueError, match="half_life needs timestamps"):
        confidence(Interactions.from_arrays(["a"], ["x"]), "none", half_life=1)


def test_decayed_and_thresholded_popularity_by_hand():
    inter = Interactions.from_arrays(["a", "b", "c", "a"], ["x", "x", "y", "y"], weights=[5, 3, 4, 1],
                                     times=[0, 10, 20, 20])
    np.testing.assert_allclose(item_popularity(inter, half_life=10), [0.25 + 0.5, 1.0 + 1.0])
    np.testing.assert_allclose(item_popularity(inter, min_weight=4), [1.0, 1.0])
    np.testing.assert_allclose(item_popularity(inter, since=10, min_weight=2), [1.0, 1.0])
    # regression: popularity tables ranked users they do not know by all-time counts, not by their own
    recent = popularity(inter, since=15)
    assert recent.recommend(["stranger"], N=1, filter_seen=False, unknown="cold_start")[0][0, 0] == "y"
    assert popularity(inter, half_life=1).meta["half_life"] == 1.0


def test_half_known_split_keeps_the_first_half_of_each_users_new_events():
    users = ["a"] * 6 + ["b"] * 3 + ["c"]
    items = [1, 2, 3, 4, 5, 6, 1, 2, 3, 1]
    times = [0, 1, 5, 6, 8, 7, 2, 9, 6, 5]  # cutoff 5: a has 4 new events, b 2, c 1
    split = half_known_split(Interactions.from_arrays(users, items, times=times), cutoff=5)
    held = sorted((split.test.user_ids[u], split.test.item_ids[i]) for u, i in zip(split.test.users, split.test.items))
    # a: new 3 (t5), 4 (t6), 6 (t7), 5 (t8) -> first two known; b: 3 (t6), 2 (t9) -> one known; c: its one is known
    assert held == [("a", 5), ("a", 6), ("b", 2)]
    assert len(split.train) == 7 and split.info["cutoff"] == 5.0 and split.info["split"].startswith("half-known")
    assert split.test.user_ids == split.train.user_ids  # one id space


def test_dev_split_is_the_latest_slice_of_the_training_period():
    inter = Interactions.from_arrays(np.arange(10) % 3, np.arange(10), times=np.arange(10.0))
    fit, dev = dev_split(inter, 0.2)
    assert sorted(dev.times.tolist()) == [8.0, 9.0] and fit.times.max() == 7.0
    with pytest.raises(ValueError, match="needs timestamps"):
        dev_split(Interactions.from_arrays(["a", "b"], ["x", "y"]))
