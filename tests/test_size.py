import gzip

import numpy as np
from zlib_ng import gzip_ng

from optimizers.clustering import ClusteringConfig
from optimizers.pipeline import Techniques, report_tensor
from optimizers.pruning import PruningConfig
from optimizers.quantization import QuantizationConfig, fake_quantize
from optimizers.size import (
    PIECE,
    entropy_bits,
    gzip_size,
    index_bits,
    packed_bits,
    sample_plan,
    start_gzip_basis,
    start_gzip_shares,
    weight_sizes,
)

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


def test_a_codebook_on_one_grid_stores_b_bit_codes_and_the_scale_when_smaller():
    w = np.repeat(np.array([-1.0, -0.5, 0.5, 1.0], np.float32), 250)  # 8-bit grid values
    clustered_8_bit = Techniques(clustering=ClusteringConfig(4), quantization=QuantizationConfig(8))
    r = report(w, techniques=clustered_8_bit)
    assert r.scales == 1 and not r.per_channel  # clustered per tensor: one scale
    # 2-bit indices, and a codebook of four 8-bit codes plus the scale (not four floats)
    assert packed_bits(w, r) == 1000 * 2 + 4 * 8 + 32
    # Two values on an asymmetric grid (a scale and a zero point): the float codebook is smaller.
    two = np.repeat(np.array([-1.0, 1.0], np.float32), 500)
    asymmetric = QuantizationConfig(8, "asymmetric")
    r = report(two, techniques=Techniques(clustering=ClusteringConfig(2), quantization=asymmetric))
    assert packed_bits(two, r) == 1000 * 1 + 2 * 32


def test_gzip_size_is_a_real_gzip_stream_within_2_percent_of_zlibs_level_9():
    data = np.random.default_rng(0).integers(0, 16, 200_000, np.uint8).tobytes()  # compressible
    stream = gzip_ng.compress(data, 9, mtime=0)
    assert gzip.decompress(stream) == data  # what any gunzip reads
    assert gzip_size(data) == len(stream) == gzip_size(data)  # deterministic
    assert abs(len(stream) / len(gzip.compress(data, 9, mtime=0)) - 1) < 0.02


def test_weight_sizes_adds_up_every_tensor():
    w = [np.ones((10, 10), np.float32), np.ones(10, np.float32)]
    reports = [report(w[0]), report_tensor(1, "b", "b", w[1], w[1], None)]
    s = weight_sizes(w, reports, file=77, gzip=12)
    assert s.float32 == 440 and s.file == 77 and s.gzip == 12
    assert s.packed < s.float32


def test_sample_plan_takes_whole_buffers_within_budget_and_spreads_pieces_of_the_rest():
    assert sample_plan([3 * PIECE, 100], pieces=48) == [[(0, 3 * PIECE)], [(0, 100)]]
    plan = sample_plan([100 * PIECE + 5, 10], pieces=4)
    assert plan[1] == [(0, 10)]  # a small buffer is measured whole, however small its share
    ranges = plan[0]
    assert len(ranges) == 4 and ranges == sorted(set(ranges))
    assert all(s % PIECE == 0 and e == s + PIECE <= 100 * PIECE for s, e in ranges)
    assert ranges[0][0] >= 10 * PIECE and ranges[-1][1] <= 90 * PIECE  # spread, not clustered


def test_tensor_share_of_a_gzip_stream_matches_the_whole_stream():
    """Measured piece by piece (each primed with the window before it), a tensor costs what
    it costs inside one gzip -9 stream, to within the pieces' block endings."""
    rng = np.random.default_rng(0)
    w = fake_quantize(rng.normal(size=(300, 200)).astype(np.float32), QuantizationConfig(4))
    whole = gzip_size(w.tobytes()) - 18  # gzip's header and trailer
    (share,) = start_gzip_shares([w])()
    assert abs(share - whole) / whole < 0.005


def test_gzip_figure_of_a_sampled_model_is_within_two_percent_of_gzip9(tmp_path):
    """The figure the app shows for a setting against the real gzip -9 of the saved file, on a
    model large enough (4 MB) that only a sample of its kernels is compressed."""
    import keras

    from optimizers import keras_io
    from optimizers.pipeline import OptimizationConfig, eligible_tensors, optimize_weights

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((1024,)), keras.layers.Dense(1024), keras.layers.Dense(8)]
    )
    weights, refs = model.get_weights(), eligible_tensors(model)
    kernels = [weights[r.index].nbytes for r in refs]
    assert len(sample_plan(kernels)[0]) < kernels[0] // PIECE  # only a sample is compressed
    clone = keras.models.clone_model(model)  # saved as explore saves it: the clone
    clone.set_weights(weights)
    file = keras_io.save_model_bytes(clone)
    basis = start_gzip_basis(file, weights, [r.index for r in refs])()
    assert basis.gzip(weights) == gzip_size(file)  # exact for the untouched model
    for config in (
        OptimizationConfig(pruning=PruningConfig(0.5)),
        OptimizationConfig(clustering=ClusteringConfig(16)),
        OptimizationConfig(quantization=QuantizationConfig(8)),
        OptimizationConfig(
            pruning=PruningConfig(0.7),
            clustering=ClusteringConfig(8),
            quantization=QuantizationConfig(4),
        ),
    ):
        optimized, _ = optimize_weights(weights, refs, config)
        clone.set_weights(optimized)
        saved = keras_io.save_model_bytes(clone)
        assert len(saved) == len(file)  # the file's size never depends on the settings
        real = gzip_size(saved)
        assert abs(basis.gzip(optimized) - real) / real < 0.02, config


def test_file_layout_needs_every_tensor_once_in_a_stored_weights_entry(tmp_path):
    """Tensors found once each, in order, inside the weights entry; a file where one cannot be
    told apart (two equal tensors) or that is no archive has no layout, and is sampled."""
    import io
    import zipfile

    from optimizers.size import file_layout

    a, b = np.arange(64, dtype=np.float32), np.arange(64, 128, dtype=np.float32)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("config.json", b"{}")
        z.writestr("model.weights.h5", b"head" + a.tobytes() + b"mid" + b.tobytes() + b"end")
    file = buffer.getvalue()
    layout = file_layout(file, [a, b])
    assert layout is not None
    assert [file[o : o + 256] for o in layout.offsets] == [a.tobytes(), b.tobytes()]
    assert file_layout(file, [b, a]) is None  # not in model order
    assert file_layout(file, [a, a]) is None
    assert file_layout(b"not a zip", [a]) is None
