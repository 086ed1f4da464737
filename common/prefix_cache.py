"""Frozen-prefix cache: run the frozen bottom of an encoder once, then train only its top.

When a stage trains only the top layers of an encoder (``partial``), leaves every layer below them and
the stem frozen, and the training data carries no random augmentation, the frozen blocks see the same
input every epoch and compute the same output. :class:`FrozenPrefix` computes those outputs (the input of
the first trainable layer) once for the training and evaluation examples, stores them on disk keyed like
the feature cache (the frozen blocks' weights and buffers, the data, the preprocessing, the split point),
and for the rest of the stage replays them: the frozen modules' ``forward`` is swapped for a pass-through,
the last frozen layer returns the stored output, and each later step runs only the trainable top.

The frozen blocks are computed in inference mode (BatchNorm on its running statistics, dropout off) and in
fp32: that is what makes their output a function of the example alone. The uncached path runs frozen
BatchNorms in inference mode too (the Trainer keeps a frozen norm's statistics), but dropout inside frozen
blocks stays on and autocast applies; for encoders without dropout in their frozen blocks, in fp32, both
paths compute the same thing.

Before a stage uses the cache it checks, on the first evaluation batch, that replaying gives the features
the whole encoder gives (to 1e-4); any encoder whose forward does not fit the replay (a layer's output
that is not one tensor, reshapes between the stem and the layers) falls back to the uncached path, logged.

Example:
    >>> prefix = FrozenPrefix.find(encoder, split=3)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .encoders import Encoder
from .features import fingerprint
from .memory_format import channels_last

log = logging.getLogger(__name__)

#: the cache stores at most this many bytes of activations (in memory and on disk) per stage
MAX_BYTES = 2 * 1024**3


class _Replayed(Exception):
    """Raised by the capture hook to stop a forward pass once the frozen prefix has run."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output


class PrefixSet(torch.utils.data.Dataset):
    """Stored prefix outputs and labels; batches come out whole (``__getitems__``) under the input's name."""

    def __init__(self, key: str, acts: torch.Tensor, labels: torch.Tensor) -> None:
        self.key, self.acts, self.labels = key, acts, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {self.key: self.acts[i], "labels": self.labels[i]}

    def __getitems__(self, idx: list[int]) -> dict:
        idx_t = torch.as_tensor(idx)
        return {self.key: self.acts[idx_t], "labels": self.labels[idx_t]}


def _whole(batch: dict) -> dict:
    return batch


class FrozenPrefix:
    """The frozen stem and layers ``0..split-1`` of ``encoder``; ``layers[split]`` is the first that learns.

    Args:
        encoder: the encoder whose bottom is frozen.
        split: index (in ``encoder.layer_modules()``) of the first layer with a trainable parameter.
    """

    def __init__(self, encoder: Encoder, split: int) -> None:
        layers = encoder.layer_modules()
        if not 0 < split < len(layers):
            raise ValueError(f"split must be in 1..{len(layers) - 1}, got {split}")
        self.encoder, self.split, self.layers = encoder, split, layers
        self.last = layers[split - 1]
        self.frozen = _stem_modules(encoder.module, layers) + layers[:split - 1]
        self.current: torch.Tensor | None = None
        self._hook: Any = None

    @classmethod
    def find(cls, encoder: Encoder) -> FrozenPrefix | None:
        """The prefix below the first layer with a trainable parameter, or None when nothing below it is frozen
        (the stem learns, the encoder lists no layers, or the lowest layer learns)."""
        layers = encoder.layer_modules()
        if not layers:
            return None
        split = next((i for i, m in enumerate(layers) if any(p.requires_grad for p in m.parameters())), len(layers))
        in_layers = {id(p) for m in layers for p in m.parameters()}
        stem_learns = any(p.requires_grad for p in encoder.module.parameters() if id(p) not in in_layers
                          and _before_layers(encoder.module, layers, p))
        if split == 0 or split == len(layers) or stem_learns:
            return None
        return cls(encoder, split)

    def fingerprint(self) -> str:
        """Hash of the frozen modules' weights and buffers, the encoder spec and the split point."""
        tensors = [t for m in self.frozen + [self.last] for t in list(m.state_dict().values())]
        return fingerprint(self.encoder.spec, self.split, *tensors)

    # -- computing the prefix outputs ------------------------------------------------------------
    @torch.no_grad()
    def outputs(self, batch: dict) -> torch.Tensor:
        """The last frozen layer's output for one batch of encoder inputs, in inference mode."""
        hook = self.last.register_forward_hook(_stop)
        was = self.encoder.training
        self.encoder.eval()
        try:
            self.encoder(**batch)
        except _Replayed as done:
            return done.output
        finally:
            hook.remove()
            self.encoder.train(was)
        raise RuntimeError("the encoder's forward never reached its last frozen layer")

    def compute(self, dataset: Sequence, collate: Callable, batch_size: int, progress: bool) -> tuple[str, torch.Tensor, torch.Tensor]:
        from tqdm.auto import tqdm

        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
        name, acts, labels, size = None, [], [], 0
        with channels_last(self.encoder):
            for batch in tqdm(loader, desc="caching frozen blocks", disable=not progress, leave=False):
                labels.append(batch.pop("labels"))
                if len(batch) != 1:
                    raise _NotReplayable(f"the encoder takes {sorted(batch)}; the cache replays one input tensor")
                name = next(iter(batch))
                out = self.outputs(batch)
                if not torch.is_tensor(out):
                    raise _NotReplayable(f"layer {self.split - 1} returns {type(out).__name__}, not a tensor")
                size += out.numel() * out.element_size()
                if size > MAX_BYTES:
                    raise _NotReplayable(f"the frozen blocks' outputs exceed {MAX_BYTES / 1024**3:.0f} GiB")
                acts.append(out.contiguous())
        return name, torch.cat(acts), torch.cat(labels)

    # -- replaying ---------------------------------------------------------------------------------
    def attach(self) -> None:
        """Swap the frozen modules' ``forward`` for a pass-through and the last frozen layer's for the stored output.

        The weights stay registered, so checkpoints and ``state_dict`` are those of the whole model."""
        for m in self.frozen:
            m.forward = _pass_through
        self.last.forward = self._replay
        self._hook = self.encoder.register_forward_pre_hook(self._stash, with_kwargs=True)

    def detach(self) -> None:
        for m in self.frozen + [self.last]:
            m.__dict__.pop("forward", None)
        if self._hook is not None:
            self._hook.remove()
        self._hook, self.current = None, None

    def _stash(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        tensors = [v for v in (*args, *kwargs.values()) if torch.is_tensor(v)]
        self.current = tensors[0]

    def _replay(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.current


class _NotReplayable(Exception):
    """This encoder's forward cannot be replayed from stored prefix outputs (the reason says why)."""


def _stop(module: nn.Module, args: Any, output: Any) -> None:
    raise _Replayed(output)


def _pass_through(*args: Any, **kwargs: Any) -> Any:
    return args[0] if args else next(iter(kwargs.values()))


def _before_layers(root: nn.Module, layers: list[nn.Module], param: nn.Parameter) -> bool:
    """Whether ``param`` is registered before the first layer (the stem) rather than after the last (the top)."""
    first = next(iter(layers[0].parameters()), None)
    for p in root.parameters():
        if p is param:
            return True
        if p is first:
            return False
    return False


def _stem_modules(root: nn.Module, layers: list[nn.Module]) -> list[nn.Module]:
    """The outermost modules whose parameters all sit before the first layer (a stem convolution, its norm)."""
    layer_ids = {id(m) for layer in layers for m in layer.modules()}
    out: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if id(child) in layer_ids:
                continue
            params = list(child.parameters())
            if params and all(_before_layers(root, layers, p) for p in params):
                out.append(child)
            elif params:
                visit(child)

    visit(root)
    return out


def prefix_stage(encoder: Encoder, strategy: Any, data: Any, config: Any, run_dir: Path) -> tuple[Any, FrozenPrefix] | None:
    """``(datasets of stored prefix outputs, the attached prefix)`` for a stage that may use the cache, else None.

    The stage may when its strategy's settings have ``prefix_cache`` on, the data carries no random
    augmentation (``data.random_augment`` False), one process trains, the strategy's groups left a frozen
    prefix, and the replay check passes. The caller must call ``prefix.detach()`` when the stage ends.
    """
    from .task import StageData

    if not getattr(getattr(strategy, "config", None), "prefix_cache", False) or getattr(data, "random_augment", True):
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or data.probe_train is None:
        return None
    prefix = FrozenPrefix.find(encoder)
    if prefix is None:
        return None
    fps = data.fingerprints
    store = Path(run_dir) / "prefix"
    kw = {"collate": data.eval_collate, "batch_size": config.effective_eval_batch_size, "progress": config.progress}
    try:
        sets = {part: _stored(prefix, store, examples, (prefix.fingerprint(), fps.get(part), fps.get("preprocess")), kw)
                for part, examples in (("train", data.probe_train), ("eval", data.eval)) if examples is not None}
        part = "eval" if "eval" in sets else "train"
        _check_replay(prefix, sets[part], data.eval if part == "eval" else data.probe_train, data.eval_collate)
    except _NotReplayable as why:
        log.info("frozen-prefix cache not used: %s", why)
        return None
    log.info("frozen-prefix cache: layers below %d computed once, later steps run only the top", prefix.split)
    stage = StageData(sets["train"], sets.get("eval"), _whole)
    return stage, prefix


def _stored(prefix: FrozenPrefix, store: Path, examples: Sequence, key_parts: tuple, kw: dict) -> PrefixSet:
    from safetensors.torch import load_file, save_file

    path = store / f"{fingerprint(*key_parts)}.safetensors"
    if path.exists():
        saved = load_file(str(path))
        name = path.with_suffix(".name").read_text()
        return PrefixSet(name, saved["acts"], saved["labels"])
    name, acts, labels = prefix.compute(examples, **kw)
    store.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"acts": acts, "labels": labels}, str(tmp))
    path.with_suffix(".name").write_text(name)
    os.replace(tmp, path)
    return PrefixSet(name, acts, labels)


def _check_replay(prefix: FrozenPrefix, stored: PrefixSet, examples: Sequence, collate: Callable) -> None:
    """Replaying the first stored examples must give the whole encoder's features (inference mode, to 1e-4);
    on success the prefix is left attached."""
    n = min(4, len(stored))
    batch = collate([examples[i] for i in range(n)])
    batch.pop("labels")
    enc = prefix.encoder
    was = enc.training
    enc.eval()
    try:
        with torch.no_grad():
            want = enc(**batch)
            prefix.attach()
            try:
                got = enc(**{stored.key: stored.acts[:n]})
            except Exception as err:  # any forward that does not fit the replay falls back to the uncached path
                raise _NotReplayable(f"the encoder's forward does not replay ({type(err).__name__}: {err})") from err
            finally:
                prefix.detach()
    finally:
        enc.train(was)
    if got.shape != want.shape or not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
        raise _NotReplayable("replayed features differ from the whole encoder's")
    prefix.attach()
