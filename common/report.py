"""Plots and markdown tables for run reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def plot_learning_curve(history: Sequence[dict], path: str | Path, metric: str | None = None) -> Path:
    """Training loss (and evaluation loss) per epoch on the left axis, the evaluation metric, if logged, on
    the right. Drawn with Pillow, not matplotlib: every run draws one, and importing matplotlib costs a
    fresh process about 0.4 s, more than a linear probe's whole training on cached features."""
    epochs = [float(h["epoch"]) for h in history]
    left = [("train loss", [h["train_loss"] for h in history], (31, 119, 180))]
    if "eval_loss" in history[0]:
        left.append(("eval loss", [h["eval_loss"] for h in history], (23, 190, 207)))
    right = ([(metric, [h[metric] for h in history], (255, 127, 14))]
             if metric and metric in history[0] and metric != "eval_loss" else [])
    return _line_chart(epochs, left, right, path, x_label="epoch", left_label="loss", right_label=metric or "")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 times a power of ten).

    Example:
        >>> nice_ticks(0.12, 0.93)
        [0.2, 0.4, 0.6, 0.8]
    """
    import math

    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    raw = (hi - lo) / max(1, n)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _line_chart(x: Sequence[float], left: Sequence[tuple], right: Sequence[tuple], path: str | Path, *,
                x_label: str, left_label: str, right_label: str, size: tuple[int, int] = (660, 385)) -> Path:
    """A two-axis line chart as a PNG: ``left`` / ``right`` are ``(name, values, rgb)`` series."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    w, h = size
    box = (62, 16, w - (62 if right else 18), h - 44)  # plot area: left, top, right, bottom
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    x_lo, x_hi = (min(x), max(x)) if len(x) > 1 else (x[0] - 1, x[0] + 1)

    def span(series: Sequence[tuple]) -> tuple[float, float]:
        vals = [float(v) for _, vs, _ in series for v in vs if v is not None and np.isfinite(v)]
        if not vals:
            return 0.0, 1.0
        lo, hi = min(vals), max(vals)
        pad = 0.05 * (hi - lo) or 0.05 * (abs(hi) or 1)
        return lo - pad, hi + pad

    def px(xv: float) -> float:
        return box[0] + (xv - x_lo) / (x_hi - x_lo) * (box[2] - box[0])

    def py(v: float, lo: float, hi: float) -> float:
        return box[3] - (v - lo) / (hi - lo) * (box[3] - box[1])

    def label(v: float) -> str:
        return f"{v:.4g}"

    l_lo, l_hi = span(left)
    for t in nice_ticks(l_lo, l_hi):  # grid and left ticks
        y = py(t, l_lo, l_hi)
        draw.line([(box[0], y), (box[2], y)], fill=(230, 230, 230))
        draw.text((box[0] - 6, y), label(t), fill="black", font=font, anchor="rm")
    for t in [v for v in nice_ticks(x_lo, x_hi, n=min(10, max(1, round(x_hi - x_lo)))) if float(v).is_integer()]:
        draw.text((px(t), box[3] + 6), label(t), fill="black", font=font, anchor="mt")
    if right:
        r_lo, r_hi = span(right)
        for t in nice_ticks(r_lo, r_hi):
            draw.text((box[2] + 6, py(t, r_lo, r_hi)), label(t), fill="black", font=font, anchor="lm")
    draw.rectangle(box, outline=(80, 80, 80))
    legend = []
    for series, (lo, hi) in ((left, (l_lo, l_hi)), (right, (r_lo, r_hi) if right else (0, 1))):
        for name, values, color in series:
            pts = [(px(a), py(float(v), lo, hi)) for a, v in zip(x, values) if v is not None and np.isfinite(v)]
            if len(pts) > 1:
                draw.line(pts, fill=color, width=2)
            for a, b in pts:
                draw.ellipse((a - 3, b - 3, a + 3, b + 3), fill=color)
            legend.append((name, color))
    if legend:  # top right, inside the plot, on a white box
        draw.rectangle((box[2] - 128, box[1] + 2, box[2] - 4, box[1] + 18 + 16 * (len(legend) - 1)), fill="white",
                       outline=(200, 200, 200))
    for i, (name, color) in enumerate(legend):
        y = box[1] + 10 + 16 * i
        draw.line([(box[2] - 120, y), (box[2] - 100, y)], fill=color, width=2)
        draw.text((box[2] - 94, y), name, fill="black", font=font, anchor="lm")
    draw.text(((box[0] + box[2]) / 2, h - 6), x_label, fill="black", font=font, anchor="md")
    img_l = Image.new("RGB", (box[3] - box[1], 16), "white")
    ImageDraw.Draw(img_l).text(((box[3] - box[1]) / 2, 8), left_label, fill="black", font=font, anchor="mm")
    img.paste(img_l.rotate(90, expand=True), (4, box[1]))
    if right:
        img_r = Image.new("RGB", (box[3] - box[1], 16), "white")
        ImageDraw.Draw(img_r).text(((box[3] - box[1]) / 2, 8), right_label, fill="black", font=font, anchor="mm")
        img.paste(img_r.rotate(-90, expand=True), (w - 20, box[1]))
    path = Path(path)
    img.save(path)
    return path


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Confusion matrix with counts; rows are true labels, columns predictions."""
    plt = pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > peak / 2 else "black")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_bars(rows: Sequence[dict], label_key: str, value_keys: Sequence[str], path: str | Path,
              title: str = "", ylabel: str = "") -> Path:
    """Grouped bars: one group per row, one bar per value key."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) * len(value_keys)), 3.8))
    width = 0.8 / len(value_keys)
    x = np.arange(len(rows))
    for k, key in enumerate(value_keys):
        vals = [r.get(key, np.nan) for r in rows]
        ax.bar(x + k * width - 0.4 + width / 2, vals, width, label=key)
    ax.set_xticks(x, [str(r[label_key]) for r in rows], rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def markdown_table(rows: Sequence[dict], columns: Sequence[str], floatfmt: str = ".3f") -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns`` (missing cells stay blank)."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# The names these helpers had before they became public (imported across modules).
_pyplot, _save = pyplot, save_figure
