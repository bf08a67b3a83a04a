"""Disk I/O: compressed sparse checkpoints and atomic outputs."""

from prunekit.io.atomic import (
    atomic_output_dir,
    check_output_dir,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from prunekit.io.packed import (
    FORMAT_VERSION,
    dense_size_bytes,
    load_packed,
    pack_state_dict,
    packed_size_bytes,
    save_packed,
)

__all__ = [
    "FORMAT_VERSION",
    "atomic_output_dir",
    "check_output_dir",
    "dense_size_bytes",
    "load_packed",
    "pack_state_dict",
    "packed_size_bytes",
    "save_packed",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
