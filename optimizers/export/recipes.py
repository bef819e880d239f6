"""ai_edge_quantizer recipes: weight-only int8/int4/int2 and float16 files from a float32 one."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from optimizers.export.flatbuffer import TYPE_CODES, buffer_bytes, read_flatbuffer
from optimizers.export.grid import block_grid
from optimizers.export.quiet import quiet

# LiteRT ops whose constant weight operand ai_edge_quantizer quantizes per output channel.
# (Keras 3 Embedding becomes GATHER, which it does not quantize: tables stay float32.)
WEIGHT_OPS = (
    "FULLY_CONNECTED",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "CONV_2D_TRANSPOSE",
    "BATCH_MATMUL",
    "EMBEDDING_LOOKUP",
)


def integer_rule(
    op: str, bits: int, dynamic: bool, granularity: str = "CHANNELWISE", regex: str = ".*"
) -> dict[str, Any]:
    """One ai_edge_quantizer rule: symmetric ``bits``-bit weights of the ``op`` ops whose scope
    matches ``regex``; ``dynamic`` kernels quantize their activations at run time, the others
    dequantize their weights once (DEQUANTIZE) and compute in float32.

    ``skip_checks``: the default policy offers int2 only with dynamic kernels, and int4
    weight-only not for depthwise convolutions, but LiteRT's DEQUANTIZE reads both (its hybrid
    int2 convolution returns NaN, and it has no hybrid int4 depthwise kernel, hence weight-only).
    """
    return {
        "regex": regex,
        "operation": op,
        "algorithm_key": "min_max_uniform_quantize",
        "op_config": {
            "weight_tensor_config": {
                "num_bits": bits,
                "symmetric": True,
                "granularity": granularity,
                "dtype": "INT",
            },
            "compute_precision": "INTEGER" if dynamic else "FLOAT",
            "explicit_dequantize": not dynamic,
            "skip_checks": True,
        },
    }


def integer_recipe(bits: int, dynamic: bool) -> list[dict[str, Any]]:
    """An ai_edge_quantizer recipe: symmetric per-channel ``bits``-bit weights of WEIGHT_OPS."""
    return [integer_rule(op, bits, dynamic) for op in WEIGHT_OPS]


def blockwise_recipe(float_data: bytes, bits: int) -> list[dict[str, Any]]:
    """Rules storing blockwise each fully connected kernel of ``float_data`` whose values lie on
    a blockwise grid of ``bits``-bit codes (``grid.block_grid``: the preview's blockwise
    rounding); after ``integer_recipe``'s rules they win for those ops (the last match does).

    Blockwise int4 kernels run with their activations quantized at run time (dynamic range):
    LiteRT's weight-only DEQUANTIZE reads no blocks (its file scores 10% on the digits).
    """
    from ai_edge_litert.tools import flatbuffer_utils
    from ai_edge_quantizer.utils.tfl_flatbuffer_utils import get_op_scope

    model = read_flatbuffer(float_data)
    rules = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) != "FULLY_CONNECTED":
                continue
            kernel = subgraph.tensors[op.inputs[1]]
            raw = buffer_bytes(model, kernel)
            if raw is None or kernel.type != TYPE_CODES["float32"] or kernel.sparsity is not None:
                continue
            w = np.frombuffer(raw, np.float32).reshape(tuple(int(d) for d in kernel.shape))
            found = block_grid(w, bits)
            if found is None:
                continue
            size = w.shape[1] // found[1].shape[1]
            scope = f"^{re.escape(get_op_scope(op, subgraph.tensors))}$"
            rules.append(integer_rule("FULLY_CONNECTED", bits, True, f"BLOCKWISE_{size}", scope))
    return rules


def float16_recipe() -> list[dict[str, Any]]:
    """An ai_edge_quantizer recipe storing the weights of WEIGHT_OPS as float16."""
    return [
        {
            "regex": ".*",
            "operation": op,
            "algorithm_key": "float_casting",
            "op_config": {
                "weight_tensor_config": {
                    "num_bits": 16,
                    "symmetric": True,
                    "granularity": "TENSORWISE",
                    "dtype": "FLOAT",
                },
                "compute_precision": "FLOAT",
                "explicit_dequantize": True,
                "skip_checks": True,
            },
        }
        for op in (
            "FULLY_CONNECTED",
            "CONV_2D",
            "DEPTHWISE_CONV_2D",
            "CONV_2D_TRANSPOSE",
            "EMBEDDING_LOOKUP",
        )
    ]


def quantize_weights(float_data: bytes, recipe: list[dict[str, Any]]) -> bytes:
    """Apply an ai_edge_quantizer recipe to a float LiteRT flatbuffer."""
    from ai_edge_quantizer import quantizer

    with quiet():
        q = quantizer.Quantizer(bytearray(float_data), recipe)
        result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)
