"""What a pruned model costs: parameter counts, sparsity, file sizes and forward latency."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from prunekit.errors import PrunekitError
from prunekit.io.packed import dense_size_bytes, packed_size_bytes
from prunekit.prune.structured import model_shapes
from prunekit.runtime import MAX_REPEATS, MIN_REPEATS, MakeInputs, cores, median_ms  # noqa: F401 - public here too

# GPT-2 style models use transformers' Conv1D: a Linear with a transposed weight.
LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D)
Timer = Callable[[], Mapping[str, float]]  # one timing of one stage: {"batch_1": ms, ...}
LATENCY_ROUNDS = 3  # interleaved rounds per report: enough for a median and a spread
ROUND_SECONDS = 0.2  # per batch size and round; 3 rounds cost about what one 0.5 s timing used to
RELIABLE_SPREAD = 0.10  # rounds agreeing within this are trusted even when there is no speedup to speak of


def _unique(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Drop tensors that alias one already seen, so tied weights count once."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    out = []
    for t in tensors:
        key = (t.data_ptr(), t.numel(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _count(tensors: Iterable[torch.Tensor]) -> tuple[int, int]:
    tensors = _unique(tensors)
    total = sum(t.numel() for t in tensors)
    nonzero = sum(int(torch.count_nonzero(t.detach())) for t in tensors)
    return total, nonzero


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, nonzero) parameters, each tied/shared parameter counted once."""
    return _count(model.parameters())


def _linear_weights(model: nn.Module, names: Iterable[str] | None) -> dict[str, torch.Tensor]:
    """Weights by module name (Linear/Conv1D; torch Conv1d too) or, for an RNN, by parameter name."""
    if names is None:
        out = {}
        for n, m in model.named_modules():
            if isinstance(m, (*LINEAR_TYPES, nn.Conv1d)):
                out[n] = m.weight
            elif isinstance(m, nn.RNNBase):
                out.update({f"{n}.{p}": w for p, w in m.named_parameters() if p.startswith("weight_")})
        return out
    weights = {}
    for name in names:
        try:
            weight = model.get_submodule(name).weight
        except AttributeError:
            try:
                weight = model.get_parameter(name)  # an RNN's weight_ih_l0 etc. has no module of its own
            except AttributeError as err:
                raise PrunekitError(f"model has no module {name!r} with a weight") from err
        weights[name] = weight
    return weights


def sparsity_by_module(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, float]:
    """Fraction of exact zeros in each module's weight, in model order (default: all Linear/Conv1D, torch
    Conv1d and RNN weight matrices)."""
    return {
        name: 1.0 - int(torch.count_nonzero(w.detach())) / max(w.numel(), 1)
        for name, w in _linear_weights(model, names).items()
    }


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for parameter-free modules)."""
    return next(model.parameters(), torch.empty(0)).device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bert_like_inputs(
    vocab_size: int, device: torch.device | str | None = None, token_type_ids: bool = True, seed: int = 0
) -> MakeInputs:
    """Build a ``make_inputs(batch, seq_len)`` giving the same random token ids on every call."""

    def make_inputs(batch: int, seq_len: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, vocab_size, (batch, seq_len), generator=gen)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if token_type_ids:
            inputs["token_type_ids"] = torch.zeros_like(ids)
        return {k: v.to(device) for k, v in inputs.items()} if device is not None else inputs

    return make_inputs


def measure_latency(
    model: nn.Module,
    make_inputs: MakeInputs,
    batch_sizes: Iterable[int] = (1, 32),
    seq_len: int = 128,
    warmup: int = 2,
    repeats: int | None = None,
    min_seconds: float = 1.0,
    threads: int | None = None,
) -> dict[str, float]:
    """Median forward time in ms per batch size, as ``{"batch_1": ms, ...}``.

    Without ``repeats``, each batch size runs until ``min_seconds`` are spent (3 to 50 runs), so
    fast models get enough samples and slow ones do not take forever.
    """
    device = model_device(model)
    was_training, old_threads = model.training, torch.get_num_threads()
    torch.set_num_threads(threads or cores())
    model.eval()
    result: dict[str, float] = {}
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                inputs = {k: v.to(device) for k, v in make_inputs(batch, seq_len).items()}

                def run(inputs: dict[str, torch.Tensor] = inputs) -> None:
                    model(**inputs)
                    _sync(device)

                result[f"batch_{batch}"] = median_ms(run, warmup=warmup, repeats=repeats, min_seconds=min_seconds)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return result


def model_timer(model: nn.Module, make_inputs: MakeInputs, *, batch_sizes: Iterable[int] = (1, 32),
                seq_len: int = 128, min_seconds: float = ROUND_SECONDS,
                device: torch.device | str | None = None, threads: int | None = None) -> Timer:
    """A :data:`Timer` for one stage's model. With ``device`` the model visits it only while timed and goes
    back where it was, so stage copies parked on the CPU until the end of a run do not fill an accelerator."""
    batch_sizes = tuple(batch_sizes)

    def timer() -> dict[str, float]:
        home = model_device(model)
        if device is not None:
            model.to(device)
        try:
            return measure_latency(model, make_inputs, batch_sizes, seq_len, min_seconds=min_seconds, threads=threads)
        finally:
            model.to(home)

    return timer


def interleaved_latency(timers: Mapping[Hashable, Timer],
                        rounds: int = LATENCY_ROUNDS) -> dict[Hashable, dict[str, list[float]]]:
    """Every stage's latency per round, ``{stage: {"batch_1": [ms of round 1, ...], ...}}``.

    Each round times every stage once, in turn, so a slow phase of a shared machine hits all of them
    alike and a ratio of two stages in one round compares like with like (timed minutes apart under
    different load, a model with a MACs ratio of 1.00× once showed a 0.03× "speedup")."""
    samples: dict[Hashable, dict[str, list[float]]] = {name: {} for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            for key, ms in timer().items():
                samples[name].setdefault(key, []).append(float(ms))
    return samples


def spread(values: Sequence[float]) -> float | None:
    """How far apart the rounds are: (max − min) / median (None below two rounds)."""
    if len(values) < 2:
        return None
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else None


def latency_fields(rounds: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """A stage record's latency keys from its rounds: ``latency_ms`` (the median per batch size, the key
    reports always had), ``latency_rounds`` (every round, in order) and ``latency_spread``."""
    return {"latency_ms": {k: statistics.median(v) for k, v in rounds.items()},
            "latency_rounds": {k: [float(x) for x in v] for k, v in rounds.items()},
            "latency_spread": {k: spread(v) for k, v in rounds.items()}}


class StageLatency:
    """Stages waiting to be timed: each is registered with its own timer while a run goes on, and all
    are timed together in interleaved rounds when it ends (:func:`interleaved_latency`)."""

    def __init__(self, rounds: int = LATENCY_ROUNDS) -> None:
        self.rounds = rounds
        self._pending: list[tuple[dict[str, Any], Timer]] = []

    def add(self, record: dict[str, Any], timer: Timer) -> None:
        self._pending.append((record, timer))

    def run(self, stages: Sequence[Mapping[str, Any]]) -> None:
        """Time the registered records still in ``stages`` (a stage dropped on the way, e.g. by
        --max-drop, is not timed) and write their latency keys; then forget every timer (and its model)."""
        pending = [(record, timer) for record, timer in self._pending if any(record is s for s in stages)]
        self._pending = []
        samples = interleaved_latency(dict(enumerate(timer for _, timer in pending)), self.rounds)
        for i, (record, _) in enumerate(pending):
            record.update(latency_fields(samples[i]))


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def ratio_record(base: Sequence[float], final: Sequence[float]) -> dict[str, Any]:
    """Speedup of ``final`` over ``base`` (> 1: faster) from their timings in the same rounds.

    ``ratio`` is the median of the per-round ratios, ``spread`` how far those disagree ((max − min) /
    median). ``reliable`` is false when the rounds disagree by more than the speedup itself (|ratio − 1|)
    and by more than RELIABLE_SPREAD: such a ratio is noise. Timings not paired by round (or a single
    round) give the ratio of the medians with ``spread`` and ``reliable`` None: unknown, not vouched for.
    """
    if len(base) == len(final) >= 2:
        per_round = [b / f for b, f in zip(base, final, strict=True)]
        ratio, noise = statistics.median(per_round), spread(per_round)
        reliable = noise is not None and noise <= max(RELIABLE_SPREAD, abs(ratio - 1))
        return {"ratio": ratio, "spread": noise, "reliable": reliable, "round_ratios": per_round}
    return {"ratio": statistics.median(base) / statistics.median(final), "spread": None, "reliable": None,
            "round_ratios": None}


def speedup(stages: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """report.json ``speedup``: the last stage against the first per batch size (see :func:`ratio_record`),
    None without two timed stages. Reports and their summaries all take the ratios from here."""
    if len(stages) < 2:
        return None
    base, final = stages[0], stages[-1]
    lat0, lat1 = base.get("latency_ms") or {}, final.get("latency_ms") or {}
    rounds0, rounds1 = base.get("latency_rounds") or {}, final.get("latency_rounds") or {}
    by_batch = {}
    for key, ms in lat0.items():
        if _positive(ms) and _positive(lat1.get(key)):
            r0, r1 = rounds0.get(key) or [ms], rounds1.get(key) or [lat1[key]]
            if all(map(_positive, [*r0, *r1])):
                by_batch[key] = ratio_record(r0, r1)
    if not by_batch:
        return None
    return {"baseline": base.get("name"), "final": final.get("name"), "by_batch": by_batch}


def stage_record(
    name: str,
    *,
    metrics: Mapping[str, float],
    model: nn.Module,
    seconds: float,
    latency: Mapping[str, float] | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``report.json`` stage entry.

    ``extra["prunable_modules"]`` (module names), if given, makes ``sparsity`` cover just those
    weights (what pruning targets) instead of all parameters; it is not copied into the record.
    Other ``extra`` keys are merged in.
    """
    extra = dict(extra or {})
    prunable = extra.pop("prunable_modules", None)
    total, nonzero = count_params(model)
    if prunable is not None:
        sparse_total, sparse_nonzero = _count(_linear_weights(model, prunable).values())
    else:
        sparse_total, sparse_nonzero = total, nonzero
    state = model.state_dict()
    record: dict[str, Any] = {
        "name": name,
        "metrics": dict(metrics),
        "params_total": total,
        "params_nonzero": nonzero,
        "sparsity": 1.0 - sparse_nonzero / sparse_total if sparse_total else 0.0,
        "size_bytes": dense_size_bytes(state),
        "size_compressed_bytes": packed_size_bytes(state),
        "latency_ms": dict(latency) if latency is not None else None,
        "seconds": float(seconds),
    }
    clash = record.keys() & extra.keys()
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would overwrite stage fields")
    record.update(extra)
    return record


def macs_per_token(model: nn.Module, seq_len: int = 128) -> int:
    """Multiply-accumulates per token of one forward pass, the yardstick a measured speedup is held to.

    Every Linear (and GPT-2 Conv1D) once per token, plus attention's scores and weighted sum,
    2 · seq_len · heads · head_dim per layer (from the architecture table, so uneven pruned layers
    count right). Text models: every LSTM/GRU/RNN weight (input and recurrent, each direction) once per
    token, and every Conv1d weight once per output position (≈ per token). Embedding lookups and norms
    are not counted: they are not multiply-bound.
    """
    total = sum(int(m.weight.numel()) for m in model.modules() if isinstance(m, (*LINEAR_TYPES, nn.Conv1d)))
    total += sum(int(w.numel()) for m in model.modules() if isinstance(m, nn.RNNBase)
                 for p, w in m.named_parameters() if p.startswith("weight_"))
    try:
        layers = model_shapes(model)["layers"]
    except (PrunekitError, AttributeError, KeyError):
        layers = []
    return total + sum(2 * seq_len * layer["q_heads"] * layer["head_dim"] for layer in layers)


def _rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them), so RSS shows live memory only."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory while the block runs: process RSS sampled every ``interval`` s on CPU, and
    ``torch.cuda.max_memory_allocated`` on CUDA. ``peak_bytes`` is the process total;
    ``extra_bytes`` what the block added on top of what was resident when it started."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.start_bytes = self.peak_bytes = 0
        self.cuda_peak_bytes: int | None = None
        self._stop = None

    def __enter__(self) -> PeakMemory:
        import threading

        _release_free_memory()
        self.start_bytes = self.peak_bytes = _rss_bytes()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self.peak_bytes = max(self.peak_bytes, _rss_bytes())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _rss_bytes())
        if torch.cuda.is_available():
            self.cuda_peak_bytes = int(torch.cuda.max_memory_allocated())

    @property
    def extra_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)

    def record(self) -> dict[str, int | None]:
        return {"peak_rss_bytes": self.peak_bytes, "peak_extra_bytes": self.extra_bytes,
                "cuda_peak_bytes": self.cuda_peak_bytes}
