"""Export classifiers and causal LMs (plain or structurally pruned) to ONNX, checked by onnxruntime.

A pruned model is only useful outside torch if the exported graph computes what prunekit measured, so
:func:`export_onnx` loads the folder with :func:`prunekit.io.shapes.load` (uneven per-layer shapes
included), exports it with dynamic batch and sequence axes, and compares onnxruntime with torch on
inputs of shapes the export never saw before the file appears. :func:`onnx_latency` times the result
with the same loop as :func:`prunekit.report.measure.measure_latency`, so both latencies can sit side
by side in a report.

Exporter: torch's ``torch.export``-based exporter (``dynamo=True``, needs ``onnxscript``) by default.
With torch 2.13 and transformers 5 both it and the deprecated TorchScript tracer (``dynamo=False``)
reproduce BERT-, RoBERTa-, DistilBERT-, ELECTRA-, GPT-2- and LLaMA-style models (GQA, uneven heads)
to float32 precision, but the tracer stores tied weights twice (SmolLM2-135M: 653 MB instead of
542 MB), bakes Python branches into the graph and is slated for removal. It is 3-10x faster to
export, though, so it stays available (``exporter="torchscript"``) and is used when onnxscript is
missing. Either way the graph is checked on shapes other than the traced one.

LSTM/GRU/RNN/TextCNN models (and a user's traced module) export too. The built-in recurrent models pack
their sequences, which torch.export cannot trace; they export :meth:`~prunekit.models.base.TextNet.for_export`
instead, the same logits computed on the padded batch (reverse directions read each text reversed within
its length), and the check compares onnxruntime with the *packed* model, including a batch of texts
shorter than a conv kernel.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from prunekit.arch.textnets import is_text_model, text_layout
from prunekit.assets import resolve_model
from prunekit.errors import PrunekitError, first_line
from prunekit.io.atomic import check_outside_inputs, sibling
from prunekit.io.hf import load  # prunekit.io.shapes.load, with the plain transformers format registered
from prunekit.io.textnet import is_custom_dir, load_custom
from prunekit.models.custom import uses_attention_mask
from prunekit.runtime import MakeInputs, cores, median_ms

if TYPE_CHECKING:
    import onnxruntime

Exporter = Literal["dynamo", "torchscript"]
OUTPUT = "logits"
# protobuf cannot hold a single file over 2 GiB; leave room for the graph itself
EXTERNAL_DATA_BYTES = 1_800_000_000
_ORT_NUMPY = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


class _Logits(nn.Module):
    """Positional tensors in, logits out: what the exporters trace, with no KV cache or output dict."""

    def __init__(self, model: nn.Module, causal: bool) -> None:
        super().__init__()
        self.model, self.causal = model, causal

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": input_ids}
        if attention_mask is not None:  # None only for a user's module whose forward takes token ids alone
            kwargs["attention_mask"] = attention_mask
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.causal:
            kwargs["use_cache"] = False
        return self.model(**kwargs).logits


def export_onnx(
    model_dir: str | Path,
    path: str | Path,
    *,
    seq_len: int = 128,
    opset: int | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 3e-5,
    force: bool = False,
    exporter: Exporter | None = None,
    module: str | None = None,
    module_kwargs: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Export the classifier or causal LM in ``model_dir`` to ``path`` (float32, dynamic batch and sequence).
    ``module``/``module_kwargs`` rebuild a user's own module saved by prunekit whose class the folder's
    recorded import path does not reach (see :func:`prunekit.io.textnet.load_custom`);
    ``trust_remote_code`` lets the folder's recorded class (or the model's own code) be imported.

    ``seq_len`` is the traced length and the longest one verified; ``opset`` None takes the exporter's
    default. With ``verify``, onnxruntime must match torch on two random batches of other shapes, or
    nothing is written: every logit within ``atol + rtol * max|logit|`` of torch's. The ``rtol`` term
    is float32 noise that grows with the logits' scale (SmolLM2-135M, 30 layers, logits near 33:
    ~3e-4, and torch itself is as far from a float64 run); real export bugs differ by far more.

    The file appears atomically (built and checked in a hidden sibling folder, then renamed); an
    existing file is refused unless ``force``. ``exporter`` None means ``"dynamo"`` when onnxscript is
    installed, else ``"torchscript"``. Models over ~1.8 GB (float32) need the dynamo exporter and get
    their weights in ``<path>.data`` beside the graph.

    Returns ``{"path", "size_bytes", "max_abs_diff", "opset", "inputs", "seconds", "exporter"}``;
    ``size_bytes`` includes the external data file, ``max_abs_diff`` is None without ``verify``.
    """
    start = time.perf_counter()
    out = Path(path).expanduser()
    check_outside_inputs(out, {"model": model_dir}, flag="--onnx")
    _check_target(out, force)
    if seq_len < 2:
        raise PrunekitError(f"seq_len must be at least 2 (got {seq_len}): a length-1 trace fixes the sequence axis")
    if module is not None or module_kwargs is not None:
        if not is_custom_dir(Path(resolve_model(str(model_dir))).expanduser()):
            raise PrunekitError(f"--module rebuilds a custom module folder saved by prunekit; {model_dir} is not one")
        model = load_custom(Path(resolve_model(str(model_dir))), module, module_kwargs,
                            trust_remote_code).float().eval()
    else:
        model = load(model_dir, trust_remote_code).float().eval()
    text = is_text_model(model)
    exporter = _pick_exporter(exporter if exporter is not None or not text else _text_exporter(model))
    causal = False if text else _is_causal_lm(model)
    names = _input_names(model, model_dir, causal)
    _check_positions(model, seq_len)
    wrapper = (_text_export_module(model) if text else _Logits(model, causal)).eval()
    reference = _Logits(model, causal).eval()
    external = sum(p.numel() for p in model.parameters()) * 4 > EXTERNAL_DATA_BYTES
    if external and exporter == "torchscript":
        raise PrunekitError("models over 1.8 GB need the dynamo exporter (pip install onnxscript)")

    out.parent.mkdir(parents=True, exist_ok=True)
    work = sibling(out, "tmp")
    work.mkdir()
    try:
        staged = work / out.name
        example = _random_inputs(model, names, [(2, seq_len)], seed=0)[0]
        _export(wrapper, example, staged, names, causal, opset, exporter, external, text)
        # built-in text models also serve texts shorter than a conv kernel: check that the graph does too
        shapes = [(1, max(1, seq_len // 2)), (3, seq_len)] + ([(2, 2)] if hasattr(model, "for_export") else [])
        max_diff = _verify(reference, staged, model, names, shapes, atol, rtol) if verify else None
        used_opset = _opset_of(staged)
        _check_target(out, force)  # something may have appeared while we worked
        size = _move_into_place(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "path": str(out),
        "size_bytes": size,
        "max_abs_diff": max_diff,
        "opset": used_opset,
        "inputs": names,
        "seconds": time.perf_counter() - start,
        "exporter": exporter,
    }


def _text_exporter(model: nn.Module) -> Exporter | None:
    """Recurrent text models default to the TorchScript exporter: torch.export fixes the sequence axis of
    a plain ``nn.RNN`` (the graph then refuses other lengths), while the tracer emits ONNX's own
    LSTM/GRU/RNN ops with dynamic axes. Either way the result is checked at unseen shapes."""
    return "torchscript" if text_layout(model).recurrent else None


def _text_export_module(model: nn.Module) -> nn.Module:
    """(input_ids, attention_mask) → logits for an LSTM/GRU/RNN/TextCNN model or a user's traced module.

    Built-in models give an exporter-friendly path with the same outputs (:meth:`TextNet.for_export`:
    no packed sequences); a user's module is exported as it runs, and its export is checked the same way."""
    for_export = getattr(model, "for_export", None)
    return for_export() if callable(for_export) else _Logits(model, causal=False)


def _data_file(out: Path) -> Path:
    """Where the dynamo exporter puts external weights: ``<name>.data`` beside the graph."""
    return out.with_name(out.name + ".data")


def _check_target(out: Path, force: bool) -> None:
    if out.is_dir():
        raise PrunekitError(f"ONNX output {out} is a folder; give a file path such as {out / 'model.onnx'}")
    if not force:
        for existing in (out, _data_file(out)):
            if existing.exists():
                raise PrunekitError(f"{existing} already exists; choose another path or pass force=True")


def _pick_exporter(exporter: str | None) -> Exporter:
    for module in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            raise PrunekitError(f"ONNX export needs {module}: pip install 'prunekit[onnx]'")
    has_onnxscript = importlib.util.find_spec("onnxscript") is not None
    if exporter is None:
        return "dynamo" if has_onnxscript else "torchscript"
    if exporter not in ("dynamo", "torchscript"):
        raise PrunekitError(f"unknown ONNX exporter {exporter!r}; use 'dynamo' or 'torchscript'")
    if exporter == "dynamo" and not has_onnxscript:
        raise PrunekitError("the dynamo ONNX exporter needs onnxscript: pip install 'prunekit[onnx]'")
    return exporter


def _is_causal_lm(model: nn.Module) -> bool:
    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return False
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return True
    raise PrunekitError(f"{name} is neither a sequence classifier nor a causal LM; prunekit exports only those")


def _input_names(model: nn.Module, model_dir: str | Path, causal: bool) -> list[str]:
    """input_ids and attention_mask, plus token_type_ids for classifiers whose tokenizer makes them
    (or, without a tokenizer, whose config has more than one segment type)."""
    if is_text_model(model):
        return ["input_ids", "attention_mask"] if uses_attention_mask(model) else ["input_ids"]
    names = ["input_ids", "attention_mask"]
    if causal or "token_type_ids" not in inspect.signature(model.forward).parameters:
        return names
    tokenizer_inputs = _tokenizer_inputs(Path(resolve_model(str(model_dir))).expanduser())
    if tokenizer_inputs is not None:
        uses = "token_type_ids" in tokenizer_inputs
    else:
        uses = getattr(model.config, "type_vocab_size", 0) > 1
    return [*names, "token_type_ids"] if uses else names


def _tokenizer_inputs(folder: Path) -> list[str] | None:
    """The saved tokenizer's ``model_input_names``, or None when the folder has no usable tokenizer."""
    if not (folder / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    try:
        return list(AutoTokenizer.from_pretrained(folder).model_input_names)
    except Exception:  # noqa: BLE001 - a broken tokenizer only means we fall back to the config
        return None


def _check_positions(model: nn.Module, seq_len: int) -> None:
    """Absolute position tables cap the length; RoBERTa-style ones start counting after the pad id."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is None:
        return
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    offset = getattr(embeddings, "padding_idx", None)
    if isinstance(offset, int):
        limit -= offset + 1
    if seq_len > limit:
        raise PrunekitError(f"seq_len {seq_len} is longer than the model's {limit} positions; pass a smaller seq_len")


def _random_inputs(
    model: nn.Module, names: Sequence[str], shapes: Iterable[tuple[int, int]], seed: int
) -> list[dict[str, torch.Tensor]]:
    """Random token ids; every row after the first is right-padded, so masks are really exercised."""
    get = getattr(model, "get_input_embeddings", None)
    vocab = (get() if callable(get) else text_layout(model).embedding[1]).num_embeddings
    types = max(int(getattr(model.config, "type_vocab_size", 1) or 1), 1)
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for batch, seq in shapes:
        ids = torch.randint(0, vocab, (batch, seq), generator=gen)
        mask = torch.ones_like(ids)
        for row in range(1, batch):
            mask[row, max(1, seq - row * max(1, seq // 4)) :] = 0
        inputs = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            inputs["token_type_ids"] = (torch.arange(seq) >= seq // 2).long().expand(batch, seq) * (types > 1)
        batches.append({n: inputs[n].contiguous() for n in names})
    return batches


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter chatter (tracer, deprecation and torchvision warnings): correctness is checked
    numerically afterwards, and the user gets one line on failure."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export(
    wrapper: _Logits,
    example: dict[str, torch.Tensor],
    staged: Path,
    names: list[str],
    causal: bool,
    opset: int | None,
    exporter: Exporter,
    external: bool,
    text: bool = False,
) -> None:
    args = tuple(example[n] for n in names)
    try:
        with _quiet(), torch.no_grad():
            if exporter == "dynamo":
                from torch.export import Dim

                batch, seq = Dim("batch"), Dim("sequence")
                torch.onnx.export(
                    wrapper, args, str(staged), input_names=names, output_names=[OUTPUT], opset_version=opset,
                    dynamo=True, external_data=external, verbose=False,
                    dynamic_shapes={n: {0: batch, 1: seq} for n in names},
                )
            else:
                axes = {n: {0: "batch", 1: "sequence"} for n in names}
                axes[OUTPUT] = {0: "batch", 1: "sequence"} if causal else {0: "batch"}
                torch.onnx.export(
                    wrapper, args, str(staged), input_names=names, output_names=[OUTPUT], opset_version=opset,
                    dynamo=False, dynamic_axes=axes,
                )
    except Exception as err:  # noqa: BLE001 - exporter failures come in many types; report one line
        hint = (" (a forward that packs sequences with pack_padded_sequence cannot be traced by torch.export; "
                "run the RNN on the padded batch and mask, or try exporter='torchscript')") if text else ""
        raise PrunekitError(
            f"ONNX export ({exporter}) of {type(getattr(wrapper, 'model', wrapper)).__name__} failed: "
            f"{first_line(err)}{hint}"
        ) from err
    finally:
        wrapper.eval()  # the TorchScript exporter restores the training flag it found; be sure
    if not staged.is_file():
        raise PrunekitError(f"ONNX export ({exporter}) wrote no file")


def _verify(
    reference: nn.Module, staged: Path, model: nn.Module, names: list[str], shapes: list[tuple[int, int]],
    atol: float, rtol: float,
) -> float:
    """Largest |onnxruntime - torch| over random batches of ``shapes`` (batch x sequence; the trace was
    2 x seq_len), torch being ``reference``: the model as prunekit runs it (for a text model, its packed
    run, not the exporter-friendly path that was traced). Fails unless within ``atol + rtol * max|logits|``."""
    session = onnx_session(staged, threads=torch.get_num_threads())
    worst, scale = 0.0, 0.0
    for inputs in _random_inputs(model, names, shapes, seed=1):
        shape = tuple(inputs["input_ids"].shape)
        try:
            with torch.inference_mode():
                want = reference(*(inputs[n] for n in names)).float().numpy()
        except Exception as err:  # noqa: BLE001 - a user's module may fail on any shape
            raise PrunekitError(f"ONNX check failed: the torch model itself fails on a batch of shape {shape} "
                                f"({first_line(err)}); nothing was written") from err
        try:
            got = session.run([OUTPUT], {n: t.numpy() for n, t in inputs.items()})[0]
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise PrunekitError(f"ONNX check failed: onnxruntime cannot run the graph on a batch of shape {shape} "
                                f"({first_line(err)}); nothing was written") from err
        if got.shape != want.shape or not np.isfinite(got).all():
            raise PrunekitError(f"ONNX check failed: onnxruntime gave shape {got.shape} "
                                f"(finite: {bool(np.isfinite(got).all())}), torch {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
        scale = max(scale, float(np.abs(want).max()))
    allowed = atol + rtol * scale
    if not worst <= allowed:
        raise PrunekitError(f"ONNX check failed: onnxruntime differs from torch by {worst:.3g} > {allowed:.3g} "
                            f"(atol {atol:g} + rtol {rtol:g} x max|logit| {scale:.3g}); nothing was written")
    return worst


def _opset_of(staged: Path) -> int:
    import onnx

    proto = onnx.load(str(staged), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _move_into_place(work: Path, out: Path) -> int:
    """External data first, graph last: a reader never finds a graph whose weights are not there yet."""
    size = 0
    data = _data_file(out)
    staged_data = work / data.name
    if staged_data.exists():
        size += staged_data.stat().st_size
        os.replace(staged_data, data)
    elif data.exists():  # force: a stale weights file from an earlier, larger export
        data.unlink()
    size += (work / out.name).stat().st_size
    os.replace(work / out.name, out)
    return size


def onnx_session(path: str | Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session for ``path`` with ``threads`` intra-op threads (default: the machine's cores)."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise PrunekitError("ONNX inference needs onnxruntime: pip install 'prunekit[onnx]'") from err
    path = Path(path).expanduser()
    if not path.is_file():
        raise PrunekitError(f"ONNX model {path} does not exist")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise PrunekitError(f"onnxruntime cannot load {path}: {first_line(err)}") from err


def onnx_latency(
    path: str | Path,
    make_inputs: MakeInputs,
    batch_sizes: Iterable[int] = (1, 32),
    seq_len: int = 128,
    warmup: int = 2,
    repeats: int | None = None,
    min_seconds: float = 1.0,
    threads: int | None = None,
) -> dict[str, float]:
    """Median onnxruntime time in ms per batch size, as ``{"batch_1": ms, ...}``: the same timing loop,
    inputs and thread count (the machine's cores) as :func:`prunekit.report.measure.measure_latency`.

    ``make_inputs`` may give more tensors than the graph takes (e.g. token_type_ids); extras are dropped.
    """
    session = onnx_session(path, threads=threads or cores())
    wanted = {i.name: _ORT_NUMPY.get(i.type) for i in session.get_inputs()}
    result: dict[str, float] = {}
    for batch in batch_sizes:
        made = make_inputs(batch, seq_len)
        missing = sorted(set(wanted) - set(made))
        if missing:
            raise PrunekitError(f"ONNX model {path} needs inputs {missing} that make_inputs does not give")
        feed = {n: _numpy(made[n], dtype) for n, dtype in wanted.items()}

        def run(feed: dict[str, np.ndarray] = feed) -> None:
            session.run(None, feed)

        result[f"batch_{batch}"] = median_ms(run, warmup=warmup, repeats=repeats, min_seconds=min_seconds)
    return result


def _numpy(tensor: torch.Tensor, dtype: type | None) -> np.ndarray:
    """A CPU numpy copy in the dtype the graph declares (torch ids may come as int32 or on a GPU)."""
    array = tensor.detach().cpu().numpy()
    return array.astype(dtype, copy=False) if dtype is not None else array
