"""Model cards and uploads to the Hugging Face Hub."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class HubUnavailableError(RuntimeError):
    """The Hub could not be reached (offline, no network, or HF_HUB_OFFLINE=1)."""


def write_model_card(
    folder: str | os.PathLike,
    *,
    task: str,
    base_model: str | None,
    strategy: str,
    data: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    config: Mapping[str, Any] | None = None,
    pipeline_tag: str | None = None,
    library_name: str = "transformers",
    extra: str = "",
    title: str | None = None,
) -> Path:
    """Write ``README.md`` with Hub metadata, what the model does, how it was trained and how well it does."""
    metrics = dict(metrics or {})
    front = ["---", f"library_name: {library_name}", "tags:", "- transferkit", f"- {task}"]
    if pipeline_tag:
        front.append(f"pipeline_tag: {pipeline_tag}")
    if base_model and not base_model.startswith(("/", ".", "torchvision:")) and not Path(base_model).exists():
        front.append(f"base_model: {base_model}")
    front.append("---")
    lines = [*front, "", f"# {title or f'{task} model fine-tuned with transferkit'}", ""]
    if base_model:
        lines.append(f"- **Base encoder:** `{base_model}`")
    lines.append(f"- **Strategy:** `{strategy}`")
    lines += [f"- **{k.replace('_', ' ').capitalize()}:** {v}" for k, v in data.items()]
    if metrics:
        lines += ["", "## Evaluation", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    if pipeline_tag and library_name == "transformers":
        lines += ["", "## Use", "", "```python", "from transformers import pipeline", "",
                  f'pipe = pipeline("{pipeline_tag}", model="PATH_OR_REPO_ID")', "```"]
    if config:
        lines += ["", "## Training configuration", "", "```json", json.dumps(dict(config), indent=2, default=str), "```"]
    if extra:
        lines += ["", extra]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload model trained with transferkit",
) -> str:
    """Upload an exported folder to ``repo_id`` (created if missing); returns the commit URL.

    Offline, it raises :class:`HubUnavailableError` and leaves the folder untouched. The token is
    read from the argument or the usual ``HF_TOKEN`` / ``hf auth login`` and never logged.
    """
    folder = Path(folder)
    if not (folder / "config.json").exists() and not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"{folder} holds no exported model (no config.json or .safetensors); export it first")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise HubUnavailableError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set; the export stays in {folder}")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    except Exception as err:  # network errors come in many types (requests, httpx, OSError)
        secret = token or os.environ.get("HF_TOKEN")
        # An error that quotes the token (a request dump, a URL with credentials) is re-raised without it.
        leaks = bool(secret) and any(secret in str(e) for e in _chain(err))
        if _is_network_error(err):
            raise HubUnavailableError(f"cannot reach the Hugging Face Hub to push {repo_id}; "
                                      f"the export stays in {folder}: {type(err).__name__}") from (None if leaks else err)
        if leaks:
            raise RuntimeError(f"pushing {repo_id} failed ({type(err).__name__}): "
                               f"{str(err).replace(secret, '***')}; the export stays in {folder}") from None
        raise
    return str(getattr(info, "commit_url", info))


class PushToHubMixin:
    """``push_to_hub`` for any object whose ``save(folder)`` writes an exportable folder."""

    def save(self, folder: str | os.PathLike) -> Path:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def push_to_hub(self, repo_id: str, *, folder: str | os.PathLike | None = None, token: str | None = None,
                    private: bool = False) -> str:
        """Export (to ``folder`` or a temporary folder) and upload to the Hub; returns the commit URL."""
        import tempfile

        folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="transferkit-export-"))
        self.save(folder)
        return push_to_hub(folder, repo_id, token=token, private=private)


def _is_network_error(err: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(err)}
    return bool(names & {"ConnectionError", "ConnectError", "Timeout", "ConnectTimeout", "ReadTimeout",
                         "OfflineModeIsEnabled", "gaierror", "MaxRetryError", "NewConnectionError"}) or any(
        isinstance(e, (ConnectionError, TimeoutError)) for e in _chain(err))


def _chain(err: BaseException):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__
