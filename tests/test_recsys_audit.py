"""recsys.audit: each planted problem flagged with its reason, a clean table flags nothing, the input
is never touched, the cleaned copy loads, and the CLI verb end to end."""

import argparse
import dataclasses
import hashlib
import json
import re
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from transferkit.common.cli import main
from transferkit.recsys import EventAuditConfig, InteractionColumns, Interactions, audit
from transferkit.recsys.cli import AuditArgs, register
from transferkit.recsys.config import AUDIT_REASONS

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

T0 = 1_600_000_000  # 2020-09-13
NOW = "2026-01-01"
# (row of the planted problem within PLANTED, its reason)
PLANTED = [
    ("u00", "i0", str(T0)),  # the first normal event again: duplicate_event
    ("u01", "i9", "4102444800"),  # 2100-01-01: future_time
    ("u02", "i9", "473385600"),  # 1985-01-01: time_out_of_range
    ("u03", "i9", "yesterday"),  # unparseable_time
    ("u04", "Item42", str(T0 + 10)),
    ("u05", "Item42", str(T0 + 11)),
    ("u06", " item42 ", str(T0 + 12)),  # id_variant of Item42
    ("u07", "i_nocontent", str(T0 + 13)),  # no_content: not in the content table
    ("u08", "i_empty", str(T0 + 14)),  # no_content: an empty row there
]


def normal_events() -> list[tuple[str, str, str]]:
    """20 users with 5 events each on 10 items, an hour apart."""
    return [(f"u{j:02d}", f"i{(j + m) % 10}", str(T0 + 3600 * (5 * j + m))) for j in range(20) for m in range(5)]


def bot_events(n: int = 3000) -> list[tuple[str, str, str]]:
    return [("bot", f"i{k % 10}", str(T0 + 7 + k)) for k in range(n)]


def write_events(path, rows):
    pd.DataFrame(rows, columns=["user", "item", "time"]).to_csv(path, index=False)
    return path


def write_content(path):
    titles = [(f"i{k}", f"title {k}") for k in range(10)] + [("Item42", "the answer"), ("i_empty", "")]
    pd.DataFrame(titles, columns=["item", "title"]).to_csv(path, index=False)
    return path


@pytest.fixture()
def planted(tmp_path):
    rows = normal_events() + bot_events() + PLANTED
    return write_events(tmp_path / "events.csv", rows), write_content(tmp_path / "items.csv"), rows


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_planted_problem_is_flagged_with_its_reason(planted):
    events, items, rows = planted
    found = audit(events, items, time="time", now=NOW)
    first = 100 + 3000  # PLANTED starts after the normal and the bot events
    assert found.rows("duplicate_event") == [first]
    assert found.rows("future_time") == [first + 1]
    assert found.rows("time_out_of_range") == [first + 2]
    assert found.rows("unparseable_time") == [first + 3]
    assert found.rows("id_variant") == [first + 6]
    assert found.rows("no_content") == [first + 7, first + 8]
    assert found.rows("heavy_user") == list(range(100, 3100))
    assert found.counts() == {**dict.fromkeys(AUDIT_REASONS, 0), "duplicate_event": 1, "future_time": 1,
                              "time_out_of_range": 1, "unparseable_time": 1, "id_variant": 1, "no_content": 2,
                              "heavy_user": 3000}
    by_row = found.flagged.set_index(["row", "reason"])["detail"]
    assert by_row[first, "duplicate_event"] == "same as row 0"
    assert by_row[first + 2, "time_out_of_range"] == "1985-01-01 00:00:00 is before 1990-01-01"
    assert by_row[first + 3, "unparseable_time"] == "time 'yesterday' is neither a number nor a date"
    assert by_row[first + 6, "id_variant"] == "item ' item42 ' -> 'Item42'"
    assert by_row[first + 7, "no_content"] == "not in the content table"
    assert by_row[first + 8, "no_content"] == "its row in the content table is empty"
    assert by_row[100, "heavy_user"].startswith("user 'bot': 3000 events, 96.5% of all (median 5,")
    # the flagged rows carry the values as written
    row = found.flagged[found.flagged.reason == "id_variant"].iloc[0]
    assert (row["user"], row["item"], row["time"]) == ("u06", " item42 ", str(T0 + 12))
    assert found.info["heavy"]["user"]["max_events"] == 3000 and found.info["heavy"]["item"]["flagged"] == 0


def test_a_clean_table_flags_nothing(tmp_path):
    events = write_events(tmp_path / "events.csv", normal_events())
    found = audit(events, write_content(tmp_path / "items.csv"), time="time", now=NOW, repeats=True)
    assert found.flagged.empty and found.summary() == {"rows": 100, "flagged_rows": 0, "reasons": {}, "clean_rows": 100}
    assert "| (none) | 0 |" in found.to_markdown()


def test_the_source_files_are_byte_identical_and_never_overwritten(planted, tmp_path):
    events, items, _ = planted
    before = sha256(events), sha256(items)
    found = audit(events, items, time="time", now=NOW)
    found.write(tmp_path / "report")
    found.write_clean(tmp_path / "clean.csv")
    assert (sha256(events), sha256(items)) == before
    with pytest.raises(ValueError, match="is a file the audit read"):
        found.write_clean(events)
    assert (sha256(events), sha256(items)) == before


def test_the_cleaned_csv_loads_through_the_loader_with_the_expected_rows(planted, tmp_path):
    events, items, _ = planted
    path = audit(events, items, time="time", now=NOW).write_clean(tmp_path / "clean.csv")
    inter = Interactions.from_frame(path, time="time")
    # 100 normal events + Item42 x3 + i_nocontent + i_empty; the duplicate, the bot and the 3 bad times dropped
    assert len(inter) == 105 and inter.n_users == 20 and "bot" not in inter.user_ids
    assert sorted(i for i in inter.item_ids if not re.fullmatch(r"i\d", i)) == ["Item42", "i_empty", "i_nocontent"]
    assert inter.item_counts()[inter.item_index["Item42"]] == 3
    assert inter.times.min() == T0 and inter.times.max() == T0 + 3600 * 99
    raw = pd.read_csv(path, dtype=str)
    assert list(raw.columns) == ["user", "item", "time"] and raw.iloc[0].tolist() == ["u00", "i0", str(T0)]


def test_dates_become_numbers_in_the_cleaned_copy_and_datetime_frames_work(tmp_path):
    df = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"],
                       "when": ["2021-01-01T00:00:00Z", "1609459260", "not a date"]})
    found = audit(df, time="when", now=NOW)
    assert found.rows("unparseable_time") == [2]
    path = found.write_clean(tmp_path / "clean.csv")
    assert Interactions.from_frame(path, time="when").times.tolist() == [1609459200.0, 1609459260.0]
    stamps = pd.DataFrame({"user": list("abcde"), "item": list("xxxxx"),
                           "when": pd.to_datetime(["2021-01-01", "2100-01-01", "1980-05-01", "2022-01-01", "2023-01-01"])})
    found = audit(stamps, time="when", now=NOW)
    assert found.rows("future_time") == [1] and found.rows("time_out_of_range") == [2]


def test_content_as_the_pair_a_content_mapper_takes():
    df = pd.DataFrame({"user": ["a", "a", "b"], "item": [1, 2, 3]})
    embeddings = np.array([[0.1, 0.2], [np.nan, 0.0]])
    found = audit(df, (["1", "2"], embeddings))
    assert found.rows("no_content") == [1, 2]  # item 2's embedding is NaN, item 3 has none
    assert audit(df, [1, 2, 3]).flagged.empty


def test_repeats_and_duplicates_without_a_time_column():
    df = pd.DataFrame({"user": ["a", "a", "a", "b"], "item": ["x", "x", "x", "x"], "clicks": [1, 1, 2, 1]})
    found = audit(df, weight="clicks", repeats=True)
    assert found.rows("duplicate_event") == [1]  # every column repeats row 0
    assert found.rows("repeated_pair") == [2]  # same pair, another weight
    assert "repeated_pair" not in found.config.drop and len(found.clean()) == 3


def test_case_variants_take_the_most_frequent_spelling_and_missing_ids_and_bad_weights_drop():
    df = pd.DataFrame({"user": ["Ann", "ann", "ann ", "bob", None], "item": ["x", "z", "y", "x", "x"],
                       "w": [1, 1, 1, -1, 1]})
    found = audit(df, weight="w")
    assert found.spellings["user"] == {"Ann": "ann", "ann ": "ann"}
    assert found.rows("id_variant") == [0, 2] and found.rows("missing_id") == [4] and found.rows("bad_weight") == [3]
    clean = found.clean()
    assert clean["user"].tolist() == ["ann", "ann", "ann"] and df["user"].tolist()[0] == "Ann"  # input untouched


def test_heavy_share_flags_a_dominant_item():
    rows = [(f"u{k}", "popular" if k % 2 else f"i{k % 7}") for k in range(200)]
    df = pd.DataFrame(rows, columns=["user", "item"])
    assert audit(df).rows("heavy_item") == list(range(1, 200, 2))  # 100 events where the median item has 14
    assert audit(df, heavy_z=50).rows("heavy_item") == []
    found = audit(df, heavy_z=50, heavy_share=0.4)  # half of all events
    assert found.rows("heavy_item") == list(range(1, 200, 2))
    assert "popular" in set(found.clean()["item"])  # heavy items are flagged, kept unless drop names them
    dropped = audit(df, heavy_share=0.4, drop=["heavy_item"]).clean()
    assert len(dropped) == 100 and "popular" not in set(dropped["item"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: audit(e, user="uid"), r"user column 'uid' is not in the events .*pass user='<column>' \(--user"),
        (lambda e: audit(e, pd.DataFrame({"sku": ["i0"]})), r"no column 'item' .*items_id="),
        (lambda e: audit(e, time="time", config=EventAuditConfig(), heavy_z=4), "config and heavy_z were both given"),
        (lambda e: audit(e, heavy_k=4), r"\['heavy_k'\] are not audit settings"),
        (lambda e: audit(pd.read_csv(e).assign(time=lambda d: d.time * 1000), time="time"), "time_unit='ms'"),
        (lambda e: audit(pd.DataFrame({"user": [], "item": []})), "the table is empty"),
    ],
)
def test_bad_input_says_the_fix(tmp_path, call, message):
    events = write_events(tmp_path / "events.csv", normal_events())
    with pytest.raises(ValueError, match=message):
        call(events)


def test_milliseconds_read_with_the_unit_given(tmp_path):
    df = pd.DataFrame(normal_events(), columns=["user", "item", "time"]).astype({"time": int})
    assert audit(df.assign(time=df.time * 1000), time="time", time_unit="ms", now=NOW).flagged.empty


@pytest.mark.parametrize(
    ("values", "name"),
    [({"heavy_z": 0.0}, "heavy_z"), ({"heavy_min": 0}, "heavy_min"), ({"heavy_share": 1.5}, "heavy_share"),
     ({"time_unit": "days"}, "time_unit"), ({"drop": ["id_variant"]}, "drop"), ({"min_time": "soon"}, "min_time"),
     ({"examples": -1}, "examples")],
)
def test_audit_config_rejects_bad_values_naming_the_field(values, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        EventAuditConfig(**values)


def test_the_audit_flags_are_the_fields_of_its_dataclasses(capsys):
    parser = argparse.ArgumentParser(prog="recsys")
    register(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["audit", "--help"])
    options = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", capsys.readouterr().out))
    expected = {"-h", "--help"}
    for cls in (AuditArgs, InteractionColumns, EventAuditConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), (cls.__name__, f.name)
            if f.metadata.get("positional"):
                continue
            flag = "--" + f.name.replace("_", "-")
            expected |= {flag, "--no-" + flag[2:]} if hints[f.name] is bool else {flag}
    assert options == expected


def test_the_cli_verb_end_to_end(planted, tmp_path, capsys):
    events, items, _ = planted
    before = sha256(events)
    out, clean = tmp_path / "audit", tmp_path / "clean.csv"
    assert main(["recsys", "audit", str(events), "--items", str(items), "--time", "time", "--now", NOW,
                 "--out", str(out), "--write-clean", str(clean)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 3109 and result["clean_rows"] == 3109 - 3004 and result["clean"] == str(clean)
    assert result["reasons"] == {"unparseable_time": 1, "time_out_of_range": 1, "future_time": 1,
                                 "duplicate_event": 1, "heavy_user": 3000, "id_variant": 1, "no_content": 2}
    flagged = pd.read_csv(out / "flagged.csv", dtype={"time": str})
    assert list(flagged.columns) == ["row", "user", "item", "time", "reason", "detail"] and len(flagged) == 3007
    report = (out / "audit.md").read_text()
    assert "| heavy_user | 3000 | 1 | dropped |" in report and "| id_variant | 1 |  | rewritten |" in report
    assert "| no_content | 2 | 2 | kept |" in report
    assert json.loads((out / "config.json").read_text())["now"] == NOW
    assert sha256(events) == before
    assert main(["recsys", "pretrain", "--data", str(clean), "--time", "time", "--factors", "2", "--iterations", "2",
                 "--num-threads", "1", "--out", str(tmp_path / "tables")]) == 0
    assert json.loads(capsys.readouterr().out) == {"tables": str(tmp_path / "tables"), "users": 20, "items": 13}


@pytest.mark.shared_data
def test_movielens_100k_is_clean_ish():
    path = SHARED_DATA / "ml-100k" / "u.data"
    if not path.exists():
        pytest.skip(f"MovieLens 100K not found at {path} (the shared data folder is absent)")
    ratings = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "time"])
    movies = pd.read_csv(path.parent / "u.item", sep="|", encoding="latin-1", header=None).iloc[:, :2]
    found = audit(ratings, movies.set_axis(["item", "title"], axis=1), weight="rating", time="time", now=NOW)
    assert found.summary() == {"rows": 100000, "flagged_rows": 0, "reasons": {}, "clean_rows": 100000}
    assert found.info["heavy"]["user"]["max_events"] == 737 and found.info["heavy"]["item"]["max_events"] == 583
