import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from optimizers.levels import Coded
from optimizers.quantization import (
    BITS,
    GRANULARITIES,
    MODES,
    QuantizationConfig,
    code_range,
    fake_quantize,
    quantize,
    quantize_table,
)

finite = st.floats(-100, 100, allow_nan=False, width=32)
tensors = arrays(np.float32, array_shapes(min_dims=1, max_dims=4, max_side=8), elements=finite)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("granularity", GRANULARITIES)
@settings(max_examples=25, deadline=None)
@given(w=tensors, bits=st.sampled_from(BITS))
def test_codes_levels_and_error_bound(mode, granularity, w, bits):
    before = w.copy()
    cfg = QuantizationConfig(bits, mode, granularity)
    q = quantize(w, cfg)
    np.testing.assert_array_equal(w, before)
    qmin, qmax = code_range(bits, mode)
    assert q.codes.min() >= qmin and q.codes.max() <= qmax
    assert q.values.shape == w.shape and q.values.dtype == w.dtype
    columns = (
        w.reshape(-1, 1)
        if granularity == "per-tensor" or w.ndim < 2
        else w.reshape(-1, w.shape[-1])
    )
    values = q.values.reshape(columns.shape)
    scale = np.broadcast_to(q.scale, (columns.shape[1],))
    # The arithmetic runs in float32, like LiteRT's: w / scale carries a rounding error of a few
    # float32 ulps of the code, up to 2^(bits-1), which at 16 bits is a few thousandths of a step.
    rounding = 4 * np.finfo(np.float32).eps * 2 ** (bits - 1)
    for c in range(columns.shape[1]):
        assert np.unique(values[:, c]).size <= 2**bits
        # within half a step, plus that rounding
        err = np.abs(values[:, c].astype(np.float64) - columns[:, c])
        assert err.max() <= scale[c] * (0.5 + rounding) + 1e-6
    # zero maps exactly to zero
    assert np.all(q.values[w == 0] == 0)
    # dequantization formula
    np.testing.assert_allclose(fake_quantize(w, cfg), q.values)


def test_symmetric_per_channel_uses_litert_grid():
    w = np.array([[1.0, -0.5], [0.27, 0.1], [-0.7, 0.5]], np.float32)  # (in=3, out=2)
    q = quantize(w, QuantizationConfig(4))
    np.testing.assert_allclose(q.scale, [1.0 / 7, 0.5 / 7], rtol=1e-7)
    np.testing.assert_array_equal(q.codes, [[7, -7], [2, 1], [-5, 7]])
    assert (q.zero_point == 0).all()


def test_asymmetric_includes_zero_and_uses_the_full_range():
    w = np.array([0.5, 1.0, 2.0], np.float32)
    q = quantize(w, QuantizationConfig(8, "asymmetric", "per-tensor"))
    assert q.codes.min() >= -128 and q.codes.max() == 127
    assert q.values[0] == pytest.approx(0.5, abs=2 / 255)


def test_matches_ai_edge_quantizer_bit_for_bit():
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor as uqt

    w = np.random.default_rng(0).normal(size=(16, 12)).astype(np.float32)
    for bits in (2, 4, 8):
        for symmetric in (True, False):
            lo, hi = w.min(axis=0, keepdims=True), w.max(axis=0, keepdims=True)
            zp, scale = uqt.tensor_zp_scale_from_min_max(
                lo, hi, bits, symmetric, qtyping.QuantGranularity.CHANNELWISE
            )
            params = qtyping.UniformQuantParams(
                num_bits=bits,
                quantized_dimension=1,
                scale=scale,
                zero_point=zp,
                symmetric=symmetric,
            )
            theirs = uqt.uniform_quantize(w, params)
            mode = "symmetric" if symmetric else "asymmetric"
            ours = quantize(w, QuantizationConfig(bits, mode))
            np.testing.assert_array_equal(ours.codes, theirs)
            np.testing.assert_array_equal(ours.scale, scale.ravel())


def test_constant_and_all_zero_tensors():
    q = quantize(np.zeros((3, 2), np.float32), QuantizationConfig(4))
    assert (q.values == 0).all() and np.isfinite(q.scale).all()
    c = quantize(np.full((4,), 0.3, np.float32), QuantizationConfig(3, "asymmetric"))
    np.testing.assert_allclose(c.values, 0.3, rtol=1e-6)


def test_depthwise_channel_axes():
    w = np.random.default_rng(0).normal(size=(3, 3, 4, 1)).astype(np.float32)
    w[..., 2, 0] *= 100
    q = quantize(w, QuantizationConfig(8), channel_axes=(-2, -1))
    assert q.scale.shape == (4,)
    assert q.scale[2] > 50 * q.scale[0]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_is_refused(bad):
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize(np.array([1.0, bad], np.float32), QuantizationConfig(8))


@pytest.mark.parametrize("kwargs", [{"bits": 1}, {"bits": 12}, {"mode": "x"}, {"granularity": "g"}])
def test_config_validation_names_the_field(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        QuantizationConfig(**kwargs)


def test_a_small_negative_weight_rounds_to_positive_zero_as_in_the_file():
    w = np.array([-0.01, 1.0, 0.0], np.float32)
    q = quantize(w, QuantizationConfig(4, granularity="per-tensor"))
    assert q.values.tolist() == [0.0, 1.0, 0.0] and not np.signbit(q.values).any()


def test_quantize_table_rounds_the_shared_values_and_merges_equal_levels():
    # One row for the tensor; 3 bits: scale 1/3, so 0.3 and 0.4 both become 1/3 and merge:
    # four shared values become three, and the codes are renumbered.
    table = np.array([[-1.0, 0.3, 0.4, 1.0]], np.float32)
    coded = Coded(np.array([[0, 1], [2, 3], [1, 2]]), table)
    before = coded.codes.copy()
    rounded = quantize_table(coded, QuantizationConfig(3, granularity="per-channel"))
    np.testing.assert_array_equal(coded.codes, before)  # not modified
    np.testing.assert_allclose(rounded.table, [[-1.0, 1 / 3, 1.0]], rtol=1e-7)
    assert rounded.codes.tolist() == [[0, 1], [1, 2], [1, 1]]
    # one scale per tensor, whatever the config's granularity: the values of ``quantize``
    tensor = QuantizationConfig(3, granularity="per-tensor")
    np.testing.assert_array_equal(rounded.values, quantize(coded.values, tensor).values)


def test_quantize_table_gives_each_channel_row_its_own_scale():
    # Channel c uses row c. 2 bits: levels -s, 0, s with s the row's largest magnitude.
    table = np.array([[-1.0, 0.2, 1.0], [0.02, 0.04, 0.1]], np.float32)
    coded = Coded(np.array([[0, 0], [1, 1], [2, 2]]), table)
    rounded = quantize_table(coded, QuantizationConfig(2, granularity="per-tensor"))
    per_channel = QuantizationConfig(2, granularity="per-channel")
    np.testing.assert_array_equal(rounded.values, quantize(coded.values, per_channel).values)
    np.testing.assert_allclose(rounded.table, [[-1.0, 0.0, 1.0], [0.0, 0.1, np.inf]])
    assert rounded.codes.tolist() == [[0, 0], [1, 0], [2, 1]]  # 0.02 and 0.04 merged at 0


def test_quantize_table_of_an_empty_tensor():
    coded = Coded(np.zeros((0, 3), np.intp), np.full((3, 1), np.inf, np.float32))
    assert quantize_table(coded, QuantizationConfig(4)) is coded
