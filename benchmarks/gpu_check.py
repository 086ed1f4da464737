"""GPU check: mixed-precision training on a CUDA device, in under five minutes.

For each precision (fp32, bf16 where the GPU has it, fp16 with Accelerate's gradient scaler), fine-tunes two
encoders on random 224x224 images through ``ImageClassifier.fit`` — the packaged ImageNet MobileNetV2 and a
randomly initialised ViT-Base/16 built from its Hugging Face config — and checks that the loss is finite,
that the weights moved and how many steps the trainer skipped as non-finite. One table of training images/s
(the second epoch: the first builds the kernels).

    python benchmarks/gpu_check.py [--results-dir DIR] [--images N] [--batch-size B]

Writes ``gpu_check.md`` and ends with one ``RESULT gpu_check`` line. Exits 2 without a CUDA device.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import benchinfo  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def vit_base(folder: Path) -> str:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=224, patch_size=16), add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return str(folder)


def run(spec: str, precision: str, images: list, labels: list, batch: int, work: Path) -> dict:
    from transferkit.vision import ImageClassifier

    torch.manual_seed(0)
    clf = ImageClassifier.from_pretrained(spec, labels=["a", "b"], strategy="finetune")
    before = {k: v.detach().clone() for k, v in clf.model.state_dict().items() if v.is_floating_point()}
    t0 = time.perf_counter()
    res = clf.fit((images, labels), output_dir=str(work / f"{Path(spec).name}-{precision}"), epochs=2, batch_size=batch,
                  mixed_precision=precision, progress=False, save_checkpoints=False, plot=False, lr=1e-4)
    hist = res["finetune"].history
    after = clf.model.state_dict()
    moved = sum(not torch.equal(before[k].cpu(), after[k].detach().cpu()) for k in before)
    return {"encoder": spec.split("/")[-1], "precision": precision, "train images/s": f"{hist[-1]['samples_per_s']:.1f}",
            "last loss": f"{hist[-1]['train_loss']:.4f}", "finite": bool(np.isfinite(hist[-1]["train_loss"])),
            "tensors moved": f"{moved}/{len(before)}", "skipped steps": res["finetune"].skipped_steps,
            "seconds": f"{time.perf_counter() - t0:.0f}", "peak GiB": f"{torch.cuda.max_memory_allocated() / 2**30:.1f}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results-dir", help="where to write gpu_check.md (default: benchmarks/results)")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine (benchmarks/gpu_check.sh)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(args.images)]
    labels = ["a" if i % 2 else "b" for i in range(args.images)]
    precisions = ["no", *(["bf16"] if torch.cuda.is_bf16_supported() else []), "fp16"]
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tk-gpu-") as tmp:
        work = Path(tmp)
        specs = ["packaged:mobilenet_v2", vit_base(work / "vit-base")]
        for spec in specs:
            for precision in precisions:
                torch.cuda.reset_peak_memory_stats()
                rows.append(run(spec, precision, images, labels, args.batch_size, work))
                print(rows[-1], flush=True)
    from transferkit.common.report import markdown_table

    lines = ["# GPU check: mixed-precision fine-tuning", "",
             f"- Device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}",
             f"- {args.images} random 224x224 images, batch {args.batch_size}, 2 epochs, AdamW lr 1e-4; images/s of epoch 2",
             f"- Total: {time.perf_counter() - t0:.0f} s", "", markdown_table(rows, list(rows[0]))]
    path = benchinfo.results_path(args.results_dir, "gpu_check", False)
    path.write_text("\n".join(lines) + "\n")
    ok = all(r["finite"] and not r["tensors moved"].startswith("0/") for r in rows)
    print(f"wrote {path}")
    print("RESULT gpu_check " + " ".join(f"{r['encoder']}_{r['precision']}={r['train images/s']}" for r in rows)
          + f" ok={ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
