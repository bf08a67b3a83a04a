"""Bitmask-packed safetensors: unstructured sparsity only shrinks files if the zeros are not stored.

A packed tensor ``w`` becomes ``w::values`` (its non-zeros, same dtype, row-major) and ``w::bitmask``
(``numpy.packbits`` of the non-zero mask, little bit order); its shape and dtype go into the file's
metadata. Zero tests are done on the raw bits, so ``-0.0`` and NaN survive and round trips are
bit-identical.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from prunekit.errors import PrunekitError

FORMAT_VERSION = "prunekit-packed-1"
_META_KEY = "prunekit"
_VALUES, _BITMASK = "::values", "::bitmask"
# Two extra header entries cost roughly this much; packing that saves less is not worth it.
_HEADER_OVERHEAD = 160
# Same-width integer dtypes, so masks and copies work on raw bits for every float dtype (incl. fp8).
_BITS_DTYPE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _as_bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(_BITS_DTYPE[t.element_size()])


def _packed_nbytes(numel: int, nonzero: int, itemsize: int) -> int:
    return nonzero * itemsize + (numel + 7) // 8 + _HEADER_OVERHEAD


def _identity(t: torch.Tensor) -> tuple:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def _pack(sd: Mapping[str, torch.Tensor], min_sparsity: float) -> tuple[dict[str, torch.Tensor], dict]:
    """Return the tensors to write and the metadata describing the packed and aliased ones.

    A tensor that *is* an earlier one (tied weights: same storage, offset, shape and strides) is written
    once and recorded as an alias, like ``save_pretrained`` does; partial overlaps are cloned.
    """
    out: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple, str] = {}
    seen_storage: set[int] = set()
    for name, tensor in sd.items():
        if _VALUES in name or _BITMASK in name:
            raise PrunekitError(f"tensor name {name!r} clashes with the packed format's '::' suffixes")
        if tensor.numel() and _identity(tensor) in first:
            aliases[name] = first[_identity(tensor)]
            continue
        if tensor.numel():
            first[_identity(tensor)] = name
        t = tensor.detach().cpu().contiguous()
        if t.is_floating_point() and t.numel() > 0:
            bits = _as_bits(t)
            mask = bits != 0
            nonzero = int(mask.sum())
            sparsity = 1.0 - nonzero / t.numel()
            if sparsity >= min_sparsity and _packed_nbytes(t.numel(), nonzero, t.element_size()) < t.nbytes:
                out[name + _VALUES] = bits[mask].view(t.dtype)
                packed = np.packbits(mask.numpy(), bitorder="little")
                out[name + _BITMASK] = torch.from_numpy(packed)
                layout[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                continue
        out[name] = _unshared(t, seen_storage)
    return out, {"packed": layout, "aliases": aliases}


def _unshared(t: torch.Tensor, seen_storage: set[int]) -> torch.Tensor:
    """Clone tensors whose storage was already written: safetensors refuses shared memory."""
    ptr = t.untyped_storage().data_ptr()
    if t.numel() and ptr in seen_storage:
        return t.clone()
    seen_storage.add(ptr)
    return t


def pack_state_dict(sd: Mapping[str, torch.Tensor], min_sparsity: float = 0.0) -> dict[str, torch.Tensor]:
    """Replace each sparse-enough floating tensor by ``::values`` + ``::bitmask`` (others stay dense)."""
    return _pack(sd, min_sparsity)[0]


def save_packed(sd: Mapping[str, torch.Tensor], path: str | Path, min_sparsity: float = 0.0) -> None:
    """Write ``sd`` as a packed safetensors file (loadable with :func:`load_packed`)."""
    tensors, layout = _pack(sd, min_sparsity)
    meta = {"format": "pt", _META_KEY: json.dumps({"version": FORMAT_VERSION, **layout})}
    save_file(tensors, str(path), metadata=meta)


def load_packed(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a file written by :func:`save_packed` and return the exact dense tensors (on CPU)."""
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(_META_KEY)
        info = json.loads(raw) if raw else {}
        if info.get("version") != FORMAT_VERSION:
            raise PrunekitError(f"{path} is not a {FORMAT_VERSION} file (found {info.get('version')!r})")
        stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    layout: dict[str, dict] = info["packed"]
    aliases: dict[str, str] = info.get("aliases", {})
    sd: dict[str, torch.Tensor] = {}
    for key, t in stored.items():
        if key.endswith(_BITMASK):
            continue
        if not key.endswith(_VALUES):
            sd[key] = t
            continue
        name = key.removesuffix(_VALUES)
        spec = layout[name]
        dtype = getattr(torch, spec["dtype"])
        numel = int(np.prod(spec["shape"], dtype=np.int64))
        mask = np.unpackbits(stored[name + _BITMASK].numpy(), count=numel, bitorder="little")
        bits = torch.zeros(numel, dtype=_BITS_DTYPE[t.element_size()])
        bits[torch.from_numpy(mask.astype(bool))] = _as_bits(t)
        sd[name] = bits.view(dtype).reshape(spec["shape"])
    for name, target in aliases.items():
        sd[name] = sd[target]  # tied: the same tensor again
    return sd


def _written_size(write) -> int:
    with tempfile.TemporaryDirectory(prefix="prunekit-size-") as tmp:
        path = os.path.join(tmp, "model.safetensors")
        write(path)
        return os.path.getsize(path)


def packed_size_bytes(sd: Mapping[str, torch.Tensor], min_sparsity: float = 0.0) -> int:
    """Bytes of the packed file as actually written (not an estimate)."""
    return _written_size(lambda path: save_packed(sd, path, min_sparsity))


def dense_size_bytes(sd: Mapping[str, torch.Tensor]) -> int:
    """Bytes of a plain safetensors file of ``sd``; tied tensors count once, as ``save_pretrained`` writes them."""
    seen: set[int] = set()
    first: set[tuple] = set()
    tensors = {}
    for k, v in sd.items():
        if v.numel() and _identity(v) in first:
            continue
        first.add(_identity(v))
        tensors[k] = _unshared(v.detach().cpu().contiguous(), seen)
    return _written_size(lambda path: save_file(tensors, path, metadata={"format": "pt"}))
