"""Size accounting: five honest answers to "how big is this model?".

| figure          | what it is                                                                      |
|-----------------|---------------------------------------------------------------------------------|
| ``float32``     | 4 bytes per parameter: the weights as the model computes with them.             |
| ``file``        | bytes of the saved file (``.keras`` or ``.tflite``): what sits on disk.         |
| ``gzip``        | that file gzip-compressed (level 9): roughly what an app store or CDN transfers, |
|                 | and the measure the TensorFlow optimization guides use. For a model's settings   |
|                 | it is *sampled*: see ``GzipBasis`` (measured within 2% of the real figure).     |
| ``packed``      | what a purpose-built encoder needs: per tensor, the cheapest of float32, b-bit   |
|                 | codes plus scales, ceil(log2 k)-bit indices plus a k-entry codebook (float32,   |
|                 | or b-bit codes plus the scale when the values lie on one per-tensor grid), each |
|                 | also with a sparsity bitmask (1 bit per weight, codes only for non-zeros).      |
| ``entropy``     | Shannon bound: n x H(values) bits per transformed tensor, side data excluded;   |
|                 | no coder of the values one symbol at a time beats it.                           |

Float tensors that the pipeline leaves alone (biases, normalization) count 32 bits each in
``packed`` and ``entropy``.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from zlib_ng import gzip_ng, zlib_ng

from optimizers.pipeline import TensorReport
from optimizers.workers import POOL

FLOAT_BITS = 32


@dataclass(frozen=True)
class Sizes:
    """Bytes, per ``module docstring`` definitions; ``file``/``gzip`` are ``None`` when unsaved."""

    float32: int
    packed: int
    entropy: int
    file: int | None = None
    gzip: int | None = None
    gzip_exact: bool = True  # False: ``gzip`` is an estimate (``GzipBasis``)


def gzip_size(data: bytes) -> int:
    """Bytes of ``data`` after gzip level 9 (deterministic: no timestamp), by zlib-ng: its
    level 9 is zlib's within about 1% and 4x faster on a pruned, clustered model's file (ResNet50:
    16 s against 60 s, whose long runs of repeated values are zlib's slowest case)."""
    return len(gzip_ng.compress(data, compresslevel=9, mtime=0))


PIECE = 1 << 14  # bytes of one sampled piece of a large tensor
WINDOW = 1 << 15  # deflate's window: each piece is compressed with the 32 KiB before it
SAMPLE_PIECES = 16  # pieces compressed per estimate beyond one a tensor, spread by tensor size


def deflate_piece(data: memoryview, start: int, stop: int) -> int:
    """Bytes gzip -9 spends on ``data[start:stop]`` within a stream of ``data``: the piece is
    compressed with the window before it as its dictionary, so back-references reach as far as
    they would in the whole file."""
    primer = {"zdict": data[max(0, start - WINDOW) : start]} if start else {}
    c = zlib_ng.compressobj(9, zlib_ng.DEFLATED, -15, **primer)
    return len(c.compress(data[start:stop])) + len(c.flush())


def sample_plan(nbytes: Sequence[int], pieces: int = SAMPLE_PIECES) -> list[list[tuple[int, int]]]:
    """The (start, stop) byte ranges measured in each buffer: the whole buffer when the budget
    covers it (one range: no piece endings to add), otherwise evenly spread pieces of
    ``PIECE`` bytes, at least one a buffer."""
    total = sum(nbytes) or 1
    plan = []
    for n in nbytes:
        count = math.ceil(n / PIECE)
        share = min(count, max(1, round(pieces * n / total)))
        if share == count:
            plan.append([(0, n)])
        else:  # whole pieces only, evenly spread: (j + 1/2) of each stretch
            whole = n // PIECE
            starts = [((2 * j + 1) * whole // (2 * share)) * PIECE for j in range(share)]
            plan.append([(s, s + PIECE) for s in starts])
    return plan


def start_gzip_shares(
    tensors: Sequence[np.ndarray], pieces: int = SAMPLE_PIECES
) -> Callable[[], list[float]]:
    """Start measuring each tensor's share of a gzip -9 stream of its bytes, on about
    ``pieces`` pieces of ``PIECE`` bytes in all (in a thread pool, so a caller can do other
    work meanwhile), scaled up to the tensor's size; returns the function that waits for them.
    """
    views = [memoryview(np.ascontiguousarray(t)).cast("B") for t in tensors]
    plan = sample_plan([v.nbytes for v in views], pieces)
    jobs = [
        (i, POOL.submit(deflate_piece, v, start, stop))
        for i, (v, ranges) in enumerate(zip(views, plan, strict=True))
        for start, stop in ranges
    ]

    def shares() -> list[float]:
        measured = [0.0] * len(views)
        for i, job in jobs:
            measured[i] += job.result()
        covered = [sum(stop - start for start, stop in ranges) for ranges in plan]
        return [
            m * v.nbytes / c if c else 0.0 for m, v, c in zip(measured, views, covered, strict=True)
        ]

    return shares


EXACT_FILE_BYTES = 1 << 21  # files up to this size are compressed whole for every setting


@dataclass(frozen=True)
class Layout:
    """Where a saved ``.keras`` file keeps its weights: Keras stores the weights file in the zip
    uncompressed, and in it each tensor contiguous, in model order. ``offsets`` are the
    eligible tensors' places; ``entry`` the weights file's bytes, whose CRC-32 stands at
    ``crc_at`` (its local header and its central directory record)."""

    offsets: tuple[int, ...]
    entry: tuple[int, int]
    crc_at: tuple[int, int]


WEIGHTS_ENTRY = "model.weights.h5"


def file_layout(file: bytes, tensors: Sequence[np.ndarray]) -> Layout | None:
    """The ``Layout`` of ``file``; ``None`` when a tensor cannot be found once and only once
    after the previous one, or the file is not such an archive."""
    try:
        with zipfile.ZipFile(io.BytesIO(file)) as z:
            info = z.getinfo(WEIGHTS_ENTRY)
    except (zipfile.BadZipFile, KeyError):
        return None
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    name_and_extra = struct.unpack_from("<HH", file, info.header_offset + 26)
    start = info.header_offset + 30 + sum(name_and_extra)
    crc = struct.pack("<I", info.CRC)
    central = file.find(crc, start + info.file_size)
    offsets, at = [], start
    for t in tensors:
        data = np.ascontiguousarray(t).tobytes()
        found = file.find(data, at, start + info.file_size)
        if found < 0 or (data and file.find(data, found + 1, start + info.file_size) >= 0):
            return None
        offsets.append(found)
        at = found + len(data)
    if central < 0 or file[info.header_offset + 14 : info.header_offset + 18] != crc:
        return None
    entry = (start, start + info.file_size)
    return Layout(tuple(offsets), entry, (info.header_offset + 14, central))


def rewrite(file: bytes, layout: Layout, tensors: Sequence[np.ndarray]) -> bytes:
    """``file`` with ``tensors`` in their places: the file Keras saves for those weights."""
    out = bytearray(file)
    for at, t in zip(layout.offsets, tensors, strict=True):
        data = np.ascontiguousarray(t).tobytes()
        out[at : at + len(data)] = data
    crc = struct.pack("<I", zlib_ng.crc32(memoryview(out)[layout.entry[0] : layout.entry[1]]))
    for at in layout.crc_at:
        out[at : at + 4] = crc
    return bytes(out)


@dataclass(frozen=True)
class GzipBasis:
    """What the gzip figure of a model's settings is measured against.

    Only the tensors' bytes change with the settings (the eligible ones; data-aware settings
    also biases), and a saved ``.keras`` file holds them verbatim at fixed places
    (``Layout``). So a file of up to ``EXACT_FILE_BYTES`` is rewritten with a setting's
    tensors in place (every tensor, where each can be told apart in the file, else the
    eligible ones) and compressed whole: the real gzip -9 size of the file the setting saves,
    to the byte. A larger file is slow to compress (seconds for a MobileNet, whose quantized
    weights are deflate's worst case): its file is compressed for real once, and a setting
    re-measures only the eligible tensors' share on spread samples (``start_gzip_shares``);
    the figure is ``fixed`` plus that share, measured within 2% of the real one (``make
    bench``), and exact for the untouched model.
    """

    file: bytes | None  # the saved file, when it is small enough to compress per setting
    layout: Layout | None  # where the tensors of ``indices`` stand in ``file``
    fixed: float  # gzip bytes of everything in the file but the tensors of ``indices``
    indices: tuple[int, ...]  # the tensors rewritten or sampled, by position in the weights

    def start(self, weights: Sequence[np.ndarray]) -> Callable[[], int]:
        """Start measuring the gzip figure of ``weights``; returns the function that waits."""
        tensors = [weights[i] for i in self.indices]
        if self.file is not None and self.layout is not None:
            return POOL.submit(gzip_size, rewrite(self.file, self.layout, tensors)).result
        shares = start_gzip_shares(tensors)
        return lambda: round(self.fixed + sum(shares()))

    def gzip(self, weights: Sequence[np.ndarray]) -> int:
        return self.start(weights)()

    def exact(self, weights: Sequence[np.ndarray], original: Sequence[np.ndarray]) -> bool:
        """Whether the figure of ``weights`` is the real gzip -9 size, not an estimate: every
        tensor that differs from ``original`` (by identity: the pipeline shares untouched ones)
        is one this basis writes into the file, or none differs."""
        changed = {i for i, w in enumerate(weights) if w is not original[i]}
        return changed <= set(self.indices) and (self.file is not None or not changed)


def placement(
    file: bytes, weights: Sequence[np.ndarray], indices: Sequence[int]
) -> tuple[tuple[int, ...], Layout] | None:
    """Where every tensor stands in ``file`` when each can be told apart there, else those of
    ``indices``: which tensors, and their ``Layout``; ``None`` when neither can be found."""
    for placed in (tuple(range(len(weights))), tuple(indices)):
        layout = file_layout(file, [weights[i] for i in placed])
        if layout is not None:
            return placed, layout
    return None


def start_gzip_basis(
    file: bytes, weights: Sequence[np.ndarray], indices: Sequence[int]
) -> Callable[[], GzipBasis]:
    """Start measuring the basis of a model saved as ``file`` with ``weights``, of which
    ``indices`` change with the settings; returns the function that waits for it. A small
    file places every tensor where it can (data-aware settings change biases too), else those
    of ``indices`` (``GzipBasis.exact`` says which figures are then estimates)."""
    whole = POOL.submit(gzip_size, file)
    found = placement(file, weights, indices) if len(file) <= EXACT_FILE_BYTES else None
    if found is not None:
        placed, layout = found
        return lambda: GzipBasis(file, layout, whole.result(), placed)
    shares = start_gzip_shares([weights[i] for i in indices])
    return lambda: GzipBasis(None, None, whole.result() - sum(shares()), tuple(indices))


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
    scales = report.scale_bits * report.scales
    grid_bits = None if report.per_channel else report.bits  # the values lie on one grid

    def indices(k: int) -> tuple[int, int]:
        """Indices into a codebook of ``k`` values: float32, or b-bit codes and the scale when
        the values lie on one grid, whichever is smaller."""
        book = FLOAT_BITS * k
        if grid_bits is not None:
            book = min(book, grid_bits * k + scales)
        return index_bits(k), book

    # (bits per coded weight, fixed side data in bits) for each coding of the values
    codings = [(FLOAT_BITS, 0), indices(distinct)]
    if report.bits is not None:
        codings.append((report.bits, scales))
    sparse_codings = [(FLOAT_BITS, 0)]
    if has_zero:
        sparse_codings.append(indices(distinct - 1))
        if report.bits is not None:
            sparse_codings.append((report.bits, scales))
    dense = min(n * b + side for b, side in codings)
    sparse = min(n + nonzero * b + side for b, side in sparse_codings) if has_zero else dense
    return min(dense, sparse)


def entropy_bits(w: np.ndarray, report: TensorReport) -> float:
    """Shannon bound for a transformed tensor, side data (codebooks, scales) excluded: ``n x H``
    of its values, or of each channel's values when it is quantized per channel (the decoder
    knows the channel), as the pipeline's report counted them; 32 bits a weight for a float
    tensor."""
    if not report.transformed or w.size == 0:
        return float(FLOAT_BITS * w.size)
    return report.entropy_bits


def weight_sizes(
    weights: Sequence[np.ndarray],
    reports: Sequence[TensorReport],
    file: int | None = None,
    gzip: int | None = None,
) -> Sizes:
    """All size figures for a model's ``weights`` with the pipeline's per-tensor ``reports``
    (covering every tensor); the file's bytes and gzip bytes when they are known."""
    packed = sum(packed_bits(weights[r.index], r) for r in reports)
    entropy = sum(entropy_bits(weights[r.index], r) for r in reports)
    return Sizes(
        float32=4 * sum(int(w.size) for w in weights),
        packed=math.ceil(packed / 8),
        entropy=math.ceil(entropy / 8),
        file=file,
        gzip=gzip,
    )
