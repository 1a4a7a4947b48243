"""Model-state bytes of ``estimate_memory`` against what real DeepSpeed engines hold, per rank.

``memory_probe.py`` builds engines from ``deepspeed_config(layout)`` for ZeRO 0-3 in fp32 and bf16
under the ``deepspeed`` launcher (CPU, gloo), once at world size 1 and once at 2 (all eight
configurations in one launch each), and counts the unique storages of weights, gradients,
optimizer moments and master copies. The planner must land within 1% of the largest of three
snapshots (before the ZeRO-1/2 reduction, after backward, inside the optimizer step). The unit tests at the end check the
branches no CPU engine reaches (offload, tensor and pipeline parallelism).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._proc import ONE_THREAD, run_groups

from trainplan.planner import Layout, from_hf_config, load_model
from trainplan.runners import free_port, ops_compiled
from trainplan.planner._memory import (_model_states, _phase_gradients, activation_bytes, estimate_memory,
                                       local_parameters)
from trainplan.planner._params import count_parameters

# Every weight matrix above stage3_param_persistence_threshold (1e5 elements), as in real models,
# so only norms stay whole under ZeRO-3; ~6.7M parameters so the buckets and padding are real.
PROBE_MODEL = {"model_type": "llama", "vocab_size": 4096, "hidden_size": 384, "intermediate_size": 1024,
               "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 6}
CASES = [(zero, prec) for zero in (0, 1, 2, 3) for prec in ("fp32", "bf16")]
STATES = ("weights", "gradients", "optimizer", "master_weights")
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "memory_vs_deepspeed_cpu.md"


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int, str], list[dict[str, Any]]]:
    """(world, zero, precision) -> the per-rank probe records."""
    out: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    repo = Path(__file__).resolve().parents[2]
    if not ops_compiled():  # `make setup` builds them; a bare checkout builds them here
        print("first DeepSpeed run on this machine: JIT-compiling its C++ ops (~100 s)", file=sys.stderr)
    folders = {world: tmp_path_factory.mktemp(f"probe{world}") for world in (1, 2)}
    # Both launches at once, one thread per rank: their start-ups overlap, and each engine's
    # bytes are its own.
    cmds = [[sys.executable, "-m", "deepspeed.launcher.runner", "--master_port", str(free_port()),
             "--num_gpus", str(world), str(repo / "tests" / "planner" / "memory_probe.py"),
             "--out", str(folder), "--model", json.dumps(PROBE_MODEL),
             "--cases", ",".join(f"{z}:{p}" for z, p in CASES)] for world, folder in folders.items()]
    for proc in run_groups(cmds, cwd=repo, timeout=900, env={**os.environ, **ONE_THREAD}):
        assert proc.returncode == 0, proc.stderr[-4000:]
    for world, folder in folders.items():
        for zero, prec in CASES:
            out[world, zero, prec] = [json.loads((folder / f"z{zero}_{prec}_r{r}.json").read_text())
                                      for r in range(world)]
    return out


def _measured(record: dict[str, Any]) -> int:
    return max(sum(record[when]["bytes"][k] for k in STATES) for when in ("before_reduce", "backward", "step"))


def _estimated(world: int, zero: int, prec: str) -> int:
    # The table's states (what the snapshots' storages hold); the estimate's peak phase adds the
    # optimizer step's transient copies, which no snapshot sees (measured on an H100 instead:
    # tests/planner/test_gpu_measured.py).
    layout = Layout(gpus=world, zero=zero, precision=prec, micro_batch=1, seq_len=32)
    n, vectors = local_parameters(count_parameters(from_hf_config(PROBE_MODEL)), layout)
    return sum(_model_states(n, vectors, layout)[k] for k in STATES)


@pytest.mark.slow
def test_model_states_match_real_engines_within_one_percent(probed):
    rows, failures = [], []
    for (world, zero, prec), ranks in sorted(probed.items()):
        est = _estimated(world, zero, prec)
        for rec in ranks:
            got = _measured(rec)
            err = est / got - 1
            rows.append(f"| ZeRO-{zero} {prec} world {world} rank {rec['rank']} "
                        f"| {rec['optimizer']} | {est:,} | {got:,} | {err:+.2%} |")
            if abs(err) > 0.01:
                failures.append(rows[-1])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# Model-state bytes per rank: planner vs a real DeepSpeed 0.19 engine (CPU, gloo)\n\n"
        f"Model: {json.dumps(PROBE_MODEL)}; config from `deepspeed_config(layout)`.\n"
        "Measured: unique storages of weights + gradients + optimizer moments + master copy, the largest\n"
        "of the snapshots before the ZeRO-1/2 gradient reduction, after backward and inside the optimizer step (tests/planner/memory_probe.py).\n"
        "Command: `pytest tests/planner/test_memory_states.py -m slow`\n\n"
        "| case | DeepSpeed optimizer | estimated bytes | measured bytes | error |\n|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_zero3_reduce_bucket_is_allocated_whole(probed):
    # The planner's comm_buffers for ZeRO-3 include the full reduce bucket, however small the model.
    for prec, e in (("fp32", 4), ("bf16", 2)):
        rec = probed[2, 3, prec][0]
        buckets = [nbytes for path, nbytes in rec["step"]["buffers"] if "ipg" in path]
        assert buckets == [int(5e8) * e]


# Branch checks: what no CPU engine exercises -----------------------------------------------------

def _mem(**layout: Any):
    return estimate_memory(load_model("llama-2-7b"), Layout(seq_len=2048, **layout))


def test_cpu_offload_moves_optimizer_and_master_to_the_host():
    on_gpu, offloaded = _mem(gpus=8, zero=2), _mem(gpus=8, zero=2, offload="cpu")
    assert offloaded.optimizer == 0 and offloaded.master_weights == 0
    assert offloaded.cpu_bytes >= on_gpu.optimizer + on_gpu.master_weights
    assert offloaded.total < on_gpu.total


def test_nvme_offload_uses_nvme_and_pinned_host_buffers():
    mem = _mem(gpus=8, zero=3, offload="nvme")
    assert mem.nvme_bytes > 0 and mem.cpu_bytes > 0 and mem.optimizer == 0


def test_tensor_parallelism_halves_block_weights():
    one, two = _mem(gpus=2, zero=0), _mem(gpus=2, zero=0, tp=2)
    # Everything but the norms is split (blocks, vocab-parallel embedding and head).
    assert two.weights == pytest.approx(one.weights / 2, rel=0.01)
    act = (activation_bytes(load_model("llama-2-7b"), Layout(gpus=2, tp=tp, seq_len=2048)) for tp in (1, 2))
    assert next(act).forward > next(act).forward


def test_pipeline_stages_hold_fewer_layers_but_more_micro_batches():
    one, four = _mem(gpus=4, zero=0), _mem(gpus=4, zero=0, pp=4)
    assert four.weights < one.weights / 3
    # 8 of 32 layers, but 4 micro-batches in flight on the first stage (1F1B).
    # (pp = 1 peaks at the optimizer step, so its activations are taken from activation_bytes.)
    assert four.activations == pytest.approx(activation_bytes(load_model("llama-2-7b"), Layout(gpus=4, seq_len=2048)).forward,
                                             rel=0.05)


def test_zero3_divides_weights_by_data_parallel_degree():
    w1, w8 = _mem(gpus=1, zero=3).weights, _mem(gpus=8, zero=3).weights
    assert w8 == pytest.approx(w1 / 8, rel=0.01)


def test_checkpointing_trades_activations_for_recompute():
    none, sel, full = (activation_bytes(load_model("llama-2-7b"), Layout(checkpointing=c, attention="eager", seq_len=2048))
                       for c in ("none", "selective", "full"))
    assert full.forward < sel.forward < none.forward


def test_total_and_allocated_are_consistent():
    mem = _mem(gpus=8, zero=1)
    assert mem.total == sum(mem.breakdown().values())
    assert mem.allocated == mem.total - mem.overhead


# Other frameworks' model states and where the peak falls -------------------------------------------

def test_fsdp2_full_shard_holds_16_bytes_per_parameter_over_nd():
    # Sharded fp32 params (the master), fp32 sharded grads, two fp32 moments: 16/Nd, no master copy.
    mem = _mem(gpus=8, zero=3, framework="fsdp")
    total = 6_738_415_616
    assert mem.master_weights == 0
    assert mem.weights == mem.gradients == mem.optimizer // 2 == 4 * -(-total // 8)
    # Gathered lp parameters of two blocks and one block's lp + fp32 unsharded gradients in flight.
    block = 202_383_360
    assert mem.comm_buffers == 2 * block * 2 + block * (2 + 4)


def test_megatron_holds_18_bytes_or_6_plus_12_over_nd_with_the_distributed_optimizer():
    total = 6_738_415_616
    plain, dist = _mem(gpus=8, zero=0, framework="megatron"), _mem(gpus=8, zero=1, framework="megatron")
    assert plain.model_states == 18 * total
    assert dist.model_states == 6 * total + 12 * -(-total // 8)
    assert dist.comm_buffers == 0  # buckets are views into main_grad


def test_peak_is_the_larger_of_loss_and_rebuilt_block_not_their_sum():
    mem = _mem(gpus=8, zero=3, checkpointing="full", micro_batch=4)
    act = activation_bytes(load_model("llama-2-7b"), Layout(gpus=8, zero=3, checkpointing="full", micro_batch=4, seq_len=2048))
    logits = mem.logits_peak
    at_loss, in_backward = act.forward + logits, act.forward + act.recompute
    assert mem.activations + mem.logits == max(at_loss, in_backward) < act.total + logits
    assert mem.allocated == mem.model_states + mem.comm_buffers + max(at_loss, in_backward)


def test_pipeline_peak_is_the_worst_stage_not_first_stage_activations_plus_last_stage_logits():
    mem = _mem(gpus=4, zero=0, pp=4, grad_accum=8)
    act = activation_bytes(load_model("llama-2-7b"), Layout(gpus=4, pp=4, grad_accum=8, seq_len=2048))
    first, last = act.forward, act.layers * act.per_layer + act.other + act.head + mem.logits_peak
    assert mem.activations + mem.logits == max(first, last) == first  # 4 micro-batches in flight
    assert mem.peak_phase.startswith("first stage")


def test_reserved_and_nvidia_smi_sit_above_max_allocated():
    mem = _mem(gpus=8, zero=3)
    assert mem.allocated < mem.reserved < mem.total == sum(mem.breakdown().values())
    assert mem.reserved == mem.allocated + int(0.10 * mem.allocated)  # FRAGMENTATION
    assert mem.total - mem.reserved == 1 << 30  # CUDA_CONTEXT_BYTES


def test_bf16_pure_holds_8_bytes_per_parameter_without_a_master_copy():
    # torchtune's default: bf16 weights (2), gradients (2) and AdamW moments (2 x 2), no fp32 master
    total = 6_738_415_616
    mem = _mem(gpus=1, zero=0, precision="bf16-pure", framework="fsdp")
    assert (mem.weights, mem.gradients, mem.optimizer, mem.master_weights) == (2 * total, 2 * total, 4 * total, 0)


def test_context_parallelism_splits_activations_and_shards_states_over_dp_times_cp():
    one = estimate_memory(load_model("llama-2-7b"), Layout(gpus=8, zero=3, framework="fsdp", seq_len=8192))
    cp = estimate_memory(load_model("llama-2-7b"), Layout(gpus=8, zero=3, framework="fsdp", seq_len=8192, cp=2))
    act_one = activation_bytes(load_model("llama-2-7b"), Layout(gpus=8, framework="fsdp", seq_len=8192))
    act_cp = activation_bytes(load_model("llama-2-7b"), Layout(gpus=8, framework="fsdp", seq_len=8192, cp=2))
    assert act_cp.per_layer == act_one.per_layer // 2
    assert cp.weights == one.weights  # FSDP shards over dp (4) x cp (2) = 8 either way
    assert cp.logits_peak == one.logits_peak // 2


def test_fsdp_cpu_offload_keeps_only_gathered_blocks_and_megatron_deepspeed_keeps_zero_states():
    off = _mem(gpus=8, zero=3, framework="fsdp", offload="cpu")
    assert off.weights == off.gradients == off.optimizer == 0 and off.cpu_bytes == 16 * -(-6_738_415_616 // 8)
    mds, ds = _mem(gpus=8, zero=3, framework="megatron-deepspeed"), _mem(gpus=8, zero=3)
    # Same buffers; the deepspeed estimate is phase by phase (its loss-phase gradients are the kept
    # lp partition), the megatron-deepspeed one sums the table's states.
    assert (mds.weights, mds.optimizer, mds.master_weights, mds.comm_buffers) == \
        (ds.weights, ds.optimizer, ds.master_weights, ds.comm_buffers)
    assert mds.gradients == 6 * 842_301_952 and ds.gradients == 2 * 842_301_952 and ds.peak_phase == "loss"
    assert mds.logits_peak < ds.logits_peak  # vocab-parallel cross-entropy: 4 + e bytes, not e + 12


def test_zero3_fp32_gradients_exist_for_one_optimizer_sub_group_at_a_time():
    # Llama-2-70B (68,976,648,192 parameters) over 8 ranks: 8,622,081,024 a partition. stage3.py makes
    # the fp32 gradient one sub-group (sub_group_size 1e9) at a time: 2 x 8,622,081,024 + 4 x 1e9.
    big = estimate_memory(load_model("llama-2-70b"), Layout(gpus=8, zero=3, seq_len=2048, framework="megatron-deepspeed"))
    assert big.gradients == 2 * 8_622_081_024 + 4 * 1_000_000_000 == 21_244_162_048
    # Phase by phase (deepspeed): the step also holds the sub-group's concatenated lp copy (e) while
    # casting it to fp32 (stage3.py _prepare_fp32_grad_for_sub_group).
    assert _phase_gradients(68_976_648_192, Layout(gpus=8, zero=3))["step"] == 2 * 8_622_081_024 + 6 * 1_000_000_000
    # Llama-2-7B (6,738,415,616) over 8: 842,301,952 a partition < 1e9, one sub-group, (e + 4) / Nd as measured
    assert _mem(gpus=8, zero=3, framework="megatron-deepspeed").gradients == 6 * 842_301_952


def test_allocator_cache_gives_way_near_the_card_limit():
    # CUDACachingAllocator frees cached blocks and retries before failing an allocation: with a
    # capacity, reserved = min(allocated x 1.05, capacity - context); fits follows allocated + context.
    free = _mem(gpus=8, zero=3)
    tight = estimate_memory(load_model("llama-2-7b"), Layout(gpus=8, zero=3, seq_len=2048),
                            capacity_bytes=free.allocated + (1 << 30) + (1 << 28))
    assert tight.allocated == free.allocated
    assert tight.reserved == free.allocated + (1 << 28) < free.reserved
    roomy = estimate_memory(load_model("llama-2-7b"), Layout(gpus=8, zero=3, seq_len=2048), capacity_bytes=1 << 40)
    assert roomy.total == free.total
    over = estimate_memory(load_model("llama-2-7b"), Layout(gpus=8, zero=3, seq_len=2048),
                           capacity_bytes=free.allocated)
    assert over.total == free.allocated + (1 << 30)  # nothing cached: the context alone on top


def test_plan_fits_when_live_tensors_and_context_fit():
    from trainplan.planner import load_gpu, plan
    # Qwen2.5-14B-like ZeRO-2 runs at ~76 GiB allocated on 80 GB cards (ms-swift): the plan must fit
    # whenever allocated + CUDA context <= usable, whatever the unconstrained fragmentation would be.
    gpu = load_gpu("a100-80gb")
    for mb in (1, 2, 4, 8):
        p = plan(load_model("llama-2-7b"), Layout(gpus=8, zero=2, micro_batch=mb, seq_len=4096), gpu, tokens=1e9)
        assert p.fits == (p.memory.allocated + (1 << 30) <= p.usable_bytes)
