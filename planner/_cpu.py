"""CPU step time from measured kernel timings: the step's real matmul and attention shapes, each
at the rate this CPU reaches for that shape. Pure Python.

One efficiency for a whole step (the matmul peak times a share fitted to the trials) is the
planner's model on a GPU. On the CPU it missed by 30-45% at the ends of a 64-256 width range
(benchmarks/results/calibration.md): a small model's products are narrow (64-704 features) and
short (128-2048 rows), and their rate varies with the shape more than a function of the work per
micro-batch can follow. Here the step's time is instead the sum, over the products it really runs,
of a cost model of that product fitted to timings of the same kind of kernel on the same CPU
(runners/_cpubench.py; samples kept in the calibration's ``device["kernels"]``):

- a linear layer y = x W^T, x of T x i, W of o x i, forward and backward (y, then dX = dY W and
  dW = dY^T X: three products of 2 T i o FLOPs): ``t = 6 T i o / P + 12 (T i + i o + T o) / B + 3 c``,
  the roofline's compute and memory terms (Williams et al. 2009, "Roofline", CACM 52(4)) with P
  the FLOP/s and B the bytes/s the products reach (fp32, 4 bytes; each product reads two of the
  three matrices and writes the third) and c a fixed cost per product (dispatch, packing);
- causal attention (``scaled_dot_product_attention``, CPU flash kernel), forward and backward, of
  b sequences, h heads, s positions, head width e: ``t = a b h s^2 e + u b h s e + c'``: the score
  work grows with the square of the sequence, the reads and writes of q, k, v, o with its length.

Each cost model's three constants are fitted to the samples by non-negative least squares in
relative error (:func:`fit_kernels`), not to the trials: the calibration keeps one free scale on the
kernels' sum (``e_max``, ~1 when the step's products run as fast as the same products alone).
Only the dense decoder families with their standard products are modelled (no MoE, tensor or
pipeline parallelism, checkpointing or offload): :func:`kernel_seconds` returns None for others and
the calibration falls back to FLOPs over the matmul peak.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainplan.planner._layout import Layout
from trainplan.planner._lsq import nonneg_rel_lsq
from trainplan.planner._model import ModelSpec

__all__ = ["KernelModel", "fit_kernels", "kernel_seconds", "linear_row", "sdpa_row"]

BYTES = 4
"""fp32: the CPU trials train in fp32 (bf16 matmuls on a CPU without AMX are emulated)."""


def linear_row(tokens: float, fan_in: float, fan_out: float) -> list[float]:
    """Regressors of a linear layer's forward + backward (see the module docstring)."""
    return [6 * tokens * fan_in * fan_out, 3 * BYTES * (tokens * fan_in + fan_in * fan_out + tokens * fan_out), 3.0]


def sdpa_row(batch: float, heads: float, seq: float, head_dim: float) -> list[float]:
    """Regressors of causal attention's forward + backward (see the module docstring)."""
    return [batch * heads * seq * seq * head_dim, batch * heads * seq * head_dim, 1.0]


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelModel:
    """The fitted cost models of one CPU at one thread count."""

    linear: tuple[float, float, float]
    """1/P (s per FLOP), 1/B (s per byte), c (s per product) of the linear layers' products."""
    sdpa: tuple[float, float, float]
    """a (s per score element x head width), u (s per q/k/v/o element), c' (s per call) of attention."""
    threads: int
    """Intra-op threads the samples ran on."""
    misfit: float
    """Relative (log) standard deviation of the samples about the fitted models."""

    def linear_s(self, tokens: float, fan_in: float, fan_out: float) -> float:
        return sum(a * b for a, b in zip(self.linear, linear_row(tokens, fan_in, fan_out)))

    def sdpa_s(self, batch: float, heads: float, seq: float, head_dim: float) -> float:
        return sum(a * b for a, b in zip(self.sdpa, sdpa_row(batch, heads, seq, head_dim)))


def fit_kernels(samples: Mapping[str, Any]) -> KernelModel | None:
    """Fit :class:`KernelModel` to runners/_cpubench.py's samples; None when they are missing or unfit."""
    lin, att = samples.get("linear") or [], samples.get("sdpa") or []
    if len(lin) < 4 or len(att) < 4:
        return None
    cl = nonneg_rel_lsq([linear_row(*r[:3]) for r in lin], [float(r[3]) for r in lin])
    ca = nonneg_rel_lsq([sdpa_row(*r[:4]) for r in att], [float(r[4]) for r in att])
    if cl is None or ca is None:
        return None
    km = KernelModel(linear=(cl[0], cl[1], cl[2]), sdpa=(ca[0], ca[1], ca[2]), threads=int(samples.get("threads", 1)),
                     misfit=0.0)
    res = [math.log(km.linear_s(*r[:3]) / r[3]) for r in lin] + [math.log(km.sdpa_s(*r[:4]) / r[4]) for r in att]
    return KernelModel(linear=km.linear, sdpa=km.sdpa, threads=km.threads,
                       misfit=math.sqrt(sum(x * x for x in res) / max(1, len(res) - 6)))


def _products(model: ModelSpec) -> list[tuple[int, int]]:
    """(in, out) features of one block's linear layers."""
    q, kv = model.num_heads * model.head_dim, model.num_kv_heads * model.head_dim
    d, f = model.hidden_size, model.intermediate_size
    mlp = [(d, f), (d, f), (f, d)] if model.gated_mlp else [(d, f), (f, d)]
    return [(d, q), (d, kv), (d, kv), (q, d), *mlp]


def kernel_seconds(model: ModelSpec, layout: Layout, km: KernelModel) -> float | None:
    """Seconds one rank spends per optimizer step in the linear layers' and attention's kernels
    (forward + backward of every micro-batch), by the fitted cost models; None for a model or layout
    the products here do not describe (see the module docstring)."""
    if (model.num_experts > 1 or model.learned_positions or layout.tp > 1 or layout.pp > 1
            or getattr(layout, "cp", 1) > 1 or layout.checkpointing != "none" or layout.offload != "none"):
        return None
    tokens = layout.micro_batch * layout.seq_len
    block = sum(km.linear_s(tokens, i, o) for i, o in _products(model))
    block += km.sdpa_s(layout.micro_batch, model.num_heads, layout.seq_len, model.head_dim)
    head = km.linear_s(tokens, model.hidden_size, model.vocab_size)
    return layout.grad_accum * (model.num_layers * block + head)
