"""How many shards a split gets and what they are called.

`shard_name` is Model Garden's naming; `shards_for_target_size` counts shards from the input
file sizes for `--target-shard-size`, whose text `parse_byte_size` reads.
"""

from __future__ import annotations

import concurrent.futures
import math
import re
from collections.abc import Sequence

from components.convert_dataset import _fs
from components.convert_dataset.records import NON_FILE_KEYS, RecordRef


def shard_name(split: str, shard: int, num_shards: int, compression: str | None) -> str:
    """Model Garden's shard naming: `train-00000-of-00004.tfrecord` (`.gz` added for gzip)."""
    suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
    return f"{split}-{shard:05d}-of-{num_shards:05d}{suffix}"


def shards_for_target_size(refs: Sequence[RecordRef], target_bytes: int) -> int:
    """How many shards hold `refs` at about `target_bytes` each: ceil(input bytes / target).

    The input bytes are the sizes of every file the references name (read concurrently, since
    on gs:// each size is a request); a file that cannot be stat'ed counts as empty, its record
    being reported bad by the workers anyway.
    """
    paths = sorted(
        {p for ref in refs for k, p in ref.paths.items() if p and k not in NON_FILE_KEYS}
    )

    def size(path: str) -> int:
        try:
            return _fs.size(path)
        except Exception:  # missing, unreadable, ...: the workers report the record
            return 0

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        total = sum(pool.map(size, paths))
    return max(1, math.ceil(total / int(target_bytes)))


def parse_byte_size(text: str) -> int:
    """'256MB', '1.5GiB', '200k', '1000000' → bytes (K/M/G are powers of 1000, Ki/Mi/Gi of 1024).

    Raises:
      ValueError: not a positive size.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"expected a size such as 256MB, 1GiB or 1000000, got {text!r}")
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    value = float(number) * base ** " kmgt".index(prefix or " ")
    if value < 1:
        raise ValueError(f"expected a positive size, got {text!r}")
    return int(value)
