"""Decoder language models: evaluate perplexity, prune once with calibration data, save, report.

The LM counterpart of :mod:`prunekit.pipeline` (which serves classifiers): no retraining, quality is
perplexity on text that calibration never saw.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from prunekit.errors import PrunekitError
from prunekit.io.atomic import atomic_output_dir, check_output_dir
from prunekit.io.hf import load_causal_lm
from prunekit.io.shapes import PACKED_WEIGHTS, load, save_sparse
from prunekit.prune.oneshot import OneShotSettings, check_patterns, prune_oneshot
from prunekit.report.measure import PeakMemory, stage_record
from prunekit.report.render import package_versions, print_stage_table, write_report
from prunekit.runtime import default_device, seed_everything
from prunekit.tasks.lm import calibration_windows, evaluation_windows, load_lm_text, perplexity

SAVE_FORMATS = ("packed", "dense")


def _log(msg: str) -> None:
    import sys

    print(f"[prunekit] {msg}", file=sys.stderr, flush=True)


def evaluate_lm(
    model: str, data: str, *, seq_len: int = 512, eval_samples: int | None = 32, stride: int | None = None,
    calib_data: str | None = None, trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Perplexity of a causal LM on the evaluation part of ``data`` (see :mod:`prunekit.tasks.lm`)."""
    lm, tokenizer = load_causal_lm(model, trust_remote_code)
    text = load_lm_text(tokenizer, data, calib_data)
    windows = evaluation_windows(text, seq_len, eval_samples, stride)
    result = perplexity(lm.to(default_device()), windows, stride)
    return {**result, "seq_len": seq_len, "stride": stride or seq_len, "split_rule": text.split_rule}


def _file_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def prune_lm(
    model: str, data: str, out: str | Path, settings: OneShotSettings | None = None, *,
    calib_samples: int = 128, seq_len: int = 512, eval_samples: int | None = 32, stride: int | None = None,
    calib_data: str | None = None, save: str = "packed", seed: int = 0, force: bool = False,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Evaluate → prune once (calibrated) → evaluate → save, with a report; never touches ``model``."""
    settings = settings or OneShotSettings()
    settings.check()
    if save not in SAVE_FORMATS:
        raise PrunekitError(f"--save must be one of {', '.join(SAVE_FORMATS)}, got {save!r}")
    check_output_dir(out, force)
    seed_everything(seed)
    device = default_device()
    lm, tokenizer = load_causal_lm(model, trust_remote_code)
    check_patterns(lm, settings)
    text = load_lm_text(tokenizer, data, calib_data)
    eval_ids = evaluation_windows(text, seq_len, eval_samples, stride)
    calib_ids = calibration_windows(text, calib_samples, seq_len, seed) if settings.uses_calibration else None
    lm.to(device)

    _log(f"dense: perplexity on {len(eval_ids)} × {seq_len} evaluation tokens")
    dense_ppl = perplexity(lm, eval_ids, stride)
    _log(f"dense: perplexity {dense_ppl['perplexity']:.2f}")
    prunable = None
    stages = [stage_record("dense", metrics=dense_ppl, model=lm, seconds=0.0, latency=None)]

    def progress(what: str, i: int, n: int) -> None:
        if i == n or i % max(1, n // 6) == 0:
            _log(f"{settings.method}: {what} {i}/{n}")

    with PeakMemory() as memory:
        result = prune_oneshot(lm, calib_ids, settings, device=device, progress=progress)
    prunable = list(result.layer_sparsity)
    pruned_ppl = perplexity(lm, eval_ids, stride)
    _log(f"{settings.method}: perplexity {pruned_ppl['perplexity']:.2f} "
         f"({pruned_ppl['perplexity'] / dense_ppl['perplexity']:.2f}× dense), pruned in {result.seconds:.1f} s")
    stages.append(stage_record(
        settings.method if settings.nm is None else f"{settings.method} {settings.pattern}",
        metrics=pruned_ppl, model=lm, seconds=result.seconds, latency=None,
        extra={"prunable_modules": prunable, "peak_memory": memory.record()},
    ))
    report: dict[str, Any] = {
        "command": "prune --task lm",
        "model": {"source": model, "model_type": lm.config.model_type,
                  "params": sum(p.numel() for p in lm.parameters())},
        "data": {"source": data, "calibration_data": calib_data, "split_rule": text.split_rule,
                 "calibration_tokens_available": len(text.calibration),
                 "evaluation_tokens_available": len(text.evaluation)},
        "settings": {"oneshot": asdict(settings), "calib_samples": calib_samples if calib_ids is not None else 0,
                     "seq_len": seq_len, "eval_samples": len(eval_ids), "stride": stride or seq_len, "save": save},
        "seed": seed,
        "versions": package_versions(),
        "stages": stages,
        "perplexity": {"dense": dense_ppl["perplexity"], "pruned": pruned_ppl["perplexity"],
                       "ratio": pruned_ppl["perplexity"] / dense_ppl["perplexity"]},
        "prune_seconds": result.seconds,
        "peak_memory": {**memory.record(), "model_fp32_bytes": 4 * sum(p.numel() for p in lm.parameters())},
        "layer_sparsity": result.layer_sparsity,
        "block_sparsity_targets": result.block_targets,
        "owl_outlier_ratios": result.owl_outlier_ratios,
    }
    _save_lm(lm, tokenizer, out, force, save, report, eval_ids[:2])
    return report


def _save_lm(lm: torch.nn.Module, tokenizer, out: str | Path, force: bool, save: str, report: dict[str, Any],
             check_ids: torch.Tensor) -> None:
    """Write the model and report atomically after checking the saved folder reloads to identical logits."""
    device = default_device()
    with torch.no_grad():
        expected = lm(input_ids=check_ids.to(device)).logits.float().cpu()
    lm.to("cpu")
    with atomic_output_dir(out, force) as tmp:
        save_sparse(lm, tokenizer, tmp, packed=save == "packed")
        reloaded = load(tmp).to(device)
        with torch.no_grad():
            again = reloaded(input_ids=check_ids.to(device)).logits.float().cpu()
        diff = float((again - expected).abs().max())
        report["reload_check"] = {"loader": "prunekit.load" if save == "packed" else "transformers",
                                  "max_abs_logit_diff": diff}
        if diff > 1e-4:
            raise PrunekitError(f"the saved model does not reproduce its logits (max diff {diff:.2e}); nothing written")
        report["disk"] = {"format": save, "weights_bytes": _file_bytes(tmp),
                          "dense_bytes": report["stages"][-1]["size_bytes"],
                          "packed_bytes": report["stages"][-1]["size_compressed_bytes"],
                          "weights_file": PACKED_WEIGHTS if save == "packed" else "model.safetensors"}
        write_report(tmp, report)
    _log(f"wrote {out}")
    print_stage_table(report["stages"])
