"""TrialSpec: the resolved trial a user, the CLI and the search hand to the runner (no launch)."""

from __future__ import annotations

import json

import pytest

from trainplan.errors import UsageError
from trainplan.runners import DEFAULT_LAYOUT, TrialSpec


def test_json_round_trip_keeps_every_value(tmp_path):
    spec = TrialSpec(steps=40, seed=3, dropout=0.1, layout={"gpus": 2, "zero": 2, "micro_batch": 4},
                     hyperparams={"lr": 1e-3, "betas": [0.8, 0.99], "schedule": "linear"})
    again = TrialSpec.from_json(spec.to_json(tmp_path / "spec.json"))
    assert again == spec
    assert again.layout.zero == 2 and again.hyperparams.betas == (0.8, 0.99)


def test_partial_dicts_merge_onto_the_default_task():
    spec = TrialSpec.from_dict({"layout": {"zero": 1}, "hyperparams": {"lr": 1e-2}, "steps": 30})
    assert spec.layout.seq_len == DEFAULT_LAYOUT.seq_len and spec.layout.zero == 1
    assert spec.hyperparams.lr == 1e-2
    assert spec.hyperparams.total_steps == 30  # the schedule's horizon is the run's length


@pytest.mark.parametrize(("data", "key"), [
    ({"stepz": 3}, "spec.stepz"),
    ({"layout": {"zer": 1}}, "layout.zer"),
    ({"hyperparams": {"learning_rate": 1}}, "hyperparams.learning_rate"),
])
def test_unknown_keys_are_named(data, key):
    with pytest.raises(UsageError) as err:
        TrialSpec.from_dict(data)
    assert err.value.key == key


@pytest.mark.parametrize(("changes", "flag"), [
    ({"steps": 0}, "--steps"),
    ({"dropout": 1.0}, "--dropout"),
    ({"timeout_s": -1.0}, "--timeout"),
    ({"layout": {"zero": 4}}, "--zero"),
    ({"layout": {"micro_batch": 0}}, "--micro-batch"),
    ({"hyperparams": {"lr": 0.0}}, "--lr"),
    ({"model": "no-such-model"}, "--model"),
    ({"gpu": "no-such-gpu"}, "--estimate-gpu"),
    ({"layout": {"tp": 2, "gpus": 2}}, "--tp"),
])
def test_validate_names_the_flag(changes, flag):
    with pytest.raises(UsageError) as err:
        TrialSpec.from_dict(changes).validate()
    assert err.value.key == flag


def test_ds_config_follows_layout_and_hyperparams():
    spec = TrialSpec(steps=20, layout={"gpus": 2, "micro_batch": 4, "grad_accum": 3, "zero": 3},
                     hyperparams={"lr": 2e-3, "warmup_steps": 0, "grad_clip": 0.5})
    cfg = spec.ds_config()
    assert cfg["train_batch_size"] == 24 and cfg["gradient_accumulation_steps"] == 3
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["gradient_clipping"] == 0.5
    assert cfg["optimizer"]["params"]["lr"] == 2e-3
    sched = cfg["scheduler"]["params"]
    # DeepSpeed rejects warmup_num_steps=0 and would warm up on a log curve by default.
    assert sched["warmup_num_steps"] == 1 and sched["warmup_type"] == "linear"
    assert sched["total_num_steps"] == 20
    json.dumps(cfg)


def test_a_hand_edited_ds_config_applies_whole():
    spec = TrialSpec(steps=20, hyperparams={"lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 2})
    edited = spec.ds_config()
    edited["optimizer"]["params"].update(lr=1e-2, weight_decay=0.37, betas=[0.85, 0.97], eps=1e-6)
    edited["gradient_clipping"] = 0.5
    out = spec.with_ds_config(edited)
    hp = out.hyperparams
    assert (hp.lr, hp.weight_decay, hp.betas, hp.eps, hp.grad_clip) == (1e-2, 0.37, (0.85, 0.97), 1e-6, 0.5)
    assert out.ds_config() == edited  # nothing of the file is lost or left to spec.json
    assert spec.with_ds_config(spec.ds_config()) == spec  # an untouched file changes nothing


@pytest.mark.parametrize(("edit", "key"), [
    # WarmupDecayLR's peak is the scheduler's warmup_max_lr: an optimizer lr alone would be half applied.
    (lambda c: c["optimizer"]["params"].update(lr=1e-2), "ds_config.json:scheduler.params.warmup_max_lr"),
    (lambda c: c["optimizer"].update(type="SGD"), "ds_config.json:optimizer.type"),
    (lambda c: c["optimizer"]["params"].update(amsgrad=True), "ds_config.json:optimizer.params.amsgrad"),
    (lambda c: c["scheduler"]["params"].update(total_num_steps=50), "ds_config.json:scheduler.params.total_num_steps"),
    (lambda c: c.update(train_batch_size=64), "ds_config.json:train_batch_size"),
    (lambda c: c["zero_optimization"].update(stage=2), "ds_config.json:zero_optimization.stage"),
    (lambda c: c.update(bf16={"enabled": True}), "ds_config.json:bf16.enabled"),
])
def test_a_hand_edit_that_cannot_apply_whole_is_refused_naming_the_key(edit, key):
    spec = TrialSpec(steps=20, hyperparams={"schedule": "linear"})
    config = spec.ds_config()
    edit(config)
    with pytest.raises(UsageError) as err:
        spec.with_ds_config(config)
    assert err.value.key == key


@pytest.mark.parametrize(("layout", "key"), [
    ({"precision": "bf16-pure"}, "layout.precision"),
    ({"checkpointing": "selective"}, "layout.checkpointing"),
    ({"framework": "fsdp"}, "layout.framework"),
    ({"loss": "chunked"}, "layout.loss"),
])
def test_layouts_the_planner_describes_but_the_runner_cannot_train_are_refused(layout, key):
    # the planner models these stacks; a trial would silently train something else
    with pytest.raises(UsageError) as err:
        TrialSpec.from_dict({"layout": layout}).validate()
    assert err.value.key == key


def test_precedence_is_command_line_then_spec_file_then_defaults(tmp_path):
    from trainplan.runners._spec import resolve_spec

    file = tmp_path / "trial.json"
    file.write_text(json.dumps({"steps": 50, "layout": {"micro_batch": 8}, "hyperparams": {"betas": [0.8, 0.9]}}))
    spec = resolve_spec({"steps": 60, "beta2": 0.99, "lr": None}, file, gpu=False)
    assert spec.steps == 60                                  # command line over the file
    assert spec.layout.micro_batch == 8                      # the file over the defaults
    assert spec.hyperparams.betas == (0.8, 0.99)             # beta1 from the file, beta2 from the command line
    assert spec.layout.seq_len == DEFAULT_LAYOUT.seq_len     # default
    assert spec.hyperparams.lr == TrialSpec().hyperparams.lr  # None means not given


def test_unstated_precision_follows_the_device(tmp_path):
    from trainplan.runners._spec import resolve_spec

    assert resolve_spec({}, gpu=True).layout.precision == "bf16"
    assert resolve_spec({}, gpu=False).layout.precision == "fp32"
    file = tmp_path / "trial.json"
    file.write_text(json.dumps({"layout": {"precision": "fp32"}}))
    assert resolve_spec({}, file, gpu=True).layout.precision == "fp32"  # the file states it
    with pytest.raises(UsageError, match="fp16 needs a GPU"):
        resolve_spec({"precision": "fp16"}, gpu=False)

def test_global_batch_with_grad_accum_follows_the_plan_rule(tmp_path):
    from trainplan.runners._spec import resolve_spec

    # One rule for plan and run (Layout.with_global_batch): an agreeing pair is accepted...
    assert resolve_spec({"global_batch": 16, "grad_accum": 1}, gpu=False).layout.grad_accum == 1
    assert resolve_spec({"global_batch": 64, "grad_accum": 4}, gpu=False).layout.grad_accum == 4
    # ...a disagreeing one refused, naming both flags and what the global batch implies.
    with pytest.raises(UsageError, match=r"2 disagrees with --global-batch 16 \(which implies 1\)") as err:
        resolve_spec({"global_batch": 16, "grad_accum": 2}, gpu=False)
    assert err.value.key == "--grad-accum"
    # A spec file's accumulation is overridden by --global-batch (command line > file).
    file = tmp_path / "trial.json"
    file.write_text(json.dumps({"layout": {"grad_accum": 7, "micro_batch": 8}}))
    assert resolve_spec({"global_batch": 32}, file, gpu=False).layout.grad_accum == 4
    # A spec file's micro-batch of the wrong type is named before the rule multiplies it.
    file.write_text(json.dumps({"layout": {"micro_batch": "4"}}))
    with pytest.raises(UsageError) as err:
        resolve_spec({"global_batch": 16}, file, gpu=False)
    assert err.value.key == "--micro-batch"
