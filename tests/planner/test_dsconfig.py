"""The DeepSpeed config (planner/_dsconfig.py): what each layout and schedule writes, reading a
config back, and the config of a planned run."""

from __future__ import annotations

import pytest

from trainplan.errors import UsageError
from trainplan.planner import (
    REDUCE_BUCKET_SIZE, Hyperparams, Layout, deepspeed_config, hyperparams_from_deepspeed_config, load_gpu,
    load_model, plan, plan_deepspeed_config,
)


def test_zero3_cpu_offload_bf16():
    layout = Layout(gpus=8, micro_batch=4, grad_accum=2, zero=3, offload="cpu", precision="bf16")
    cfg = deepspeed_config(layout, Hyperparams(lr=1e-3, warmup_steps=0, total_steps=100))
    assert (cfg["train_batch_size"], cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"]) == (64, 4, 2)
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 3 and zero["reduce_bucket_size"] == REDUCE_BUCKET_SIZE == 500_000_000
    assert zero["stage3_prefetch_bucket_size"] == 50_000_000 and zero["stage3_param_persistence_threshold"] == 100_000
    assert zero["offload_optimizer"] == zero["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert cfg["bf16"] == {"enabled": True} and "fp16" not in cfg
    assert cfg["scheduler"] == {"type": "WarmupCosineLR", "params": {
        "total_num_steps": 100, "warmup_num_steps": 1,  # DeepSpeed refuses 0 warm-up steps
        "warmup_min_ratio": 0.0, "cos_min_ratio": 0.1, "warmup_type": "linear"}}
    assert cfg["optimizer"]["params"] == {"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}


def test_zero0_fp16_and_other_optimizers():
    cfg = deepspeed_config(Layout(precision="fp16"))
    assert cfg["zero_optimization"] == {"stage": 0}
    assert cfg["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    assert "overlap_comm" not in cfg["zero_optimization"]
    assert deepspeed_config(Layout(zero=2))["zero_optimization"]["overlap_comm"] is True
    sgd = deepspeed_config(Layout(optimizer="sgd"))
    assert "optimizer" not in sgd and "scheduler" not in sgd  # passed as objects to deepspeed.initialize
    nvme = deepspeed_config(Layout(zero=3, offload="nvme"))["zero_optimization"]
    assert nvme["offload_optimizer"]["nvme_path"] == "/local_nvme"


@pytest.mark.parametrize(("schedule", "kind", "peak_key"), [
    ("linear", "WarmupDecayLR", "warmup_max_lr"), ("constant", "WarmupLR", "warmup_max_lr"),
    ("cosine", "WarmupCosineLR", None),
])
def test_schedules_and_reading_them_back(schedule, kind, peak_key):
    hp = Hyperparams(lr=2e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, warmup_steps=7, schedule=schedule,
                     total_steps=70, grad_clip=0.5, min_lr_ratio=0.2 if schedule == "cosine" else 0.1)
    cfg = deepspeed_config(Layout(), hp)
    assert cfg["scheduler"]["type"] == kind and cfg["gradient_clipping"] == 0.5
    if peak_key:
        assert cfg["scheduler"]["params"][peak_key] == 2e-3
    # Read back exactly; WarmupLR names no horizon, so that one comes from the spec (``like``).
    assert hyperparams_from_deepspeed_config(cfg, Hyperparams(total_steps=70)) == hp


def test_reading_back_refuses_what_it_cannot_express():
    cfg = deepspeed_config(Layout(), Hyperparams(schedule="cosine"))
    cfg["scheduler"]["type"] = "OneCycle"
    with pytest.raises(UsageError) as err:
        hyperparams_from_deepspeed_config(cfg, Hyperparams(), where="x.json")
    assert err.value.key == "x.json:scheduler.type"
    cfg = deepspeed_config(Layout(), Hyperparams())
    cfg["optimizer"]["params"]["weight_decay"] = -1.0
    with pytest.raises(UsageError) as err:
        hyperparams_from_deepspeed_config(cfg, Hyperparams())
    assert err.value.key == "ds_config.json:weight-decay"


@pytest.mark.parametrize(("changes", "flag"), [
    ({"lr": 0}, "--lr"), ({"betas": (0.9, 1.0)}, "--beta2"), ({"weight_decay": -0.1}, "--weight-decay"),
    ({"total_steps": 0}, "--steps"), ({"warmup_steps": 11, "total_steps": 10}, "--warmup-steps"),
    ({"schedule": "step"}, "--schedule"), ({"grad_clip": -1}, "--grad-clip"), ({"min_lr_ratio": 2}, "--min-lr-ratio"),
])
def test_hyperparams_validation_names_the_flag(changes, flag):
    with pytest.raises(UsageError) as err:
        Hyperparams(**changes).validate()
    assert err.value.key == flag


def test_a_planned_run_gets_its_own_steps_warmup_and_lr():
    layout = Layout(gpus=8, micro_batch=4, grad_accum=8, seq_len=4096)  # 256 x 4096 = 1,048,576 tokens/step
    p = plan(load_model("llama-2-7b"), layout, load_gpu("a100-80gb"), tokens=1e9)
    assert p.steps == 954  # ceil(1e9 / 1,048,576 = 953.67)
    cfg = plan_deepspeed_config(p)
    assert cfg["scheduler"]["params"]["total_num_steps"] == 954
    assert cfg["scheduler"]["params"]["warmup_num_steps"] == 10  # ceil(1% of 954)
    assert cfg["optimizer"]["params"]["lr"] == Hyperparams().lr
    assert "--tokens" in cfg["trainplan"]["sources"]["total_num_steps"]
    given = plan_deepspeed_config(p, Hyperparams(lr=1e-4), sources={"lr": "--lr"})
    assert given["optimizer"]["params"]["lr"] == 1e-4 and given["trainplan"]["sources"]["lr"] == "--lr"
    compute_optimal = plan(load_model("gpt2"), Layout(seq_len=1024), load_gpu("a100-80gb"))
    assert "compute-optimal" in plan_deepspeed_config(compute_optimal)["trainplan"]["sources"]["total_num_steps"]
