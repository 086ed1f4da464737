"""What ``TrainConfig(compile=True)`` costs and gains on this machine: the throughput benchmark's ViT
(32x32, patch 4, 128 wide, 4 layers) fine-tuned for 3 epochs of 244 random images, eager then compiled,
each in its own process, fp32. Prints the seconds of each epoch: the first compiled epoch holds the
compilation.

    python benchmarks/compile_check.py [--threads 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def run(compile_: bool, threads: int) -> None:
    import torch
    from transformers import ViTConfig, ViTModel

    from transferkit.common import (
        ClassificationModel,
        TrainConfig,
        Trainer,
        classification_loss,
        load_encoder,
    )

    torch.set_num_threads(threads)
    folder = tempfile.mkdtemp()
    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                       image_size=32, patch_size=4), add_pooling_layer=False).save_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    rows = [{"pixel_values": torch.randn(3, 32, 32, generator=g), "labels": torch.tensor(i % 2)} for i in range(244)]

    def collate(batch):
        return {k: torch.stack([r[k] for r in batch]) for k in ("pixel_values", "labels")}

    model = ClassificationModel(load_encoder(folder), 2)
    cfg = TrainConfig(output_dir=tempfile.mkdtemp(), epochs=3, batch_size=32, lr=3e-4, mixed_precision="no",
                      progress=False, plot=False, save_checkpoints=False, compile=compile_)
    t0 = time.perf_counter()
    result = Trainer(model, cfg, compute_loss=classification_loss()).fit(rows, collate_fn=collate)
    print(f"compile={compile_}: {time.perf_counter() - t0:.1f} s, epochs "
          + " / ".join(f"{h['seconds']:.2f}" for h in result.history) + f" s, final loss {result.history[-1]['train_loss']:.4f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--one", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        run(args.one == "compiled", args.threads)
    else:
        for mode in ("eager", "compiled"):
            subprocess.run([sys.executable, __file__, "--one", mode, "--threads", str(args.threads)], check=True)
