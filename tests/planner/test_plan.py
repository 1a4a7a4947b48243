"""The whole plan: composition, time and cost arithmetic, scaling law, recommendation ranking."""

from __future__ import annotations

import math

import pytest

from trainplan.errors import UsageError
from trainplan.planner import Layout, LayoutSpace, chinchilla, load_gpu, load_model, plan, recommend


@pytest.fixture(scope="module")
def llama7b():
    return load_model("llama-2-7b")


def test_time_and_cost_follow_from_step_time(llama7b):
    layout = Layout(gpus=8, zero=3, micro_batch=4, grad_accum=8, seq_len=4096)
    p = plan(llama7b, layout, load_gpu("a100-80gb"), tokens=2e12, price=2.0)
    assert layout.tokens_per_step == 4 * 8 * 8 * 4096
    assert p.steps == math.ceil(2e12 / layout.tokens_per_step)
    assert p.hours == pytest.approx(p.steps * p.perf.step_time_s / 3600)
    assert p.gpu_hours == pytest.approx(8 * p.hours)
    assert p.cost_usd == pytest.approx(2.0 * p.gpu_hours)
    assert p.perf.tokens_per_s == pytest.approx(layout.tokens_per_step / p.perf.step_time_s)
    # MFU can only lose to communication, bubbles and recompute, never exceed the assumption.
    assert 0 < p.perf.mfu <= p.perf.efficiency


def test_more_gpus_is_faster_but_not_cheaper(llama7b):
    gpu = load_gpu("a100-80gb")
    small = plan(llama7b, Layout(gpus=8, zero=3, micro_batch=4, grad_accum=32, seq_len=4096), gpu, tokens=1e12)
    large = plan(llama7b, Layout(gpus=64, zero=3, micro_batch=4, grad_accum=4, seq_len=4096,
                                 gpus_per_node=8), gpu, tokens=1e12)
    assert small.layout.global_batch == large.layout.global_batch
    assert large.hours < small.hours
    assert large.cost_usd >= small.cost_usd * 0.99


def test_zero_stages_shrink_memory_and_fit_flips(llama7b):
    gpu = load_gpu("a100-80gb")
    totals = [plan(llama7b, Layout(gpus=8, zero=z, micro_batch=1), gpu).memory.total for z in (0, 1, 2, 3)]
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[3]
    assert not plan(llama7b, Layout(gpus=8, zero=0), gpu).fits  # 16+ bytes/param x 6.7B > 80 GB
    assert plan(llama7b, Layout(gpus=8, zero=3), gpu).fits


def test_default_tokens_are_compute_optimal(llama7b):
    p = plan(llama7b, Layout(), load_gpu("h100-sxm"))
    assert p.tokens_source == "compute-optimal"
    assert p.tokens == pytest.approx(p.scaling.compute_optimal_tokens)


def test_chinchilla_refit_gives_about_twenty_tokens_per_parameter():
    # Hoffmann et al. 2022: 70B params -> 1.4T tokens; the Besiroglu et al. 2024 refit agrees within ~10%.
    pred = chinchilla(70e9)
    assert pred.compute_optimal_tokens == pytest.approx(1.4e12, rel=0.1)
    assert 15 < chinchilla(7e9).tokens_per_parameter < 25
    # Loss falls with both more parameters and more data.
    assert chinchilla(7e9, 1e12).predicted_loss_at_tokens > chinchilla(7e9, 2e12).predicted_loss_at_tokens
    assert chinchilla(7e9).predicted_loss_at_optimal > chinchilla(70e9).predicted_loss_at_optimal


def test_plan_rejects_bad_numbers(llama7b):
    gpu = load_gpu("h100-sxm")
    with pytest.raises(UsageError, match="--tokens"):
        plan(llama7b, Layout(), gpu, tokens=-1)
    with pytest.raises(UsageError, match="--tp"):
        plan(llama7b, Layout(gpus=6, tp=6), gpu)
    with pytest.raises(UsageError, match="--pp"):
        plan(load_model("gpt2"), Layout(gpus=16, pp=16), gpu)


@pytest.mark.parametrize("optimize", ["time", "cost", "gpus"])
def test_recommend_ranks_feasible_layouts(llama7b, optimize):
    gpu = load_gpu("a100-40gb")
    rec = recommend(llama7b, gpu, Layout(seq_len=4096), global_batch=512, tokens=1e12, optimize=optimize,
                    space=LayoutSpace(max_gpus=32))
    assert rec.evaluated > rec.feasible > 0
    assert all(p.fits and p.layout.global_batch == 512 for p in rec.ranked)
    key = {"time": lambda p: p.hours, "cost": lambda p: p.cost_usd, "gpus": lambda p: p.layout.gpus}[optimize]
    values = [key(p) for p in rec.ranked]
    assert values == sorted(values)
    assert rec.min_gpus == min(p.layout.gpus for p in rec.ranked)
    # Without offload, 6.7B params x 16 bytes of model states need at least 3 x 40 GB.
    no_offload = [p for p in rec.ranked if p.layout.offload == "none"]
    assert min(p.layout.gpus for p in no_offload) >= 4


def test_recommend_reports_when_nothing_fits():
    rec = recommend(load_model("llama-3.1-405b"), load_gpu("a10"), Layout(seq_len=8192), global_batch=64,
                    space=LayoutSpace(max_gpus=8, offload=("none",)))
    assert rec.ranked == [] and rec.min_gpus is None and rec.evaluated > 0
