"""What each cheaper-step lever buys per encoder family, on this machine, in fp32.

For MobileNetV2, EfficientNet-Lite0 (224 px, ``packaged:`` ImageNet weights) and ResNet-20 (32 px, the
CIFAR-10 net), a full fine-tuning step (forward, cross-entropy, backward, AdamW) of the encoder plus a
linear head is timed four ways, each in its own fresh process: plain (contiguous NCHW),
channels-last (model and inputs in ``torch.channels_last``), ``torch.compile`` of the loss (as
``TrainConfig(compile=True)`` does), and both. Steady seconds per step are the median over the timed
steps after warm-up; the compiled rows also report the first step (compilation included) and the number
of steps after which compiling has paid for itself. With ``--repeats N`` each family's rows run N times, their
order rotated every repeat (so a load that falls or rises during the run favours no row), and the table shows
the median over repeats.

Usage: ``python benchmarks/step_levers.py [--smoke] [--steps 12] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import benchinfo

FAMILIES = {"mobilenet_v2": ("packaged:mobilenet_v2", 224, 16), "efficientnet_lite0": ("packaged:efficientnet_lite0", 224, 16),
            "resnet20": ("resnet20", 32, 64)}
LEVERS = ("plain", "channels_last", "compile", "channels_last+compile")


def encoder(family: str, data: Path):
    from transferkit.common import load_encoder

    if family == "resnet20":
        from transferkit.vision import resnet20_cifar

        return load_encoder(resnet20_cifar(), feature_dim=64, weights=data / "weights" / "resnet20-cifar10.th")
    import transferkit.vision  # noqa: F401  (registers packaged: specs)

    return load_encoder(FAMILIES[family][0])


def child(family: str, lever: str, steps: int, warmup: int, data: Path) -> dict:
    import torch

    from transferkit.common import ClassificationModel, classification_loss

    torch.manual_seed(0)
    _, size, batch = FAMILIES[family]
    model = ClassificationModel(encoder(family, data), 10).train()
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    if "channels_last" in lever:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = classification_loss()
    if "compile" in lever:
        loss_fn = torch.compile(loss_fn)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        loss = loss_fn(model, {"pixel_values": x, "labels": y})
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"first": times[0], "steady": statistics.median(times[warmup:]), "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchinfo.add_common_arguments(parser, data="folder with weights/resnet20-cifar10.th",
                                   smoke="2 timed steps, ResNet-20 only: checks that the script runs")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--levers", default=",".join(LEVERS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--name", default="step_levers", help="results file name (without .md)")
    parser.add_argument("--compile-families", default=",".join(FAMILIES), help="families whose compiled rows run")
    parser.add_argument("--child-timeout", type=float, default=600.0,
                        help="seconds one row may take (compilation included) before it is reported as not finished")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = benchinfo.set_threads(args.threads or 1)
    if args.child:
        print(json.dumps(child(*args.child, args.steps, args.warmup, Path(args.data))))
        return
    if args.smoke:
        args.steps, args.warmup, args.families = 2, 2, "resnet20"
    load_before, t0 = benchinfo.load_average(), time.time()
    rows: dict = {}
    runs: dict = {}
    chosen = args.levers.split(",")
    for family in args.families.split(","):
        order = [(rep, lv) for rep in range(args.repeats) for lv in chosen[rep % len(chosen):] + chosen[:rep % len(chosen)]]
        for repeat, lever in order:
            if "compile" in lever and family not in args.compile_families.split(","):
                continue
            cmd = [sys.executable, __file__, "--child", family, lever, "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--data", args.data, "--threads", str(args.threads or 1)]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=args.child_timeout,
                                     start_new_session=True)
            except subprocess.TimeoutExpired:
                rows[(family, lever)] = None  # subprocess.run killed the child; its compile workers exit with it
                print(f"{family} {lever}: not finished within {args.child_timeout:.0f} s", flush=True)
                continue
            if out.returncode != 0:
                raise RuntimeError(f"{family} / {lever} failed:\n{out.stderr[-3000:]}")
            one = json.loads(out.stdout.strip().splitlines()[-1])
            runs.setdefault((family, lever), []).append(one)
            print(f"{family} {lever} (repeat {repeat}): steady {one['steady']:.3f} s/step, first {one['first']:.2f} s", flush=True)
    for key, got in runs.items():
        rows[key] = {k: statistics.median(g[k] for g in got) for k in ("first", "steady")} | {
            "batch": got[0]["batch"], "per_repeat": [g["steady"] for g in got]}
    lines = ["# Cheaper training steps per encoder family (fp32)", ""]
    if args.smoke:
        lines += ["**SMOKE RUN**: 2 timed steps, ResNet-20 only.", ""]
    lines += benchinfo.machine_lines(load_before, benchinfo.load_average(), "fp32 (no autocast)", threads)
    lines += [f"- Total wall time: {time.time() - t0:.0f} s", "", __doc__.split("\n\n")[1].replace("\n", " "), "",
              f"Timed steps: {args.steps} after {args.warmup} warm-up steps; random inputs (the step's cost does not "
              "depend on the pixels).", "",
              "| family | lever | steady s/step (per repeat) | images/s | vs plain | first step s | steps to pay back compiling |",
              "|---|---|---|---|---|---|---|"]
    summary = {}
    for family in args.families.split(","):
        plain = rows[(family, "plain")]
        for lever in LEVERS:
            if (family, lever) not in rows:
                continue
            r = rows[(family, lever)]
            if r is None:
                lines.append(f"| {family} | {lever} | not finished within {args.child_timeout:.0f} s (compilation "
                             "included) | - | - | - | - |")
                summary[f"{family}_{lever.replace('+', '_')}"] = "timeout"
                continue
            speedup = plain["steady"] / r["steady"]
            payback = "-"
            if "compile" in lever:
                extra = r["first"] - plain["first"]
                saved = plain["steady"] - r["steady"]
                payback = f"{extra / saved:.0f}" if saved > 0 else "never"
            summary[f"{family}_{lever.replace('+', '_')}"] = f"{speedup:.2f}"
            lines.append(f"| {family} | {lever} | {r['steady']:.3f} ({' / '.join(f'{x:.3f}' for x in r['per_repeat'])}) "
                         f"| {r['batch'] / r['steady']:.1f} | {speedup:.2f}x | {r['first']:.2f} | {payback} |")
    print("RESULT step_levers " + " ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    benchinfo.write_results(args.results_dir, args.name if not args.smoke else "step_levers", args.smoke, lines)


if __name__ == "__main__":
    main()
