import gzip

import numpy as np

from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import Techniques, report_tensor
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig, fake_quantize
from optimizers.size import entropy_bits, gzip_size, index_bits, packed_bits, weight_sizes

INT4 = Techniques(quantization=QuantizationConfig(4))


def report(w, original=None, techniques=INT4):
    return report_tensor(0, "t/kernel", "t", w if original is None else original, w, techniques)


def test_index_bits():
    assert [index_bits(k) for k in (1, 2, 3, 4, 16, 17, 256)] == [0, 1, 2, 2, 4, 5, 8]


def test_float_tensors_cost_32_bits():
    w = np.random.default_rng(0).normal(size=100).astype(np.float32)
    r = report_tensor(0, "b", "b", w, w, None)
    assert packed_bits(w, r) == 3200 and entropy_bits(w, r) == 3200


def test_quantized_tensor_packs_to_its_bit_width_plus_scales():
    w = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    q = fake_quantize(w, QuantizationConfig(4))
    r = report(q, w)
    assert r.scales == 8
    # 4-bit codes + 8 float32 scales, unless a codebook of the (<= 15 x 8) values is cheaper
    assert packed_bits(q, r) <= 64 * 8 * 4 + 8 * 32
    assert packed_bits(q, r) >= entropy_bits(q, r)


def test_sparse_tensor_uses_the_bitmask_when_smaller():
    w = np.zeros(1000, np.float32)
    w[:50] = 1.0
    w[50:100] = -1.0
    r = report(w, techniques=Techniques(pruning=PruningConfig(0.9)))
    # dense: 1000 x 2 bits + 3 floats; sparse: 1000-bit mask + 100 x 1 bit + 2 floats
    assert packed_bits(w, r) == 1000 + 100 + 64
    assert entropy_bits(w, r) < packed_bits(w, r)


def test_clustered_tensor_uses_a_codebook():
    w = np.repeat(np.arange(16, dtype=np.float32), 100) + 0.5
    r = report(w, techniques=Techniques(clustering=ClusteringConfig(16)))
    assert packed_bits(w, r) == 1600 * 4 + 16 * 32
    assert entropy_bits(w, r) == 1600 * 4


def test_gzip_size_is_deterministic_and_real():
    data = b"abc" * 1000
    assert gzip_size(data) == len(gzip.compress(data, 9, mtime=0)) == gzip_size(data)


def test_weight_sizes_adds_up_every_tensor():
    w = [np.ones((10, 10), np.float32), np.ones(10, np.float32)]
    reports = [report(w[0]), report_tensor(1, "b", "b", w[1], w[1], None)]
    s = weight_sizes(w, reports, b"x" * 77)
    assert s.float32 == 440 and s.file == 77 and s.gzip == gzip_size(b"x" * 77)
    assert s.packed < s.float32
