"""Step time, throughput and MFU (planner/_perf.py) against values worked out by hand.

A made-up GPU with round numbers (100 TFLOP/s bf16, 100 GB/s in a node, 10 GB/s across nodes,
efficiency 0.5) keeps the arithmetic checkable: compute = hardware FLOPs / (GPUs x peak x
efficiency); a ring all-reduce moves 2(n-1)/n of the buffer, ZeRO-3 3(n-1)/n per micro-batch; NCCL
reaches 0.78 of NVLink (78 GB/s here) and 0.86 of a node's NICs; a collective beside compute leaves
max(0.15 x its time, its time - that compute) exposed (the backward pass is 2/3 of compute).
Without ``--mfu`` the matmuls run at 0.5 / (1 + 3.5 x machine balance / d), the balance being
100 FLOP per HBM byte here, and the attention core at the GPU's own attention efficiency.
"""

from __future__ import annotations

import dataclasses

import pytest

from trainplan.planner import GPUSpec, Layout, default_efficiency, estimate_perf, load_gpu, load_model

GPU = GPUSpec(key="round", name="round numbers", memory_gib=80, tflops={"bf16": 100.0, "fp32": 50.0},
              hbm_gbps=1000, intra_node_gbps=100, inter_node_gbps=10, compute_efficiency=0.5, price_per_hour=1.0)
N = 1e9  # parameters


@pytest.fixture(scope="module")
def llama7b():
    return load_model("llama-2-7b")  # hidden 4096, 32 layers


def test_data_parallel_all_reduce_mostly_hides_behind_backward(llama7b):
    layout = Layout(gpus=8, seq_len=4096)
    p = estimate_perf(llama7b, layout, GPU, params_total=N, model_flops_per_step=8e15,
                      hardware_flops_per_step=8e15, efficiency=0.5)
    assert p.compute_s == pytest.approx(20.0)  # 8e15 / (8 x 100e12 x 0.5)
    comm = 2 * 7 / 8 * 2e9 / 78e9  # all-reduce of 2 GB over NVLink at 0.78 x 100 GB/s
    assert p.dp_comm_s == pytest.approx(comm)
    assert p.dp_comm_exposed_s == pytest.approx(0.15 * comm)  # 13.3 s of backward hide all but the floor
    assert p.tp_comm_s == p.bubble_s == p.offload_s == 0.0
    assert p.step_time_s == pytest.approx(20.0 + 0.15 * comm)
    assert p.tokens_per_s == pytest.approx(8 * 4096 / (20.0 + 0.15 * comm))
    assert p.mfu == pytest.approx(8e15 / ((20.0 + 0.15 * comm) * 8 * 100e12))


def test_communication_longer_than_backward_is_exposed(llama7b):
    p = estimate_perf(llama7b, Layout(gpus=8, seq_len=4096), GPU, params_total=N, model_flops_per_step=8e12,
                      hardware_flops_per_step=8e12, efficiency=0.5)
    # compute 0.02 s, backward 0.01333 s: all of the 0.0449 s all-reduce beyond the backward is exposed
    assert p.dp_comm_exposed_s == pytest.approx(2 * 7 / 8 * 2e9 / 78e9 - 0.02 * 2 / 3)


def test_zero3_across_nodes_moves_three_halves_per_micro_batch(llama7b):
    layout = Layout(gpus=16, gpus_per_node=8, zero=3, grad_accum=2, seq_len=4096)
    p = estimate_perf(llama7b, layout, GPU, params_total=N, model_flops_per_step=8e15,
                      hardware_flops_per_step=8e15, efficiency=0.5)
    assert p.compute_s == pytest.approx(10.0)
    # across nodes the ring runs over the node's 8 NICs: 8 x 10 GB/s x 0.86 = 68.8 GB/s (< 78 NVLink)
    one = 15 / 16 * 2e9 / 68.8e9  # one all-gather or reduce-scatter of the 2 GB shard
    assert p.dp_comm_s == pytest.approx(2 * 3 * one)  # 2 micro-batches x (2 gathers + 1 scatter)
    assert p.dp_comm_exposed_s == pytest.approx(0.15 * 2 * 3 * one)  # 1.7 s forward / 3.3 s backward hide them
    zero2 = estimate_perf(llama7b, layout.with_(zero=2), GPU, params_total=N, model_flops_per_step=8e15,
                          hardware_flops_per_step=8e15, efficiency=0.5)
    assert zero2.dp_comm_s == pytest.approx((2 + 1) * one)  # 2 reduce-scatters + 1 all-gather


def test_tensor_parallel_all_reduces_and_pipeline_bubble(llama7b):
    tp = estimate_perf(llama7b, Layout(gpus=2, tp=2, seq_len=4096), GPU, params_total=N,
                       model_flops_per_step=8e15, hardware_flops_per_step=8e15, efficiency=0.5)
    # 4 all-reduces x 32 layers of 1 x 4096 x 4096 bf16 activations, 2 x 1/2 of them each, at 78 GB/s
    assert tp.tp_comm_s == pytest.approx(128 * 4096 * 4096 * 2 / 78e9)
    assert tp.dp_comm_s == 0.0  # dp = 1
    pp = estimate_perf(llama7b, Layout(gpus=4, pp=4, grad_accum=8, seq_len=4096), GPU, params_total=N,
                       model_flops_per_step=8e15, hardware_flops_per_step=8e15, efficiency=0.5)
    assert pp.bubble_s == pytest.approx(pp.compute_s * 3 / 8)  # (p - 1) / m, 1F1B


def test_cpu_offload_adds_pcie_copies_and_the_host_optimizer_step(llama7b):
    p = estimate_perf(llama7b, Layout(gpus=8, zero=2, offload="cpu", seq_len=4096), GPU, params_total=N,
                      model_flops_per_step=8e15, hardware_flops_per_step=8e15, efficiency=0.5)
    # 1.25e8 params per GPU: 6 bytes each over 25 GB/s, then 8 GPUs' partitions at 2e9 params/s
    assert p.offload_s == pytest.approx(1.25e8 * 6 / 25e9 + 1.25e8 * 8 / 2e9)


def test_recompute_counts_in_hfu_not_mfu(llama7b):
    p = estimate_perf(llama7b, Layout(gpus=1, seq_len=4096), GPU, params_total=N, model_flops_per_step=6e14,
                      hardware_flops_per_step=8e14, efficiency=0.5)
    assert p.compute_s == pytest.approx(16.0)
    assert p.hfu == pytest.approx(0.5) and p.mfu == pytest.approx(0.375)


def test_default_efficiency_shrinks_with_the_memory_bound_share(llama7b):
    # machine balance of the round GPU: 100e12 FLOP/s / 1000e9 B/s = 100 FLOP per byte
    assert default_efficiency(llama7b, GPU) == 0.461  # 0.5 / (1 + 3.5 x 100 / 4096)
    assert default_efficiency(load_model("gpt2"), GPU) == 0.343  # 0.5 / (1 + 3.5 x 100 / 768)
    # the same width weighs more on a GPU whose FLOP/s outgrew its HBM (H100 SXM: 989.4 / 3350)
    narrow = dataclasses.replace(llama7b, hidden_size=2048)
    a100, h100 = load_gpu("a100-80gb"), load_gpu("h100-sxm")
    assert default_efficiency(narrow, a100) == round(0.687 / (1 + 3.5 * (312 / 2039) * 1000 / 2048), 3) == 0.545
    assert default_efficiency(narrow, h100) == round(0.641 / (1 + 3.5 * (989.4 / 3350) * 1000 / 2048), 3) == 0.426
    # a recorded device profile knows no bandwidth: its (calibrated) figure is used as it is
    assert default_efficiency(llama7b, dataclasses.replace(GPU, hbm_gbps=0.0)) == 0.5


def test_attention_core_runs_at_its_own_efficiency(llama7b):
    gpu = dataclasses.replace(GPU, attention_efficiency=0.25)
    layout = Layout(gpus=1, seq_len=4096)
    # attention core per token: 3 passes x 32 layers x 2 s h (d_qk + d_v) = 3 x 32 x 2 x 4096 x 32 x 256
    attn = 3 * 32 * 2 * 4096 * 32 * 256 * 4096  # 4096 tokens a step: 2.64e13 FLOPs
    p = estimate_perf(llama7b, layout, gpu, params_total=N, model_flops_per_step=1e14, hardware_flops_per_step=1e14)
    assert p.compute_s == pytest.approx((1e14 - attn) / (100e12 * 0.461) + attn / (100e12 * 0.25))
    assert p.efficiency == 0.461
    # full checkpointing reruns the core: 4 passes
    full = estimate_perf(llama7b, layout.with_(checkpointing="full"), gpu, params_total=N,
                         model_flops_per_step=1e14, hardware_flops_per_step=1.3e14)
    assert full.compute_s == pytest.approx((1.3e14 - attn * 4 / 3) / (100e12 * 0.461) + attn * 4 / 3 / (100e12 * 0.25))
    # eager attention: the same, plus the score matrix through HBM
    eager = estimate_perf(llama7b, layout.with_(attention="eager"), gpu, params_total=N,
                          model_flops_per_step=1e14, hardware_flops_per_step=1e14)
    scores = 32 * 4096**2 * 32  # heads x s^2 x layers, one sequence
    assert eager.compute_s == pytest.approx(p.compute_s + scores * 24 / 1000e9)
    # --mfu sets one efficiency for everything
    fixed = estimate_perf(llama7b, layout, gpu, params_total=N, model_flops_per_step=1e14,
                          hardware_flops_per_step=1e14, efficiency=0.4)
    assert fixed.compute_s == pytest.approx(1e14 / (100e12 * 0.4))


def test_fsdp_under_a_pipeline_gathers_and_reduces_once_a_step(llama7b):
    layout = Layout(gpus=32, gpus_per_node=8, tp=1, pp=4, zero=3, framework="fsdp", grad_accum=8, seq_len=4096)
    p = estimate_perf(llama7b, layout, GPU, params_total=N, model_flops_per_step=8e15,
                      hardware_flops_per_step=8e15, efficiency=0.5)
    shard = N / 4  # this stage's parameters
    # dp 8 with stride 1: the ring stays in the node, 78 GB/s; bf16 gather, fp32 reduce-scatter (FSDP2)
    gather, scatter = 7 / 8 * shard * 2 / 78e9, 7 / 8 * shard * 4 / 78e9
    assert p.dp_comm_s == pytest.approx(gather + scatter)  # not 8 x (2 gathers + 1 scatter)
    assert p.dp_comm_exposed_s == pytest.approx(0.15 * (gather + scatter))  # hidden beside 2.5 s of compute
    deepspeed = estimate_perf(llama7b, layout.with_(framework="deepspeed"), GPU, params_total=N,
                              model_flops_per_step=8e15, hardware_flops_per_step=8e15, efficiency=0.5)
    assert deepspeed.dp_comm_s == pytest.approx(8 * (2 * gather + scatter / 2))  # ZeRO-3: every micro-batch


def test_measured_nccl_bandwidth_sets_tensor_parallel_time(llama7b):
    gpu = dataclasses.replace(GPU, intra_node_busbw_gbps=60.0)
    tp = estimate_perf(llama7b, Layout(gpus=2, tp=2, seq_len=4096), gpu, params_total=N,
                       model_flops_per_step=8e15, hardware_flops_per_step=8e15, efficiency=0.5)
    assert tp.tp_comm_s == pytest.approx(128 * 4096 * 4096 * 2 / 60e9)  # not 0.78 x 100 GB/s
    assert load_gpu("h100-sxm").intra_node_busbw_gbps == 360  # NVIDIA/nccl-tests issue #326
