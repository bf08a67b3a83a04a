"""Run by tests/train/test_distributed.py under `accelerate launch --cpu --num_processes 2`.

Each rank runs the real `prunekit.pipeline.prune` (gradual movement pruning, which learns its scores
from gradients) and writes a digest of its final weights and masks, so the test can check ranks agree.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from prunekit import pipeline
from prunekit.config import DataOptions, PruneSettings
from prunekit.runtime import accelerator


def main(model: str, data: str, out: str, digests: str) -> None:
    acc = accelerator()
    original_save = pipeline._save

    def save_and_digest(wb, out_dir, report, logits):
        weights, masks = hashlib.sha256(), hashlib.sha256()
        for name, tensor in sorted(wb.model.state_dict().items()):
            weights.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
            if name.endswith(".weight") and name[: -len(".weight")] in report["layer_sparsity"]:
                masks.update(name.encode() + (tensor == 0).cpu().numpy().tobytes())
        record = {"rank": acc.process_index, "world": acc.num_processes, "backend": str(acc.state.backend),
                  "weights": weights.hexdigest(), "masks": masks.hexdigest(),
                  "sparsity": report["stages"][-1]["sparsity"]}
        Path(digests, f"rank{acc.process_index}.json").write_text(json.dumps(record))
        original_save(wb, out_dir, report, logits)

    pipeline._save = save_and_digest
    torch.manual_seed(0)
    settings = PruneSettings(sparsity=0.6, method="movement", schedule="gradual", finetune_epochs=1, lr=1e-3,
                             batch_size=8, latency=False)
    pipeline.prune(model, DataOptions(data), out, settings, seed=0)


if __name__ == "__main__":
    main(*sys.argv[1:])
