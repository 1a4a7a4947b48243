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


# Fits, and the throughput mechanisms against hand-computed values ---------------------------------

def test_fits_is_judged_on_nvidia_smi_bytes_against_reported_memory_less_the_margin(llama7b):
    from trainplan.planner import FIT_MARGIN

    gpu = load_gpu("a100-40gb")
    p = plan(llama7b, Layout(gpus=8, zero=3, micro_batch=1, seq_len=2048), gpu)
    assert gpu.usable_bytes == 40960 * 2**20 and FIT_MARGIN == 0.02
    assert p.usable_bytes == int(40960 * 2**20 * 0.98)
    assert p.fits == (p.memory.total <= p.usable_bytes)
    assert p.headroom_bytes == p.usable_bytes - p.memory.total
    doc = p.to_dict()["memory"]
    assert doc["per_gpu"]["total_bytes"] == doc["nvidia_smi_bytes"] == p.memory.total
    assert doc["max_allocated_bytes"] < doc["reserved_bytes"] < doc["nvidia_smi_bytes"]


def _perf(model, **layout):
    return plan(model, Layout(**layout), load_gpu("a100-80gb"), tokens=1e9).perf


def test_interleaving_divides_the_bubble_by_the_chunks(llama7b):
    # Narayanan et al. 2021, Sec. 2.2.2: bubble = (p - 1) / (v m) of the compute
    one = _perf(llama7b, gpus=32, tp=8, pp=4, grad_accum=16)
    two = _perf(llama7b, gpus=32, tp=8, pp=4, grad_accum=16, pp_interleave=2)
    assert one.bubble_s == pytest.approx(one.compute_s * 3 / 16)
    assert two.bubble_s == pytest.approx(one.bubble_s / 2)
    # p2p: m v sends of b s d e / t forward and backward over one NIC (tp x pp > 8 GPUs a node),
    # at NCCL's measured 0.86 of its rate
    assert two.pp_p2p_s == pytest.approx(16 * 2 * 2 * (2048 * 4096 * 2 / 8) / (25e9 * 0.86))
    assert two.pp_p2p_s == pytest.approx(2 * one.pp_p2p_s)


def test_tensor_parallel_all_reduces_are_sized_from_the_activations(llama7b):
    # 4 ring all-reduces of b s d e per layer per micro-batch: 2 (t-1)/t x 2*2048*4096*2 bytes at
    # NCCL's 0.78 of NVLink's 300 GB/s
    perf = _perf(llama7b, gpus=8, tp=8, micro_batch=2, grad_accum=4)
    assert perf.tp_comm_s == pytest.approx(4 * 32 * 4 * 2 * 7 / 8 * (2 * 2048 * 4096 * 2) / (300e9 * 0.78))
    full = _perf(llama7b, gpus=8, tp=8, micro_batch=2, grad_accum=4, checkpointing="full")
    assert full.tp_comm_s == pytest.approx(perf.tp_comm_s * 6 / 4)  # the rerun forward's two more


def test_zero3_overlap_depends_on_the_compute_beside_it(llama7b):
    from trainplan.planner._perf import EXPOSED_FLOOR

    n, gpu = 6_738_415_616, load_gpu("a100-80gb")
    # one bf16 all-gather, ring of 16 over 2 nodes: 8 NICs a node x 25 GB/s x 0.86 (below NVLink's
    # 300 x 0.78), the nodes' NICs carrying one ring each
    gather = 15 / 16 * n * 2 / (8 * 25e9 * 0.86)
    for mb in (1, 64):  # short sequences: at micro-batch 1 the forward is shorter than a gather
        perf = _perf(llama7b, gpus=16, zero=3, micro_batch=mb, grad_accum=2, seq_len=256)
        micro = perf.compute_s / 2
        fwd, bwd = micro / 3, micro * 2 / 3
        exposed = 2 * (max(EXPOSED_FLOOR * gather, gather - fwd) + max(EXPOSED_FLOOR * 2 * gather, 2 * gather - bwd))
        assert perf.dp_comm_s == pytest.approx(2 * 3 * gather)
        assert perf.dp_comm_exposed_s == pytest.approx(exposed)
    small = _perf(llama7b, gpus=16, zero=3, micro_batch=1, grad_accum=2, seq_len=256)
    large = _perf(llama7b, gpus=16, zero=3, micro_batch=64, grad_accum=2, seq_len=256)
    assert small.dp_comm_exposed_s / small.dp_comm_s > large.dp_comm_exposed_s / large.dp_comm_s
    assert gpu.inter_node_gbps == 25 and small.dp_comm_exposed_s > EXPOSED_FLOOR * small.dp_comm_s


def test_eager_attention_adds_the_score_matrix_traffic(llama7b):
    from trainplan.planner._perf import EAGER_SCORE_BYTES

    sdpa = _perf(llama7b, gpus=1, micro_batch=1, seq_len=4096)
    eager = _perf(llama7b, gpus=1, micro_batch=1, seq_len=4096, attention="eager")
    scores = 32 * 4096 ** 2 * 32  # heads x s^2 x layers, one sequence
    assert eager.compute_s - sdpa.compute_s == pytest.approx(scores * EAGER_SCORE_BYTES / 2039e9)


def test_selective_op_checkpointing_reruns_every_other_matmul(llama7b):
    none = plan(llama7b, Layout(checkpointing="none"), load_gpu("h100-sxm"))
    op = plan(llama7b, Layout(checkpointing="selective-op"), load_gpu("h100-sxm"))
    assert op.flops.hardware_per_token - none.flops.hardware_per_token == 32 * 2 * (4096 * 4096 * 2 + 4096 * 11008)
    assert op.flops.model_per_token == none.flops.model_per_token


@pytest.mark.parametrize(("framework", "states"), [("deepspeed", "phase by phase"), ("fsdp", "16/Nd"), ("megatron", "6 + 12/Nd")])
def test_json_names_which_bytes_each_framework_holds(llama7b, framework, states):
    doc = plan(llama7b, Layout(gpus=8, zero=1 if framework == "megatron" else 3, framework=framework),
               load_gpu("h100-sxm")).to_dict()["memory"]
    assert doc["framework"] == framework and states in doc["profile"]["model_states"]
    assert ("eager" in doc["profile"]["activations"]) == (framework == "deepspeed")
