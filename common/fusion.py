"""Model fusion: weight averaging of models fine-tuned from the same start.

* :func:`uniform_soup` averages every ingredient;
* :func:`greedy_soup` adds ingredients best-first while a held-out score does not drop
  (Wortsman et al., 2022, "Model soups");
* :func:`wise_ft` interpolates between the pretrained and the fine-tuned weights
  (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

StateDict = Mapping[str, torch.Tensor]


def _check_compatible(states: Sequence[StateDict]) -> None:
    if not states:
        raise ValueError("need at least one state dict")
    keys = set(states[0])
    for i, s in enumerate(states[1:], 1):
        if set(s) != keys:
            diff = sorted(keys.symmetric_difference(s))[:5]
            raise ValueError(f"state dict {i} has different keys from state dict 0 (e.g. {diff}); "
                             "soups need models of one architecture (merge LoRA adapters first)")
        for k in keys:
            if s[k].shape != states[0][k].shape:
                raise ValueError(f"{k}: shape {tuple(s[k].shape)} in state dict {i} vs {tuple(states[0][k].shape)}")


def average(states: Sequence[StateDict], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Weighted average of floating-point entries; integer buffers (step counters) come from the first."""
    _check_compatible(states)
    weights = list(weights) if weights is not None else [1.0 / len(states)] * len(states)
    out = {}
    for k, v0 in states[0].items():
        if v0.is_floating_point():
            out[k] = sum(w * s[k].detach().float() for w, s in zip(weights, states)).to(v0.dtype)
        else:
            out[k] = v0.clone()
    return out


def uniform_soup(states: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """The plain average of all ingredients."""
    return average(states)


def greedy_soup(
    states: Sequence[StateDict], score: Callable[[StateDict], float], *, scores: Sequence[float] | None = None
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Greedy soup: sort ingredients by held-out score, keep each one that does not lower the soup's score.

    Args:
        states: fine-tuned state dicts from the same pretrained start.
        score: held-out score of a state dict (higher is better): evaluate on validation data,
            never on the test set.
        scores: the ingredients' own scores, if already known.

    Returns:
        The soup and the indices of the ingredients it contains.
    """
    _check_compatible(states)
    scores = list(scores) if scores is not None else [score(s) for s in states]
    order = sorted(range(len(states)), key=lambda i: -scores[i])
    chosen = [order[0]]
    best = scores[order[0]]
    for i in order[1:]:
        candidate = average([states[j] for j in chosen + [i]])
        s = score(candidate)
        if s >= best:
            chosen.append(i)
            best = s
    return average([states[j] for j in chosen]), chosen


def wise_ft(pretrained: StateDict, finetuned: StateDict, alpha: float = 0.5) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * pretrained + alpha * finetuned``; alpha=1 is the fine-tuned model."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return average([pretrained, finetuned], [1.0 - alpha, alpha])
