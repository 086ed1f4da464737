"""The files an audit writes: ``audit.md``, ``audit.html``, ``flagged.csv`` and ``audit-config.json``.

``audit.html`` is one self-contained page: every flagged item is shown by the domain's ``preview``
(whatever the modality shows: a thumbnail, a player, inlined as base64 so the page can be mailed or
attached to an issue), beside its partner for duplicates and leakage, with its reason and score.
Nothing is written outside the output folder, and the output folder may not lie inside the data.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .report import markdown_table

if TYPE_CHECKING:
    from .audit import AuditConfig, AuditSplit, Flag

# What each reason means and what its score measures, in the order the reports list them; a modality
# adds its own decoder and check reasons (AuditReport.reasons), listed after the file reasons here.
FILE_REASONS = {
    "unreadable": ("the decoder cannot read the file", "-"),
    "empty": ("the file or its decoded content is empty", "-"),
    "corrupt": ("the file's data cannot be decoded, or holds invalid values", "-"),
}
FEATURE_REASONS = {
    "exact_duplicate": ("the same bytes as an earlier training item", "cosine similarity (1 for a copy)"),
    "near_duplicate": ("encoder features almost equal to an earlier training item's", "cosine similarity"),
    "leakage": ("a training item that is an exact or near copy of a test item", "cosine similarity"),
    "label_issue": ("the label disagrees with what the out-of-fold probe predicts (cleanlab)",
                    "label quality: the probe's probability of the given label"),
    "outlier": ("far from its nearest training items", "robust z-score of the kNN distance"),
}
REASONS = {**FILE_REASONS, **FEATURE_REASONS}
CSV_COLUMNS = ["kind", "reason", "split", "index", "source", "label", "score", "partner_split", "partner",
               "partner_source", "partner_label", "conflict", "dropped", "detail"]


def class_counts(split: AuditSplit, keep: Sequence[int] | None = None) -> dict[str, int]:
    labels = split.labels if keep is None else [split.labels[i] for i in keep]
    return dict(sorted(Counter(labels).items()))


@dataclass
class AuditReport:
    """What :func:`run_audit` found; write it out with :meth:`write`, a cleaned manifest with :meth:`write_clean`.

    ``pred_probs`` are the probe's out-of-fold probabilities (rows in ``train.usable`` order, columns
    the sorted label names), or None when the label check was skipped.
    """

    flags: list[Flag]
    train: AuditSplit
    test: AuditSplit | None
    config: AuditConfig
    knn_backend: str
    seconds: dict[str, float]
    notes: list[str]
    pred_probs: np.ndarray | None = field(default=None, repr=False)
    preview: Callable[[str, int], str] | None = field(default=None, repr=False, compare=False)
    #: the modality's own reasons (``{"silent": (meaning, what the score measures)}``)
    reasons: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False, compare=False)

    def reason_table(self) -> dict[str, tuple[str, str]]:
        """Every reason this report can list, in report order: file reasons, the modality's, then the features'."""
        return {**FILE_REASONS, **self.reasons, **FEATURE_REASONS}

    def by_reason(self) -> dict[str, int]:
        """Number of flags per reason."""
        return dict(sorted(Counter(f.reason for f in self.flags).items()))

    def flagged(self, *kinds: str, split: str = "train") -> set[int]:
        """Indices in ``split`` with a flag of any of ``kinds`` (all kinds when none is given)."""
        return {f.index for f in self.flags if f.split == split and (not kinds or f.kind in kinds)}

    def dropped(self) -> set[int]:
        """Training indices that :meth:`write_clean` leaves out (flags of the kinds in ``config.drop``)."""
        return self.flagged(*self.config.drop) if self.config.drop else set()

    def clean_indices(self) -> list[int]:
        """Training indices that stay, in their original order."""
        gone = self.dropped()
        return [i for i in range(len(self.train)) if i not in gone]

    def class_balance(self) -> list[dict]:
        """Items per label: training, test, and training after cleaning."""
        train, clean = class_counts(self.train), class_counts(self.train, self.clean_indices())
        test = class_counts(self.test) if self.test else {}
        return [{"label": lab, "train": train.get(lab, 0), "test": test.get(lab, 0) if self.test else None,
                 "train after cleaning": clean.get(lab, 0)} for lab in sorted(set(train) | set(test))]

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """``audit.md``, ``audit.html`` (each flagged item previewed), ``flagged.csv`` and ``audit-config.json``."""
        return write_report(self, Path(out_dir))

    def write_clean(self, path: str | os.PathLike) -> Path:
        """A ``path,label`` CSV of the training items that stay; ``fit`` (and ``ImageSet.from_csv``,
        ``AudioDataset.from_manifest``) read it. Paths are absolute; the user's files are not touched."""
        path = Path(path)
        if not self.train.files:
            raise ValueError("write_clean needs data read from files (a folder or a manifest); these items are in "
                             "memory: use report.clean_indices() to select them instead")
        protected = {Path(s).resolve() for s in self.train.sources}
        if self.train.origin:
            protected.add(Path(self.train.origin).resolve())
        if path.resolve() in protected or path.resolve().is_dir():
            raise ValueError(f"write_clean would overwrite {path}, which is an input of the audit; "
                             "pass a new file name, e.g. train.clean.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            for i in self.clean_indices():
                writer.writerow([os.path.abspath(self.train.sources[i]), self.train.labels[i]])
        os.replace(tmp, path)
        return path

    def rows(self) -> list[dict]:
        """The flags as dicts (the columns of ``flagged.csv``), with ``kind`` and ``dropped``."""
        gone = self.dropped()
        return [{**asdict(f), "kind": f.kind, "dropped": f.split == "train" and f.index in gone,
                 "score": None if math.isnan(f.score) else f.score} for f in self.flags]


def write_outputs(report: AuditReport, out: str | os.PathLike | None, write_clean: str | os.PathLike | None) -> dict:
    """What an ``audit`` verb prints: the counts, and the files it wrote (the report folder, a cleaned manifest)."""
    result: dict = summary(report)
    if out:
        result["report"] = str(report.write(out)["html"])
    if write_clean:
        result["clean_manifest"] = str(report.write_clean(write_clean))
    return result


def _order(reason: str, reasons: dict = REASONS) -> int:
    return list(reasons).index(reason) if reason in reasons else len(reasons)


def _check_out_dir(report: AuditReport, out_dir: Path) -> None:
    out = out_dir.resolve()
    for split in (report.train, report.test):
        origin = split.origin if split is not None and split.files else None
        if origin and Path(origin).is_dir():
            root = Path(origin).resolve()
            if out == root or root in out.parents:
                raise ValueError(f"the audit's output folder {out_dir} lies inside the data folder {origin}; "
                                 "pass --out outside it (the audit never writes into the data)")


def write_report(report: AuditReport, out_dir: Path) -> dict[str, Path]:
    """Write the four files into ``out_dir`` and return their paths by name."""
    _check_out_dir(report, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "audit.md", "html": out_dir / "audit.html", "csv": out_dir / "flagged.csv",
             "config": out_dir / "audit-config.json"}
    table = report.reason_table()
    rows = sorted(report.rows(), key=lambda r: (_order(r["reason"], table), r["split"], r["index"]))
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths["config"].write_text(json.dumps(
        {**dataclasses.asdict(report.config), "knn_backend": report.knn_backend, "summary": summary(report),
         "seconds": {k: round(v, 3) for k, v in report.seconds.items()}, "notes": report.notes},
        indent=2, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(report, rows), encoding="utf-8")
    paths["html"].write_text(page(report), encoding="utf-8")
    return paths


def summary(report: AuditReport) -> dict:
    """Counts: items, usable items, flags per reason, items dropped by write_clean."""
    out = {"train_items": len(report.train), "train_usable": len(report.train.usable)}
    if report.test is not None:
        out |= {"test_items": len(report.test), "test_usable": len(report.test.usable)}
    return out | {"flags": report.by_reason(), "flagged_train_items": len(report.flagged()),
                  "dropped_by_write_clean": len(report.dropped())}


def _cell(v: object) -> object:
    return v.replace("|", "\\|") if isinstance(v, str) else v


def markdown(report: AuditReport, rows: list[dict]) -> str:
    s = summary(report)
    test = f", test {s['test_items']} ({s['test_usable']} usable)" if report.test is not None else ""
    lines = ["# Data audit", "",
             f"Training set {s['train_items']} items ({s['train_usable']} usable){test}; "
             f"nearest neighbours by {report.knn_backend}. {s['flagged_train_items']} training items flagged; "
             f"`write_clean` leaves out {s['dropped_by_write_clean']} (kinds: {', '.join(report.config.drop) or 'none'}). "
             "The audit read the files and changed none of them.", "", "## Flags", ""]
    counts = Counter(r["reason"] for r in rows)
    reasons = report.reason_table()
    table = [{"reason": r, "items": counts[r], "meaning": reasons.get(r, ("", ""))[0], "score": reasons.get(r, ("", "-"))[1]}
             for r in sorted(counts, key=lambda r: _order(r, reasons))]
    lines += [markdown_table(table, ["reason", "items", "meaning", "score"]) if table else "Nothing flagged.", ""]
    lines += ["## Class balance", "", markdown_table(report.class_balance(),
                                                      ["label", "train", "test", "train after cleaning"]), ""]
    if report.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    if rows:
        shown = [{k: _cell(v) for k, v in r.items()} | {"partner": _partner(r)} for r in rows]
        lines += ["## Flagged items", "", markdown_table(
            shown, ["reason", "split", "source", "label", "score", "partner", "conflict", "dropped", "detail"]), ""]
    c = report.config
    lines += ["## Settings", "", f"near_duplicate {c.near_duplicate}, outlier_z {c.outlier_z}, neighbours {c.neighbours}, "
              f"folds {c.folds}, probe_c {c.probe_c}, seed {c.seed}; seconds: "
              + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()), ""]
    return "\n".join(lines)


def _partner(row: dict) -> str:
    if row["partner"] is None:
        return ""
    return f"{row['partner_split']} {row['partner_source']} ({row['partner_label']})"


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h2{margin-top:1.6em;border-bottom:1px solid #ccc}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ccc;border-radius:6px;padding:8px;width:300px;font-size:13px;background:#fafafa}
.card.dropped{border-color:#c33}
.pair{display:flex;gap:6px;align-items:flex-start}
.pair>div{flex:1;min-width:0}
.card .pair>div>:first-child{max-width:100%;max-height:140px;display:block}
.src{word-break:break-all;color:#555}
.score{font-weight:bold}
.conflict{color:#c33;font-weight:bold}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"""


def _item(report: AuditReport, split: str, index: int) -> str:
    shown = report.preview(split, index) if report.preview is not None else ""
    return shown or '<div class="src">(no preview: the file does not decode)</div>'


def _card(report: AuditReport, flag: Flag, dropped: bool) -> str:
    e = html.escape
    score = "" if math.isnan(flag.score) else f'<span class="score">{flag.score:.3f}</span> '
    head = f'<div><b>{e(flag.reason)}</b> {score}<span class="src">{e(flag.detail)}</span></div>'
    mine = (f'<div>{_item(report, flag.split, flag.index)}<div class="src">{e(flag.split)}: {e(flag.source)}</div>'
            f'<div>label <b>{e(flag.label)}</b></div></div>')
    other = ""
    if flag.partner is not None:
        conflict = ' <span class="conflict">labels differ</span>' if flag.conflict else ""
        other = (f'<div>{_item(report, flag.partner_split or "train", flag.partner)}'
                 f'<div class="src">{e(flag.partner_split or "")}: {e(flag.partner_source or "")}</div>'
                 f'<div>label <b>{e(flag.partner_label or "")}</b>{conflict}</div></div>')
    note = "<div>left out by write_clean</div>" if dropped else ""
    return f'<div class="card{" dropped" if dropped else ""}">{head}<div class="pair">{mine}{other}</div>{note}</div>'


def page(report: AuditReport) -> str:
    """The self-contained HTML page: a summary, class balance, then every flag grouped by reason."""
    e = html.escape
    s = summary(report)
    gone = report.dropped()
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Data audit</title><style>{_CSS}</style></head><body>",
             "<h1>Data audit</h1>",
             f"<p>Training set {s['train_items']} items ({s['train_usable']} usable)"
             + (f", test {s['test_items']} ({s['test_usable']} usable)" if report.test is not None else "")
             + f"; {s['flagged_train_items']} training items flagged, {s['dropped_by_write_clean']} left out by "
             "write_clean. The audit changed none of the files.</p>"]
    balance = report.class_balance()
    parts.append("<table><tr><th>label</th><th>train</th><th>test</th><th>train after cleaning</th></tr>" + "".join(
        f"<tr><td>{e(b['label'])}</td><td>{b['train']}</td><td>{'' if b['test'] is None else b['test']}</td>"
        f"<td>{b['train after cleaning']}</td></tr>" for b in balance) + "</table>")
    for note in report.notes:
        parts.append(f"<p>{e(note)}</p>")
    by_reason: dict[str, list[Flag]] = {}
    for flag in report.flags:
        by_reason.setdefault(flag.reason, []).append(flag)
    if not by_reason:
        parts.append("<p>Nothing flagged.</p>")
    reasons = report.reason_table()
    for reason in sorted(by_reason, key=lambda r: _order(r, reasons)):
        meaning, score = reasons.get(reason, ("", "-"))
        parts.append(f"<h2>{e(reason)} ({len(by_reason[reason])})</h2><p>{e(meaning)}; score: {e(score)}.</p><div class='grid'>")
        parts += [_card(report, f, f.split == "train" and f.index in gone) for f in by_reason[reason]]
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def data_uri(payload: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for inlining a thumbnail or a clip into the page."""
    import base64

    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"
