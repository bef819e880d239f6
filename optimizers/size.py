"""Size accounting: five honest answers to "how big is this model?".

| figure          | what it is                                                                      |
|-----------------|---------------------------------------------------------------------------------|
| ``float32``     | 4 bytes per parameter: the weights as the model computes with them.             |
| ``file``        | bytes of the saved file (``.keras`` or ``.tflite``): what sits on disk.         |
| ``gzip``        | that file gzip-compressed (level 9): roughly what an app store or CDN transfers, |
|                 | and the measure the TensorFlow optimization guides use.                         |
| ``packed``      | what a purpose-built encoder needs: per tensor, the cheapest of float32, b-bit   |
|                 | codes plus scales, ceil(log2 k)-bit indices plus a k-entry codebook, each also  |
|                 | with a sparsity bitmask (1 bit per weight, codes only for non-zeros).           |
| ``entropy``     | Shannon bound: n x H(values) bits per transformed tensor, side data excluded;   |
|                 | no coder of the values one symbol at a time beats it.                           |

Float tensors that the pipeline leaves alone (biases, normalization) count 32 bits each in
``packed`` and ``entropy``.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from optimizers.pipeline import TensorReport, channel_value_counts

FLOAT_BITS = 32


@dataclass(frozen=True)
class Sizes:
    """Bytes, per ``module docstring`` definitions; ``file``/``gzip`` are ``None`` when unsaved."""

    float32: int
    packed: int
    entropy: int
    file: int | None = None
    gzip: int | None = None


def gzip_size(data: bytes) -> int:
    """Bytes of ``data`` after gzip level 9 (deterministic: no timestamp)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def index_bits(levels: int) -> int:
    """Bits to address one of ``levels`` values (0 for a single value)."""
    return math.ceil(math.log2(levels)) if levels > 1 else 0


def packed_bits(w: np.ndarray, report: TensorReport) -> int:
    """Bits of the cheapest encoding of ``w`` among the ones listed in the module docstring."""
    n = w.size
    if not report.transformed or n == 0:
        return FLOAT_BITS * n
    nonzero = int(np.count_nonzero(w))
    distinct = report.unique_values
    has_zero = nonzero < n
    # (bits per coded weight, fixed side data in bits) for each coding of the values
    codings = [(FLOAT_BITS, 0), (index_bits(distinct), FLOAT_BITS * distinct)]
    if report.bits is not None:
        codings.append((report.bits, FLOAT_BITS * report.scales))
    sparse_codings = [(FLOAT_BITS, 0)]
    if has_zero:
        nz_distinct = distinct - 1
        sparse_codings.append((index_bits(nz_distinct), FLOAT_BITS * nz_distinct))
        if report.bits is not None:
            sparse_codings.append((report.bits, FLOAT_BITS * report.scales))
    dense = min(n * b + side for b, side in codings)
    sparse = min(n + nonzero * b + side for b, side in sparse_codings) if has_zero else dense
    return min(dense, sparse)


def entropy_bits(w: np.ndarray, report: TensorReport) -> float:
    """Shannon bound for a transformed tensor, side data (codebooks, scales) excluded: ``n x H``
    of its values, or of each channel's values when it is quantized per channel (the decoder
    knows the channel); 32 bits a weight for a float tensor."""
    if not report.transformed or w.size == 0:
        return float(FLOAT_BITS * w.size)
    if report.per_channel:
        channels, counts = channel_value_counts(w, report.channel_axes)
        totals = np.bincount(channels, weights=counts)[channels]
    else:
        _, counts = np.unique(w, return_counts=True)
        totals = w.size
    return float(-(counts * np.log2(counts / totals)).sum())


def weight_sizes(
    weights: Sequence[np.ndarray],
    reports: Sequence[TensorReport],
    file_bytes: bytes | None = None,
) -> Sizes:
    """All size figures for a model's ``weights`` with the pipeline's per-tensor ``reports``
    (covering every tensor) and, optionally, the saved file's bytes."""
    packed = sum(packed_bits(weights[r.index], r) for r in reports)
    entropy = sum(entropy_bits(weights[r.index], r) for r in reports)
    return Sizes(
        float32=4 * sum(int(w.size) for w in weights),
        packed=math.ceil(packed / 8),
        entropy=math.ceil(entropy / 8),
        file=None if file_bytes is None else len(file_bytes),
        gzip=None if file_bytes is None else gzip_size(file_bytes),
    )
