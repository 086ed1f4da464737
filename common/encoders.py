"""Pretrained encoders behind one contract.

An :class:`Encoder` is the pretrained body of a model: it maps inputs to pooled features of
size ``feature_dim``, lists its parameters as ordered ``blocks()`` (input side first) so that
strategies can freeze or rate them by depth, and carries the ``processor`` that prepares its
inputs. :func:`load_encoder` builds one from a Hub id, a local Hugging Face folder, a ``scheme:name``
spec that a domain registered (vision registers ``torchvision:``), or any ``nn.Module``.

This module knows no domain: each domain registers the Hugging Face task it loads (which Auto
classes, which configs it claims) with :func:`register_hf_task`, and its own spec schemes with
:func:`register_encoder_scheme`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .registry import Registry, load_domains

log = logging.getLogger(__name__)

# Names under which classification models keep their final layer: transformers' *ForXClassification
# ("classifier"), timm ("head"), torchvision ResNets ("fc") and ViTs ("heads").
_HEAD_NAMES = ("classifier", "head", "fc", "heads")
HEAD_PREFIXES = tuple(f"{name}." for name in _HEAD_NAMES)


class EncoderNotFoundError(OSError):
    """Raised when a model id cannot be resolved offline or on the Hub."""


@dataclass
class EncoderBlock:
    """A named, ordered group of encoder parameters (an embedding stem, one layer, the top norm)."""

    name: str
    params: dict[str, nn.Parameter] = field(default_factory=dict)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.params.values())


class Encoder(nn.Module):
    """A pretrained body that maps inputs to pooled features.

    Args:
        module: the network. Its parameters are the encoder's parameters.
        feature_dim: size of the pooled feature vector ``forward`` returns.
        processor: the object that prepares raw inputs for this encoder (an image processor or
            feature extractor for Hugging Face models; ``None`` where the caller prepares inputs).
        forward_fn: ``forward_fn(module, *args, **kwargs) -> (batch, feature_dim)``; default calls
            the module and pools a 3-D or 4-D output by averaging.
        layers: the module list that holds the repeated blocks, if known; found automatically.
        spec: where the encoder came from, for model cards and fingerprints.
        hf_model: the Hugging Face ``*ForXClassification`` model whose classifier was removed,
            when there is one; export puts a trained head back into it.

    Example:
        >>> body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        >>> enc = Encoder(body, feature_dim=16)
        >>> enc(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        module: nn.Module,
        feature_dim: int,
        *,
        processor: Any = None,
        forward_fn: Callable[..., torch.Tensor] | None = None,
        layers: Sequence[nn.Module] | None = None,
        spec: str | None = None,
        hf_model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive integer, got {feature_dim}")
        self.module = module
        self.feature_dim = int(feature_dim)
        self.processor = processor
        self.spec = spec or type(module).__name__
        self._forward_fn = forward_fn or _default_forward
        # Both are views into `module`: kept outside the module tree so no weight is registered twice.
        self.__dict__["_layers"] = layers
        self.__dict__["hf_model"] = hf_model
        self._pinned: set[int] = set()

    def pin_frozen(self, module: nn.Module | None) -> None:
        """Keep ``module``'s parameters frozen under every strategy (e.g. wav2vec2's waveform CNN);
        ``None`` releases every pin."""
        if module is None:
            self._pinned = set()
            return
        for p in module.parameters():
            p.requires_grad_(False)
            self._pinned.add(id(p))

    def learnable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Named parameters that strategies may train: all but the pinned ones."""
        return [(n, p) for n, p in self.named_parameters() if id(p) not in self._pinned]

    def set_trainable(self, flag: bool) -> None:
        """Switch every learnable parameter on or off; pinned ones stay frozen."""
        for _, p in self.learnable_parameters():
            p.requires_grad_(flag)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._forward_fn(self.module, *args, **kwargs)

    def layer_modules(self) -> list[nn.Module]:
        """The repeated layers in forward order (given at construction or found), empty when there are none."""
        layers = self._layers if self._layers is not None else _find_layers(self.module)
        return list(layers or [])

    def blocks(self) -> list[EncoderBlock]:
        """Ordered parameter groups, input side first: stem, each repeated layer, top."""
        layers = self._layers if self._layers is not None else _find_layers(self.module)
        named = list(self.module.named_parameters())
        if layers is None or len(layers) == 0:
            return self._without_pinned(_blocks_from_children(self.module))
        layer_param_ids = [{id(p) for p in layer.parameters()} for layer in layers]
        all_layer_ids = set().union(*layer_param_ids)
        stem, top = EncoderBlock("stem"), EncoderBlock("top")
        seen_layer = False
        for name, p in named:
            if id(p) in all_layer_ids:
                seen_layer = True
            elif seen_layer:
                top.params[name] = p
            else:
                stem.params[name] = p
        by_id = {id(p): n for n, p in named}
        blocks = [stem] + [
            EncoderBlock(f"layer{i}", {by_id[id(p)]: p for p in layer.parameters() if id(p) in by_id})
            for i, layer in enumerate(layers)
        ] + [top]
        return self._without_pinned(blocks)

    def _without_pinned(self, blocks: list[EncoderBlock]) -> list[EncoderBlock]:
        for b in blocks:
            b.params = {n: p for n, p in b.params.items() if id(p) not in self._pinned}
        return [b for b in blocks if b.params]

    def fingerprint(self) -> str:
        """A hash of every parameter and buffer: equal fingerprints mean equal outputs."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.spec.encode())
        for name, t in sorted(self.module.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()


def _default_forward(module: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
    if not args and len(kwargs) == 1:
        # Plain modules take their input positionally; domain code passes it by name (pixel_values=...).
        args, kwargs = (next(iter(kwargs.values())),), {}
    out = module(*args, **kwargs)
    if hasattr(out, "logits"):
        out = out.logits
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if out.dim() == 4:  # (B, C, H, W) feature map
        out = out.mean(dim=(2, 3))
    elif out.dim() == 3:  # (B, T, D) sequence
        out = out.mean(dim=1)
    elif out.dim() != 2:
        raise ValueError(f"encoder output has shape {tuple(out.shape)}; expected (batch, features)")
    return out


def _find_layers(module: nn.Module) -> list[nn.Module] | None:
    """The repeated blocks that hold most of the parameters: a transformer's layers, a CNN's residual blocks.

    Sibling stages (a ResNet's ``layer1``..``layer4``) are flattened into one ordered list, so that
    depth-wise strategies see every residual block rather than only the largest stage.
    """
    total = sum(p.numel() for p in module.parameters()) or 1
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    stages = [c for c in module.children() if isinstance(c, (nn.ModuleList, nn.Sequential)) and len(c) > 0]
    if len(stages) > 1 and sum(count(s) for s in stages) >= 0.5 * total:
        return [block for stage in stages for block in stage]
    best, best_n = None, 0
    for _, m in module.named_modules():
        if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) > 1 and m is not module:
            n = count(m)
            if n > best_n:
                best, best_n = m, n
    # A small list (a conv stem, a head MLP) is not the backbone; fall back to top-level children.
    return list(best) if best is not None and best_n >= 0.5 * total else None


def _blocks_from_children(module: nn.Module) -> list[EncoderBlock]:
    blocks, assigned = [], set()
    for cname, child in module.named_children():
        params = {f"{cname}.{n}": p for n, p in child.named_parameters()}
        if params:
            blocks.append(EncoderBlock(cname, params))
            assigned.update(id(p) for p in params.values())
    loose = {n: p for n, p in module.named_parameters() if id(p) not in assigned}
    if loose:  # parameters registered directly on the module (a class token, a scale)
        blocks.insert(0, EncoderBlock("stem", loose))
    return blocks


def take_head(model: nn.Module) -> tuple[str, int]:
    """Replace the final linear layer of a classification model with Identity; return (dotted path, in_features).

    The head is the first of ``classifier``, ``head``, ``fc``, ``heads`` that the model has: a
    Linear, or a module whose last layer with weights is one, found depth first (torchvision's
    ``Sequential(Dropout, Linear)``, AST's ``classifier`` = ``ASTMLPHead(layernorm, dense)``, timm's
    ``ClassifierHead``). Only that Linear goes; the layers before it (AST's LayerNorm) stay in the
    encoder, so the features are what the original final layer read.

    Example:
        >>> model = nn.Module()
        >>> model.classifier = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 3), nn.Flatten())
        >>> take_head(model), model.classifier[1]
        (('classifier.1', 8), Identity())
    """
    for name in _HEAD_NAMES:
        path, head = name, getattr(model, name, None)
        while isinstance(head, nn.Module) and not isinstance(head, nn.Linear):
            # Trailing layers without weights (Flatten, Dropout, Identity) do not classify.
            weighted = [(n, c) for n, c in head.named_children() if next(c.parameters(), None) is not None]
            child, head = weighted[-1] if weighted else (None, None)
            path = f"{path}.{child}"
        if isinstance(head, nn.Linear):
            model.set_submodule(path, nn.Identity())
            return path, head.in_features
    raise ValueError(f"cannot find the classification layer of {type(model).__name__} (looked for a Linear, "
                     f"or a module ending in one, under {_HEAD_NAMES})")


@dataclass(frozen=True)
class HFTask:
    """How one domain loads Hugging Face checkpoints: the Auto classes (by name, from
    ``transformers``) and which configs it claims when the caller names no task."""

    model_class: str
    processor_class: str
    claims: Callable[[Any], bool]


HF_TASKS: Registry[HFTask] = Registry("encoder task")
ENCODER_SCHEMES: Registry[Callable[..., Encoder]] = Registry("encoder scheme")


def register_hf_task(name: str, model_class: str, processor_class: str, claims: Callable[[Any], bool]) -> HFTask:
    """Let ``load_encoder(..., task=name)`` load Hugging Face checkpoints through ``model_class``."""
    return HF_TASKS.register(name, HFTask(model_class, processor_class, claims))


def register_encoder_scheme(scheme: str, loader: Callable[..., Encoder]) -> Callable[..., Encoder]:
    """Let ``load_encoder("scheme:name", weights=..., ...)`` call ``loader(name, weights=..., ...)``."""
    return ENCODER_SCHEMES.register(scheme, loader)


def _hf_task(config: Any, task: str | None) -> HFTask:
    if not HF_TASKS.names():
        load_domains()
    if task is not None:
        return HF_TASKS.get(task)
    claimed = [name for name, t in HF_TASKS.items() if t.claims(config)]
    if len(claimed) != 1:
        raise ValueError(f"cannot tell which task a {type(config).__name__} serves ({claimed or 'none claims it'}); "
                         f"pass task= (one of {', '.join(HF_TASKS.names())})")
    return HF_TASKS.get(claimed[0])


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' per-load progress bars and the expected "newly initialized classifier" warning."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _load_hf(spec: str, task: str | None, trust_remote_code: bool, revision: str | None) -> Encoder:
    import transformers
    from transformers import AutoConfig

    kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
    try:
        config = AutoConfig.from_pretrained(spec, **kwargs)
    except OSError as err:
        local = Path(spec).expanduser().exists()
        where = "the folder has no config.json" if local else "it is not a local folder and the Hub could not be reached"
        offline = " (HF_HUB_OFFLINE=1 is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise EncoderNotFoundError(
            f"Cannot load encoder {spec!r}: {where}{offline}; download it once with "
            f"`hf download {spec} --local-dir DIR` and pass that DIR instead."
        ) from err
    hf_task = _hf_task(config, task)
    with quiet_transformers():
        model = getattr(transformers, hf_task.model_class).from_pretrained(spec, config=config, **kwargs)
    head_path, dim = take_head(model)
    model.config.transferkit_head = head_path
    processor = None
    try:
        processor = getattr(transformers, hf_task.processor_class).from_pretrained(spec, **kwargs)
    except (OSError, ValueError, KeyError):
        log.warning("%s has no preprocessor config; the caller must prepare inputs", spec)

    def forward(m: nn.Module, *args: Any, **kw: Any) -> torch.Tensor:
        return m(*args, **kw).logits  # the classifier is Identity: these are the pooled features

    return Encoder(model, dim, processor=processor, forward_fn=forward, spec=spec, hf_model=model,
                   layers=_find_layers(model.base_model))


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    # DataParallel checkpoints prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


_SCHEME = re.compile(r"^([a-z][a-z0-9_+-]*):(?!//)")


def load_encoder(
    spec: str | os.PathLike | nn.Module | Encoder,
    *,
    task: str | None = None,
    feature_dim: int | None = None,
    weights: str | os.PathLike | None = None,
    processor: Any = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> Encoder:
    """Load a pretrained encoder.

    Args:
        spec: a Hub id (``"google/vit-base-patch16-224-in21k"``), a local folder in Hugging Face
            format, ``"scheme:name"`` for a scheme a domain registered (``"torchvision:resnet50"``
            with ``weights``), an ``nn.Module`` (with ``feature_dim``) or an :class:`Encoder`,
            returned as is.
        task: the registered task of a Hugging Face model (``"image"``, ``"audio"``; inferred
            from the config when only one task claims it).
        feature_dim: output size of a plain ``nn.Module``.
        weights: a local ``.pt``/``.pth``/``.safetensors`` file for scheme specs or modules.
        processor: overrides the processor that comes with the model.
        trust_remote_code: allow code from the model repository to run (off by default).
        revision: Hub revision (branch, tag or commit).

    Example:
        >>> enc = load_encoder(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), feature_dim=4)
        >>> enc.feature_dim
        4
    """
    if isinstance(spec, Encoder):
        return spec
    if isinstance(spec, nn.Module):
        if feature_dim is None:
            raise ValueError("pass feature_dim= with an nn.Module encoder: the size of the features it returns")
        if weights is not None:
            spec.load_state_dict(load_state_file(weights))
        return Encoder(spec, feature_dim, processor=processor, spec=type(spec).__name__)
    spec = str(spec)
    scheme = _SCHEME.match(spec)
    if scheme and not Path(spec).exists():
        if scheme[1] not in ENCODER_SCHEMES:
            load_domains()
        enc = ENCODER_SCHEMES.get(scheme[1])(spec[scheme.end():], weights=weights)
    else:
        enc = _load_hf(spec, task, trust_remote_code, revision)
    if processor is not None:
        enc.processor = processor
    return enc
