"""Classification by transfer: an encoder plus a linear head, shared by the image and audio classifiers.

:class:`TransferClassifier` is the :class:`~transferkit.common.task.TransferTask` for labels: it
owns the model shape (:class:`ClassificationModel`), the loss, streaming evaluation, the probe
stage on cached features, prediction and evaluation in batches, and an export that
``transformers.pipeline`` loads. A domain subclass says how to read its data
(:meth:`TransferClassifier.labelled`, :meth:`TransferClassifier.training_data`) and how raw
examples become model inputs (:meth:`TransferClassifier.prepare_inputs`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from . import deprecation
from .config import TrainConfig
from .encoders import Encoder, load_encoder, quiet_transformers
from .features import FeatureCache, fingerprint
from .memory_format import channels_last
from .metrics import ConfusionMatrix, per_class_report
from .modality import DecodedItems, Modality, decodable, labelled_collate
from .sources import dataset_targets, is_dataset
from .strategies import Strategy
from .streams import is_stream
from .task import StageData, TrainingData, TransferTask
from .trainer import TrainResult


class ClassificationModel(nn.Module):
    """``head(encoder(inputs))``; pass ``features=`` to skip the encoder (cached features)."""

    def __init__(self, encoder: Encoder, num_labels: int) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"a classifier needs at least 2 labels, got {num_labels}")
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, num_labels)
        self.reset_head(seed=0)
        self.head_trained = False

    def reset_head(self, seed: int) -> None:
        """Small random weights from ``seed`` alone, whatever ran before in the process."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * 0.01)
            self.head.bias.zero_()

    def forward(self, features: torch.Tensor | None = None, **inputs: Any) -> torch.Tensor:
        if features is None:
            features = self.encoder(**inputs)
        return self.head(features.to(self.head.weight.dtype))


def classification_loss(label_smoothing: float = 0.0) -> Callable[[nn.Module, dict], torch.Tensor]:
    """Cross-entropy on integer labels, or on soft targets (MixUp/CutMix) when labels are 2-D."""

    def loss(model: nn.Module, batch: dict) -> torch.Tensor:
        inputs = dict(batch)
        labels = inputs.pop("labels")
        logits = model(**inputs).float()
        if labels.dim() == 2:
            return -(labels * F.log_softmax(logits, dim=-1)).sum(-1).mean()
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)

    return loss


def evaluate_classification(num_labels: int) -> Callable[[nn.Module, Any], dict]:
    """Accuracy, macro-F1 and mean loss, aggregated batch by batch."""

    def evaluate(model: nn.Module, loader: Any) -> dict:
        cm, loss_sum, n = ConfusionMatrix(num_labels), 0.0, 0
        gather = getattr(loader, "gather", lambda *v: v)  # the Trainer's loader: every process's examples
        for batch in loader:
            inputs = dict(batch)
            labels = inputs.pop("labels")
            logits, labels = gather(model(**inputs).float(), labels)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            n += len(labels)
            cm.update(labels, logits.argmax(-1))
        return {**cm.metrics(), "eval_loss": loss_sum / max(1, n)}

    return evaluate


class FeatureSet(torch.utils.data.Dataset):
    """Cached features; the loader fetches whole batches at once (``__getitems__``), not row by row."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "labels": self.labels[i]}

    def __getitems__(self, idx: list[int]) -> dict:
        idx_t = torch.as_tensor(idx)
        return {"features": self.features[idx_t], "labels": self.labels[idx_t]}


def _batched(batch: dict) -> dict:
    return batch


def _head_only(config: TrainConfig) -> bool:
    """Whether the probe stage may skip the Trainer: not under several processes (the Trainer shards the
    batches) and not when an experiment tracker expects the run (the Trainer feeds it)."""
    return int(os.environ.get("WORLD_SIZE", "1")) == 1 and getattr(config, "report_to", "none") in (None, "none")


class TransferClassifier(TransferTask):
    """Base class: a pretrained encoder plus a linear head for ``labels``.

    Subclasses set ``task`` (the pipeline tag), ``encoder_task`` (the registered encoder task) and
    ``modality`` (a :class:`~transferkit.common.modality.Modality`), which gives :meth:`prepare_inputs`,
    :meth:`labelled`, :meth:`training_data`, :meth:`predict`, :meth:`reference` and :meth:`search_space`
    their defaults; a subclass overrides them where it knows better (a decode cache).
    """

    encoder_task: ClassVar[str] = ""
    #: the modality adapter: reading, decoding and collating the data, the reference, the search's own choices
    modality: ClassVar[type[Modality] | None] = None

    def __init__(self, encoder: Encoder, labels: Sequence[str], strategy: str | Strategy = "finetune") -> None:
        labels = [str(x) for x in labels]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        super().__init__(strategy)
        self.labels = labels
        self.label2id = {name: i for i, name in enumerate(labels)}
        self.model = ClassificationModel(encoder, len(labels))

    @property
    def encoder(self) -> Encoder:
        return self.model.encoder

    @property
    def head(self) -> nn.Linear:
        return self.model.head

    # -- hooks for the domain (defaults from the modality adapter) ------------------------------
    def adapter(self) -> Modality:
        """The modality adapter bound to this classifier's encoder."""
        if self.modality is None:
            raise TypeError(f"{type(self).__name__} names no modality; set its `modality` class attribute "
                            "to a transferkit.common.modality.Modality subclass")
        return self.modality(self.encoder)

    @classmethod
    def labels_of(cls, data: Any) -> list[str]:
        """The sorted distinct labels of a labelled source, read without decoding."""
        if cls.modality is None:
            raise TypeError(f"{cls.__name__} names no modality; pass labels=")
        if is_dataset(data):  # the label column alone: the media column is not read
            return sorted(set(dataset_targets(data)[1]))
        return sorted(set(cls.modality().read(data).targets))

    def prepare_inputs(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Raw examples (paths, arrays) -> one batch of encoder inputs, without augmentation."""
        m = self.adapter()
        return m.collate([m.decode(x) for x in examples])

    def labelled(self, data: Any) -> tuple[Sequence[Any], Sequence[str]]:
        """A labelled data source -> the examples that decode and their label names (the others are
        skipped, counted and logged by :func:`decodable`)."""
        m = self.adapter()
        source = decodable(m, m.read(data))
        return source.items, source.targets

    def training_data(self, train: Any, eval: Any, config: TrainConfig, **options: Any) -> TrainingData:
        """The modality's reader and decoder, its collate (augmented for training); no options."""
        if options:
            raise TypeError(f"{type(self).__name__}.fit got unexpected keyword(s) {sorted(options)}")
        if is_stream(train) or is_stream(eval):
            return self.stream_data(train, eval, config)
        m = self.adapter()
        sources = {"train": decodable(m, m.read(train)), **({"eval": decodable(m, m.read(eval))} if eval is not None else {})}
        for name, source in sources.items():
            self.check_labels(source.targets, {"train": "the training data", "eval": "the evaluation data"}[name])
        self.start_training(config)
        sets = {name: DecodedItems(m, s.items, [self.label2id[t] for t in s.targets]) for name, s in sources.items()}
        fps = {name: fingerprint([str(x) if isinstance(x, (str, os.PathLike)) else x for x in s.items], s.targets)
               for name, s in sources.items()}
        info = {"train_examples": len(sets["train"]), "eval_examples": len(sets.get("eval", ())),
                "skipped_train": {k: v for k, v in sources["train"].skipped.items() if v}}
        return TrainingData(sets["train"], sets.get("eval"), labelled_collate(m, augment=True), labelled_collate(m),
                            probe_train=sets["train"], fingerprints={**fps, "preprocess": m.fingerprint()}, info=info)

    def stream_data(self, train: Any, eval: Any, config: TrainConfig, *, prepare: Callable | None = None,
                    collate: Callable | None = None) -> TrainingData:
        """Training data when ``train`` or ``eval`` is a stream (``datasets.IterableDataset``, an iterable of
        ``{"<kind>": item, "label": ...}`` rows or ``(item, label)`` pairs): each example is decoded as it
        passes; one that does not decode is skipped, counted and logged; an unknown label is an error.

        ``prepare`` (item -> training example; default: the modality's decode) and ``collate`` (training
        examples -> batch; default: the modality's collate, augmented) are the domain's training path;
        evaluation uses the modality's decode and collate.
        """
        from .stream_data import stream_training_data

        self.start_training(config)
        return stream_training_data(self, train, eval, prepare=prepare, collate=collate)

    @classmethod
    def rebuild(cls, encoder: Encoder, labels: list[str], info: dict) -> TransferClassifier:
        """The classifier for ``encoder`` and ``labels`` as recorded in ``info`` (export or run file)."""
        return cls(encoder, labels, info.get("strategy", "finetune"))

    # -- TransferTask hooks --------------------------------------------------------------------
    def check_labels(self, targets: Sequence[Any], what: str) -> None:
        """Raise if ``targets`` holds a label this classifier was not built for."""
        unknown = sorted(set(map(str, targets)) - set(self.label2id))
        if unknown:
            raise ValueError(f"{what} has label(s) {unknown} that the classifier does not know "
                             f"(it knows {self.labels}); add them to labels= before training")

    def start_training(self, config: TrainConfig) -> None:
        """Call from ``training_data``: a new head is initialised from ``config.seed`` alone."""
        if not self.model.head_trained:
            self.model.reset_head(config.seed)
        self.model.head_trained = True

    def loss_fn(self, config):
        return classification_loss(config.label_smoothing)

    def eval_fn(self):
        return evaluate_classification(len(self.labels))

    def cached_stage(self, stage, data, config, run_dir):
        if data.info.get("stream"):
            from .stream_data import streamed_features

            return StageData(*streamed_features(self.encoder, data, config, run_dir / "features" / "stream"), _batched)
        cache = FeatureCache(getattr(stage.config, "feature_cache", None) or run_dir / "features")
        enc_fp = self.encoder.fingerprint()
        kw = {"collate_fn": data.eval_collate, "batch_size": config.effective_eval_batch_size, "progress": config.progress}
        fps = data.fingerprints

        def features(examples: Sequence, part: str) -> FeatureSet:
            key = (enc_fp, fps.get(part), fps.get("preprocess"))
            return FeatureSet(*cache.get_or_compute(self.encoder, examples, key_parts=key, **kw))

        train = features(data.probe_train if data.probe_train is not None else data.train, "train")
        return StageData(train, features(data.eval, "eval") if data.eval is not None else None, _batched,
                         head_only=_head_only(config))

    def search(self, train, eval=None, *, config, search: Any = None, **options):
        """``strategy="auto"``: the recipe search, set by a :class:`~transferkit.common.search.SearchConfig`
        (``search=``) or by its fields as ``fit`` keywords (``time_budget=600``), not both."""
        from .search import SEARCH_FIELDS, SearchConfig, run_search

        fields = {k: options.pop(k) for k in list(options) if k in SEARCH_FIELDS}
        if search is not None and fields:
            raise ValueError(f"pass the search's settings as search=SearchConfig(...) or as keywords {sorted(fields)}, not both")
        return run_search(self, train, eval, config=config, search=search or SearchConfig(**fields), **options)

    def search_space(self, trial: Any, task: TransferClassifier) -> dict[str, Any]:
        """The modality's own recipe choices for an Optuna ``trial``: ``fit`` keywords to add, or changes
        made to ``task`` (a clone being tried, e.g. its processor's input size)."""
        return self.adapter().search_space(trial, task) if self.modality is not None else {}

    def reference(self) -> Any:
        """The modality's simple reference results sit beside (``fit(examples, labels)``, ``predict(examples)``), or None."""
        return self.adapter().reference() if self.modality is not None else None

    def search_defaults(self, strategy: str, config: TrainConfig) -> dict[str, Any]:
        """Settings of the search's first trial of ``strategy`` (Optuna parameter names: ``lr``,
        ``head_lr`` and the domain's own), where the domain knows better than ``config``'s defaults."""
        return {}

    def card_data(self):
        return super().card_data() | {"labels": ", ".join(self.labels)}

    # -- prediction and evaluation -------------------------------------------------------------
    def logits(self, examples: Sequence[Any], batch_size: int = 64, *, workers: int | None = None) -> torch.Tensor:
        """Raw class scores of prepared examples, computed in batches in eval mode under
        ``torch.inference_mode``.

        Args:
            examples: Items the modality decodes (paths, arrays), in the order of the rows returned.
            batch_size: Examples per forward pass.
            workers: Threads that decode and collate the next batches while the model runs the
                current one (default :data:`PREDICT_WORKERS`; 0 decodes in the calling thread). The
                scores do not depend on it: each batch holds the same examples in the same order.
        """
        workers = PREDICT_WORKERS if workers is None else workers
        self.model.eval()
        device = next(self.model.parameters()).device
        chunks = [examples[start:start + batch_size] for start in range(0, len(examples), batch_size)]
        out = []
        # Converting the weights there and back costs several ms (a MobileNetV2: about three photos' worth of what
        # channels-last saves at batch 2, benchmarks/results/predict_speed.md): a call with fewer examples than
        # CHANNELS_LAST_MIN_EXAMPLES runs in the plain format.
        memory_format = None if len(examples) >= CHANNELS_LAST_MIN_EXAMPLES else False
        with torch.inference_mode(), channels_last(self.model, memory_format):
            for batch in prepared_batches(self.prepare_inputs, chunks, workers):
                out.append(self.model(**{k: v.to(device) for k, v in batch.items()}).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.labels))

    def _predict(self, examples: Sequence[Any], batch_size: int, workers: int | None = None) -> list[dict]:
        probs = self.logits(examples, batch_size, workers=workers).softmax(-1)
        return [{"label": self.labels[int(p.argmax())], "score": float(p.max()),
                 "scores": {name: float(v) for name, v in zip(self.labels, p)}} for p in probs]

    def predict(self, inputs: Any, *, batch_size: int = 64, workers: int | None = None) -> list[dict]:
        """Label and class probabilities for each item (a path, or a list of items the modality decodes);
        ``workers`` threads decode the next batches while the model runs (see :meth:`logits`)."""
        items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        return self._predict(items, batch_size, workers)

    def evaluate(self, data: Any, *, out_dir: str | os.PathLike | None = None, batch_size: int = 64) -> dict:
        """Accuracy, macro-F1, a per-class report and the confusion matrix (PNG written to ``out_dir``)."""
        from .report import plot_confusion

        examples, targets = self.labelled(data)
        self.check_labels(targets, "the evaluation data")
        cm = ConfusionMatrix(len(self.labels))
        for start in range(0, len(examples), batch_size):
            chunk = range(start, min(start + batch_size, len(examples)))
            logits = self.logits([examples[i] for i in chunk], batch_size)
            cm.update(torch.tensor([self.label2id[str(targets[i])] for i in chunk]), logits.argmax(-1))
        result = {**cm.metrics(), "per_class": per_class_report(cm.counts, self.labels),
                  "confusion_matrix": cm.counts.tolist(), "examples": len(examples)}
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            plot_confusion(cm.counts, self.labels, Path(out_dir) / "confusion_matrix.png",
                           title=f"accuracy {result['accuracy']:.3f}")
        return result

    # -- persistence ---------------------------------------------------------------------------
    def save_files(self, folder, kind):
        """Export: a Hugging Face folder (config, safetensors, processor, label maps) when the encoder came
        from transformers; otherwise ``model.safetensors`` and the encoder spec to rebuild it. Run folder:
        the labels and the processor (it may differ from the spec's: a searched input size)."""
        hf = self.encoder.hf_model
        if kind == "run":
            if hasattr(self.encoder.processor, "save_pretrained"):
                self.encoder.processor.save_pretrained(folder / "processor")
            return {"labels": self.labels, "feature_dim": self.encoder.feature_dim}
        if hf is not None:
            save_hf_classifier(hf, self.model.head, self.labels, folder)
            if self.encoder.processor is not None:
                self.encoder.processor.save_pretrained(folder)
            return {"labels": self.labels}
        from safetensors.torch import save_model

        save_model(self.model, str(folder / "model.safetensors"))
        if hasattr(self.encoder.processor, "save_pretrained"):  # it may differ from the spec's (a searched input size)
            self.encoder.processor.save_pretrained(folder)
        return {"labels": self.labels, "encoder_spec": self.encoder.spec, "feature_dim": self.encoder.feature_dim}

    @classmethod
    def load_files(cls, folder, info, kind, *, encoder: nn.Module | None = None):
        """Pass ``encoder=`` for an export or run of a custom ``nn.Module`` encoder."""
        if kind == "run":
            processor = _saved_processor(folder / "processor", cls.encoder_task)
            spec = encoder if encoder is not None else info["base_model"]
            enc = load_encoder(spec, task=cls.encoder_task, feature_dim=info.get("feature_dim"))
            if processor is not None:
                enc.processor = processor
            return cls.rebuild(enc, info["labels"], info)
        if (folder / "config.json").exists():
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(folder)
            labels = [config.id2label[i] for i in range(config.num_labels)]
            clf = cls.rebuild(load_encoder(str(folder), task=cls.encoder_task), labels, info)
            clf.model.head.load_state_dict(hf_head_weights(folder, getattr(config, "transferkit_head", "classifier")))
        else:
            from safetensors.torch import load_model

            if "encoder_spec" not in info:
                raise FileNotFoundError(f"{folder} is not a transferkit export (no config.json or transferkit.json)")
            spec = encoder if encoder is not None else info["encoder_spec"]
            enc = load_encoder(spec, task=cls.encoder_task, feature_dim=info.get("feature_dim"),
                               processor=_saved_processor(folder, cls.encoder_task))
            clf = cls.rebuild(enc, info["labels"], info)
            load_model(clf.model, str(folder / "model.safetensors"))
        clf.model.head_trained = True
        return clf


class _ModelClassifier(TransferClassifier):
    """A classifier around an existing :class:`ClassificationModel` (for :func:`train_classifier`)."""

    def __init__(self, model: ClassificationModel, strategy: str | Strategy, data: TrainingData) -> None:
        TransferTask.__init__(self, strategy)
        self.model, self.labels, self._data = model, [str(i) for i in range(model.head.out_features)], data

    def training_data(self, train, eval, config, **options):
        self.start_training(config)
        return self._data


def train_classifier(model: ClassificationModel, config: TrainConfig, train: Sequence, eval: Sequence | None = None, *,
                     train_collate: Callable, eval_collate: Callable, fingerprints: dict[str, str],
                     lengths: Sequence[int] | None = None, run_info: dict | None = None,
                     probe_train: Sequence | None = None) -> dict[str, TrainResult]:
    """Deprecated: subclass :class:`TransferClassifier` (or call its ``fit``) instead."""
    deprecation.warn("train_classifier", "a TransferClassifier's fit")
    data = TrainingData(train, eval, train_collate, eval_collate, lengths, probe_train, fingerprints)
    task = _ModelClassifier(model, config.legacy.get("strategy", "finetune"), data)
    return task.fit(train, eval, config=config)


# The name FeatureSet had before it became public.
_FeatureSet = FeatureSet


def _saved_processor(folder: Path, task: str) -> Any:
    """The processor an export saved beside a non-Hugging-Face encoder, loaded with its task's Auto class."""
    if not (folder / "preprocessor_config.json").exists():
        return None
    import transformers

    from .encoders import HF_TASKS

    return getattr(transformers, HF_TASKS.get(task).processor_class).from_pretrained(folder)


def save_hf_classifier(hf: nn.Module, head: nn.Linear, labels: list[str], folder: Path) -> None:
    """Put the trained head where transformers expects its final layer (``config.transferkit_head``,
    e.g. ``classifier`` or AST's ``classifier.dense``), save, then take it out again."""
    path = hf.config.transferkit_head
    identity = hf.get_submodule(path)
    hf.set_submodule(path, head)
    hf.config.num_labels = len(labels)
    hf.config.id2label = dict(enumerate(labels))
    hf.config.label2id = {name: i for i, name in enumerate(labels)}
    try:
        with quiet_transformers():
            hf.save_pretrained(folder, safe_serialization=True)
    finally:
        hf.set_submodule(path, identity)


def hf_head_weights(folder: Path, head_path: str) -> dict[str, torch.Tensor]:
    """The weight and bias of the final layer at ``head_path`` (``classifier.dense``) in an exported Hugging Face folder."""
    from safetensors.torch import load_file

    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    prefix = head_path + "."
    head = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if set(head) != {"weight", "bias"}:
        raise ValueError(f"{folder} has no classifier weights under {head_path!r}")
    return head


CHANNELS_LAST_MIN_EXAMPLES = 4  # logits() of fewer examples keep the plain format (see there)
PREDICT_WORKERS = 2  # threads decoding the next batches while the model runs one (Pillow and soundfile release the GIL)


def prepared_batches(prepare: Callable[[Sequence[Any]], Any], chunks: Sequence[Sequence[Any]], workers: int) -> Iterator[Any]:
    """``prepare(chunk)`` for each chunk, in order; with ``workers`` > 0 up to ``workers`` chunks ahead are
    prepared in a thread pool while the caller consumes the current one."""
    if workers < 0:
        raise ValueError(f"workers must be 0 (prepare in this thread) or more, got {workers}")
    if workers == 0 or len(chunks) <= 1:
        yield from (prepare(c) for c in chunks)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="transferkit-decode") as pool:
        pending = deque(pool.submit(prepare, c) for c in chunks[:workers + 1])
        nxt = len(pending)
        while pending:
            batch = pending.popleft().result()
            if nxt < len(chunks):
                pending.append(pool.submit(prepare, chunks[nxt]))
                nxt += 1
            yield batch
