"""Counting rules for PyTorch and torchvision operations: convolutions, linear layers,
matrix products, einsum and attention. Each counts exactly what ``FlopCounterMode``
counts (halved: it reports FLOPs = 2 x MACs); bias additions are not counted.
"""
from __future__ import annotations

import math
import operator
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import shifted_window_attention
from torchvision.ops import StochasticDepth

from .rules import OpCall, register_rule, zero_macs


def conv_macs(output: torch.Tensor, weight_shape: Sequence[int]) -> int:
    """Each output element accumulates (in_channels / groups) x kernel products."""
    return output.numel() * math.prod(weight_shape[1:])


def conv_transpose_macs(input: torch.Tensor, weight_shape: Sequence[int]) -> int:
    """Each input element scatters into (out_channels / groups) x kernel outputs."""
    return input.numel() * math.prod(weight_shape[1:])


@register_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv_module_macs(call: OpCall) -> int:
    return conv_macs(call.output, call.target.weight.shape)


@register_rule(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv_transpose_module_macs(call: OpCall) -> int:
    return conv_transpose_macs(call.args[0], call.target.weight.shape)


@register_rule(F.conv1d, F.conv2d, F.conv3d)
def conv_function_macs(call: OpCall) -> int:
    return conv_macs(call.output, call.arg(1, "weight").shape)


@register_rule(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
def conv_transpose_function_macs(call: OpCall) -> int:
    return conv_transpose_macs(call.args[0], call.arg(1, "weight").shape)


@register_rule(nn.Linear)
def linear_module_macs(call: OpCall) -> int:
    return call.output.numel() * call.target.in_features


@register_rule(F.linear)
def linear_function_macs(call: OpCall) -> int:
    return call.output.numel() * call.arg(1, "weight").shape[-1]


@register_rule(torch.matmul, operator.matmul, torch.mm, torch.bmm,
               torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.mm, torch.Tensor.bmm)
def matmul_macs(call: OpCall) -> int:
    """``(..., n, k) @ (..., k, m)``: every output element sums ``k`` products."""
    return call.output.numel() * call.args[0].shape[-1]


@register_rule(torch.addmm, torch.baddbmm, torch.Tensor.addmm, torch.Tensor.baddbmm)
def add_matmul_macs(call: OpCall) -> int:
    """``input + a @ b``: only the product counts."""
    first_factor = call.args[1] if len(call.args) > 1 else call.kwargs.get("mat1", call.kwargs.get("batch1"))
    return call.output.numel() * first_factor.shape[-1]


@register_rule(torch.einsum)
def einsum_call_macs(call: OpCall) -> int:
    equation, *operands = call.args
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    return einsum_macs(equation, [tuple(operand.shape) for operand in operands])


def einsum_macs(equation: str, shapes: List[Sequence[int]]) -> int:
    """Contract the operands left to right; each pairwise contraction costs the product of
    the sizes of every index it involves (a single operand costs nothing)."""
    inputs, arrow, output = equation.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if not arrow:  # implicit output: the broadcast dimensions, then the letters used once, sorted
        once = sorted(c for c in set(inputs) if c.isalpha() and inputs.count(c) == 1)
        output = ("..." if "..." in inputs else "") + "".join(once)
    ellipsis_rank = max((len(shape) - len(term.replace("...", "")) for term, shape in zip(terms, shapes)
                         if "..." in term), default=0)
    batch_letters = "".join(chr(0x100 + i) for i in range(ellipsis_rank))  # not in any equation

    def expand(term: str, rank: int) -> str:
        return term.replace("...", batch_letters[ellipsis_rank - (rank - len(term.replace("...", ""))):])

    terms = [expand(term, len(shape)) for term, shape in zip(terms, shapes)]
    output = expand(output, ellipsis_rank + len(output.replace("...", "")))
    sizes: Dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    total, current = 0, terms[0]
    for position, term in enumerate(terms[1:], start=1):
        involved = set(current) | set(term)
        total += math.prod(sizes[letter] for letter in involved)
        needed = set(output).union(*terms[position + 1:])
        current = "".join(letter for letter in involved if letter in needed)
    return total


@register_rule(F.scaled_dot_product_attention)
def attention_macs(call: OpCall) -> int:
    """``softmax(q k^T) v``: L x S x E for the scores plus L x S x Ev for the weighted sum."""
    query, key, value = call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")
    return query.numel() // query.shape[-1] * key.shape[-2] * (query.shape[-1] + value.shape[-1])


@register_rule(nn.MultiheadAttention)
def multihead_attention_macs(call: OpCall) -> int:
    """Input projections, scores, weighted sum and output projection."""
    layer: nn.MultiheadAttention = call.target
    query, key = call.arg(0, "query"), call.arg(1, "key")
    embed = layer.embed_dim
    query_tokens, key_tokens = query.numel() // query.shape[-1], key.numel() // key.shape[-1]
    batch = 1 if query.dim() == 2 else query.shape[0 if layer.batch_first else 1]
    keys_per_query = key_tokens // batch + (layer.bias_k is not None) + int(layer.add_zero_attn)
    projections = query_tokens * embed * embed * 2 + key_tokens * (layer.kdim + layer.vdim) * embed
    return projections + 2 * query_tokens * keys_per_query * embed


@register_rule(shifted_window_attention)
def shifted_window_attention_macs(call: OpCall) -> int:
    """torchvision's Swin attention: the input is padded to whole windows, then projected,
    attended within each window and projected back."""
    x, qkv_weight, proj_weight = call.args[0], call.args[1], call.args[2]
    window = call.arg(4, "window_size")
    *batch, height, width, channels = x.shape
    padded_height = math.ceil(height / window[0]) * window[0]
    padded_width = math.ceil(width / window[1]) * window[1]
    tokens = math.prod(batch) * padded_height * padded_width
    return (tokens * channels * qkv_weight.shape[0] + 2 * tokens * window[0] * window[1] * channels
            + tokens * channels * proj_weight.shape[0])


# Layers with parameters but, by the convention above, no multiply-accumulates: a rule
# marks them as counted, so that the report does not list them as unknown.
register_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d,
              nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm, nn.Embedding,
              nn.EmbeddingBag, nn.PReLU, F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm,
              StochasticDepth)(zero_macs)
