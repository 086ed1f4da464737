"""What every benchmark result records: the machine, its load, the commit and the exact command."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def commit() -> str:
    """The checked-out commit, read from .git without running git."""
    git = ROOT / ".git"
    if git.is_file():  # a worktree: .git names its own folder, whose commondir holds the branches
        git = Path(git.read_text().split("gitdir:", 1)[1].strip())
    head = git / "HEAD"
    if not head.exists():
        return "unknown (no .git)"
    ref = head.read_text().strip()
    if not ref.startswith("ref: "):
        return ref[:12]
    name = ref[5:]
    if (git / "commondir").exists():
        git = (git / (git / "commondir").read_text().strip()).resolve()
    if (git / name).exists():
        return (git / name).read_text().strip()[:12]
    packed = git / "packed-refs"
    for line in packed.read_text().splitlines() if packed.exists() else []:
        if line.endswith(" " + name):
            return line.split()[0][:12]
    return f"unknown ({name} has no commit yet)"


def command() -> str:
    return " ".join(shlex.quote(a) for a in ["python", *sys.argv])


def machine_lines(load_before: str, load_after: str, precision: str, threads: str) -> list[str]:
    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags.split()]
    shared = _shared_note(load_before, load_after)
    return [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores ({', '.join(isa) or 'no AVX2'}), "
        f"torch {torch.__version__}, Python {platform.python_version()}; torch threads: {threads}",
        f"- Precision: {precision}",
        f"- Load average (1, 5, 15 min) before: {load_before}; after: {load_after}. {shared}",
        f"- Commit: `{commit()}` (HEAD when run, read from .git; uncommitted changes are not detected)",
        f"- Command: `{command()}`",
    ]


def _shared_note(before: str, after: str) -> str:
    # Only the load before the run speaks of other jobs: the load after includes this run's own.
    try:
        other = float(before.split(",")[0])
    except ValueError:
        return ""
    cores = os.cpu_count() or 1
    if other > 0.5:
        return (f"Other jobs were running when it started (1-minute load {other:.2f} on {cores} cores): absolute "
                "times are pessimistic; ratios measured side by side in this run are the numbers to read.")
    return "The machine was otherwise idle when it started (the load after includes this run's own)."


def add_common_arguments(parser, *, data: str, smoke: str) -> None:
    """The options every benchmark takes: --data (``data`` says what it must hold), --smoke, --results-dir, --threads."""
    parser.add_argument("--data", default=str(DEFAULT_DATA), help=data)
    parser.add_argument("--smoke", action="store_true", help=smoke)
    parser.add_argument("--results-dir", help="where the results go (default benchmarks/results)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores when idle, 1 when shared)")


def results_path(results_dir: str | None, name: str, smoke: bool) -> Path:
    folder = Path(results_dir) if results_dir else ROOT / "benchmarks" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (f"{name}_smoke.md" if smoke else f"{name}.md")


def write_results(results_dir: str | None, name: str, smoke: bool, lines: list[str]) -> Path:
    """Write a benchmark's markdown report (``results_path``) and say where."""
    path = results_path(results_dir, name, smoke)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")
    return path


def set_threads(requested: int) -> str:
    """Set torch's intra-op threads; 0 picks them from the load: all cores when idle, 1 when shared.

    On a machine where other jobs already keep every core busy, OpenMP threads of one process wait
    for each other: measured here, a ResNet-20 training step ran 5-7x slower with 2 threads than
    with 1 while two other training jobs ran on the 2 cores.
    """
    import torch

    cores = os.cpu_count() or 1
    if requested > 0:
        torch.set_num_threads(requested)
        return f"{requested} (--threads)"
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    threads = 1 if busy >= cores - 0.5 else cores
    torch.set_num_threads(threads)
    return f"{threads} (chosen from the load average {busy:.1f} on {cores} cores)"


def recipe_text(recipe: dict) -> str:
    """What a recipe search chose, one line: its settings, then its dev score, trials and search seconds."""
    shown = ", ".join(f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}" for k, v in recipe.items()
                      if k not in ("dev_examples", "dev_score", "trials", "search_seconds"))
    return f"{shown}; dev {recipe['dev_score']:.3f} after {recipe['trials']} trials ({recipe['search_seconds']:.0f} s of search)"


def epoch_clock():
    """A ``transformers.TrainerCallback`` that records each epoch's wall seconds in ``.seconds``."""
    from transformers import TrainerCallback

    class EpochClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_epoch_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, *a, **k):
            self.seconds.append(time.perf_counter() - self.t0)

    return EpochClock()
