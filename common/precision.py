"""Choosing the arithmetic precision that is fastest on the hardware at hand."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX: only then is bf16 autocast not a slowdown.

    ``TRANSFERKIT_CPU_BF16=0`` (or ``1``) overrides the detection, e.g. to time what an AVX2-only
    machine would run (fp32) on one that has bf16.
    """
    forced = os.environ.get("TRANSFERKIT_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_mixed_precision(requested: str = "auto") -> str:
    """Map ``"auto"`` to ``"bf16"``, ``"fp16"`` or ``"no"`` for this machine.

    GPUs with bf16 get bf16; older GPUs get fp16 with loss scaling; CPUs get fp32 unless they
    compute bf16 natively (bf16 autocast on an AVX2-only CPU measured about 15x slower than fp32).
    """
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"
