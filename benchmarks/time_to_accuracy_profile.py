"""What bounds ``benchmarks/time_to_accuracy.py``: where transferkit's first good model spends its time, and what
the PyTorch tutorial's recipe does on the speech encoder.

``--task image|audio``: a fresh process times importing torch and transferkit and loading the encoder, then
cProfiles a linear probe (the documented recipe's first stage: one encoding pass over the training and validation
files, then 30 epochs of the head on cached features), on the same files as time_to_accuracy, one torch thread.
``--tutorial-steps N``: runs the tutorial side's loop (SGD 0.001, momentum 0.9, batch 4, every layer) on the audio
task for N steps and prints the loss and gradient norm every few steps.

    python benchmarks/time_to_accuracy_profile.py --task image
    python benchmarks/time_to_accuracy_profile.py --task audio
    python benchmarks/time_to_accuracy_profile.py --tutorial-steps 60
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path


def profile_probe(kind: str, prep: dict, work: Path, torch_s: float, tk_s: float) -> None:
    import torch
    from time_to_accuracy import TASKS, files

    if kind == "image":
        from transferkit.vision import ImageClassifier as Task
    else:
        from transferkit.audio import AudioClassifier as Task
    t_import = time.perf_counter()
    clf = Task.from_pretrained(TASKS[kind]["spec"], labels=files(prep, kind, "train")[2], strategy="linear_probe")
    t_load = time.perf_counter()
    spent = {"s": 0.0, "n": 0, "t": 0.0}  # the encoder's forward passes, timed by hooks

    def before(module, args, kwargs):
        spent["t"] = time.perf_counter()

    def after(module, args, kwargs, out):
        spent["s"] += time.perf_counter() - spent["t"]
        spent["n"] += len(out)

    clf.encoder.register_forward_pre_hook(before, with_kwargs=True)
    clf.encoder.register_forward_hook(after, with_kwargs=True)
    prof = cProfile.Profile()
    prof.enable()
    clf.fit(prep[f"{kind}_train"], eval=prep[f"{kind}_val"], epochs=30, seed=0, output_dir=str(work / "run"),
            progress=False, plot=False)
    prof.disable()
    t_fit = time.perf_counter()
    print(f"{kind}: importing torch {torch_s:.1f} s, transferkit {tk_s:.1f} s, loading the encoder "
          f"{t_load - t_import:.1f} s, fit {t_fit - t_load:.1f} s, of which the encoder's forward {spent['s']:.1f} s over "
          f"{spent['n']} examples ({spent['n'] / max(spent['s'], 1e-9):.0f}/s; torch {torch.__version__}, 1 thread, "
          "under cProfile)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def tutorial_steps(prep: dict, steps: int) -> None:
    import torch
    from time_to_accuracy import files, model_for

    from transferkit.audio.data import load_audio

    paths, targets, labels = files(prep, "audio", "train")
    model = model_for("audio", len(labels), 0)
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    y = torch.tensor(targets)
    for step, idx in enumerate(torch.randperm(len(paths)).split(4)[:steps]):
        waves = [torch.from_numpy(load_audio(paths[i], 16_000)) for i in idx]
        x = torch.zeros(len(waves), max(len(w) for w in waves))
        mask = torch.zeros(x.shape, dtype=torch.long)
        for row, w in enumerate(waves):
            x[row, :len(w)], mask[row, :len(w)] = w, 1
        loss = torch.nn.functional.cross_entropy(model(input_values=x, attention_mask=mask), y[idx])
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))  # the norm only: nothing clipped
        optimizer.step()
        if step % 6 == 0 or not torch.isfinite(loss):
            print(f"step {step}: loss {loss.item():.4g}, gradient norm {norm.item():.4g}", flush=True)
        if not torch.isfinite(loss):
            break


def main() -> None:
    t0 = time.perf_counter()
    import torch

    torch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    import transferkit.audio
    import transferkit.vision  # noqa: F401

    tk_s = time.perf_counter() - t0
    import benchinfo
    from time_to_accuracy import prepare

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(benchinfo.DEFAULT_DATA), help="folder with hymenoptera/ and fsdd/")
    p.add_argument("--task", choices=("image", "audio"))
    p.add_argument("--tutorial-steps", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TRANSFERKIT_CPU_BF16", "0")
    work = Path(tempfile.mkdtemp(prefix="tta-profile-"))
    os.environ["TRANSFERKIT_CACHE"] = str(work / "cache")  # a cold decode cache, as each side has
    kinds = [args.task] if args.task else ["audio"]
    prep = prepare(work, Path(args.data), False, kinds)
    if args.task:
        profile_probe(args.task, prep, work, torch_s, tk_s)
    if args.tutorial_steps:
        tutorial_steps(prep, args.tutorial_steps)


if __name__ == "__main__":
    main()
