"""Label-budget learning curve on real photos: accuracy against labelled examples per class.

Reads ants vs bees from ``../shared/data/hymenoptera`` (never copied into the project) and runs
:func:`transferkit.common.curve.label_curve` with ``packaged:mobilenet_v2``: the linear probe at 1, 2, 5,
10, 20 and all labels per class, beside the task's simple reference (logistic regression on 32x32
pixels) on the same nested subsets, scored on the 153 validation photos, 3 seeds. Writes
``benchmarks/results/label_curve.md`` and ``label_curve.png``; ends with a ``RESULT`` line.

    python benchmarks/label_curve.py            # about 2 minutes on 2 idle cores
    python benchmarks/label_curve.py --smoke    # 1 seed, 1 and 2 labels per class, a few epochs
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchinfo  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchinfo.add_common_arguments(p, data="folder that holds hymenoptera/",
                                   smoke="a few points only, to check the script runs")
    p.add_argument("--epochs", type=int, default=30, help="epochs of each probe (on cached features)")
    args = p.parse_args()
    hym = Path(args.data) / "hymenoptera"
    if not (hym / "train").is_dir() or not (hym / "val").is_dir():
        sys.exit(f"{hym} is missing: pass --data pointing at the folder that holds hymenoptera/")
    threads = benchinfo.set_threads(args.threads)
    budgets, seeds, epochs = ((1, 2), (0,), 2) if args.smoke else ((1, 2, 5, 10, 20, None), (0, 1, 2), args.epochs)

    from transferkit.common.curve import label_curve
    from transferkit.vision import ImageClassifier

    load_before, t0 = benchinfo.load_average(), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tk-curve-"))
    try:
        clf = ImageClassifier.from_pretrained("packaged:mobilenet_v2", labels=["ants", "bees"], strategy="linear_probe")
        points = label_curve(clf, str(hym / "train"), str(hym / "val"), out_dir=work, budgets=budgets,
                             strategies=("linear_probe",), seeds=seeds, progress=False, epochs=epochs,
                             mixed_precision="no")
        seconds = time.perf_counter() - t0
        md = benchinfo.results_path(args.results_dir, "label_curve", args.smoke)
        png = md.with_suffix(".png")
        shutil.copyfile(work / "curve.png", png)
        probe_s = sum(pt["seconds"] for pt in points if pt["method"] == "linear_probe")
        with open(work / "curve.csv") as f:
            n_rows = sum(1 for _ in csv.DictReader(f))
        lines = [
            "# Label-budget learning curve: ants vs bees, MobileNetV2 linear probe against pixels",
            "",
            *(["**SMOKE RUN** (a few points, to check the script; not a result)", ""] if args.smoke else []),
            *benchinfo.machine_lines(load_before, benchinfo.load_average(), "fp32 (`mixed_precision=\"no\"`)", threads),
            f"- Total wall time: {seconds:.0f} s ({n_rows} points; the probe points together {probe_s:.0f} s: the "
            "encoder runs once over the training and the validation photos for the whole curve)",
            "",
            f"Data: `hymenoptera` from {hym} (train 244 photos, val 153; the placeholder GIF skipped). Each seed takes "
            "nested per-class subsets of the training photos (the 2-label subset holds the 1-label one); every point is "
            "scored on all 153 validation photos. Linear probe: `packaged:mobilenet_v2` (ImageNet), 224 px, "
            f"{epochs} epochs of the head on cached features. Reference: logistic regression on 32x32 pixels.",
            "",
            (work / "curve.md").read_text().strip(),
            "",
            f"![curve]({png.name})",
        ]
        md.write_text("\n".join(lines) + "\n")
        print(f"wrote {md}")
        last = budgets[-1] or "all"
        means = {m: sum(pt["accuracy"] for pt in points if pt["method"] == m and pt["labels_per_class"] == last) / len(seeds)
                 for m in ("linear_probe", "reference")}
        print(f"RESULT label_curve probe_{last}={means['linear_probe']:.3f} reference_{last}={means['reference']:.3f} "
              f"seconds={seconds:.0f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
