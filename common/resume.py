"""What a checkpoint needs, beyond Accelerate's state, for a resumed run to equal an uninterrupted one.

- the random generators' states as JSON (Accelerate's pickle of them fails to load under
  ``weights_only``), one file per process;
- :class:`RngTap`: the generators' state before each training fetch, since Accelerate's loader
  reads one batch ahead of the step a checkpoint follows;
- the step checkpoints' folders (``checkpoints/step-<N>``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

STEP_PREFIX = "step-"


def step_dirs(folder: Path) -> list[Path]:
    """Step checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    dirs = [d for d in folder.iterdir() if d.is_dir() and d.name.startswith(STEP_PREFIX) and d.name[len(STEP_PREFIX):].isdigit()]
    return sorted(dirs, key=lambda d: int(d.name[len(STEP_PREFIX):]))


def rng_state() -> dict:
    """Every random generator's state as JSON (Accelerate's pickle of them fails to load under weights_only)."""
    import random

    import numpy as np

    state = cpu_rng_json((random.getstate(), np.random.get_state(), torch.get_rng_state()))
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


class RngTap:
    """Records the random generators' state before each training fetch, and replays a resume.

    Accelerate's loader fetches one batch ahead, so when step ``k`` ends (and a checkpoint is
    written) batch ``k+1`` has already been loaded and collated, drawing from the same generators
    as the model's dropout. A resumed run therefore sets the state from before that fetch, fetches
    batch ``k+1`` again, then sets the checkpoint's state, which is what the uninterrupted run had
    when it fetched batch ``k+2``.
    """

    def __init__(self) -> None:
        self.last: tuple | None = None
        self._before: dict | None = None
        self._after: dict | None = None

    def replay(self, before: dict | None, after: dict) -> None:
        self._before, self._after = before, after

    def before_fetch(self) -> None:
        import random

        import numpy as np

        if self._before is not None:
            set_rng_state(self._before)
            self._before = None
        self.last = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def after_collate(self) -> None:
        if self._after is not None:
            set_rng_state(self._after)
            self._after = None


class TappedDataset(Dataset):
    """The training set, telling the tap before each batch is read (the loader reads whole batches
    through ``__getitems__``)."""

    def __init__(self, dataset: Any, tap: RngTap) -> None:
        self.dataset, self.tap = dataset, tap

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i]

    def __getitems__(self, indices: list) -> list:
        self.tap.before_fetch()
        if hasattr(self.dataset, "__getitems__"):  # a whole batch at once (cached features)
            return self.dataset.__getitems__(indices)
        return [self.dataset[i] for i in indices]


class TappedCollate:
    """The collate function, telling the tap once a batch is ready."""

    def __init__(self, collate_fn: Callable | None, tap: RngTap) -> None:
        from torch.utils.data import default_collate

        self.collate_fn, self.tap = collate_fn or default_collate, tap

    def __call__(self, rows: list) -> Any:
        batch = self.collate_fn(rows)
        self.tap.after_collate()
        return batch


def cpu_rng_json(raw: tuple) -> dict:
    """(python, numpy, torch) generator states, as returned by their getters, as JSON."""
    python, np_state, torch_state = raw
    return {"python": [python[0], list(python[1]), python[2]], "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch_state.tolist()}
