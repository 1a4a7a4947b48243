"""The decision summary and scaling views, computed by the real planner for the sweep's target."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from tests.reports.conftest import build_study

from trainplan.errors import UsageError
from trainplan.planner import Layout, LayoutSpace, load_gpu, load_model, plan, recommend
from trainplan.reports import (
    Target,
    build_plan_report,
    build_report,
    get_compute_info,
    get_gpu_scaling_info,
    get_microbatch_info,
    get_summary_info,
    read_study,
    resolve_target,
)
from trainplan.runners import TrialSpec


@pytest.fixture
def target(study: optuna.Study) -> Target:
    resolved = resolve_target(read_study(study))
    assert isinstance(resolved, Target), resolved
    return resolved


def test_target_is_the_best_trial_on_the_sweep_hardware(target: Target) -> None:
    assert target.gpu.key == "a100-80gb" and target.model.name == "trainplan-tiny"
    assert target.layout.micro_batch == 8 and target.hyperparams.lr == 1e-2  # trial 1's config
    assert target.tokens is None  # no budget named: the planner's compute-optimal tokens


def test_target_gpu_and_tokens_can_be_overridden(study: optuna.Study) -> None:
    record = read_study(study)
    t = resolve_target(record, gpu="h100-sxm", tokens=1e9)
    assert isinstance(t, Target) and t.gpu.key == "h100-sxm" and t.tokens == 1e9
    with pytest.raises(UsageError) as err:
        resolve_target(record, gpu="h100-sxn")
    assert err.value.key == "--gpu" and "h100-sxm" in str(err.value)


def test_no_hardware_and_no_gpu_flag_explains_itself(storage: str) -> None:
    study = build_study(storage)
    study.set_user_attr("sweep", {})
    assert "pass --gpu" in resolve_target(read_study(study))


def test_summary_recommends_launchable_layouts(study: optuna.Study, target: Target) -> None:
    info = get_summary_info(read_study(study), target)
    assert info.best_number == 1 and info.best_metrics["eval_loss"] == pytest.approx(1.8202, abs=1e-4)
    assert info.best_command.startswith("deepspeed --num_gpus 1")
    fastest = info.choices[0]
    # the planner's own ranking for the same inputs, data-parallel only (what the runner launches)
    ranked = recommend(target.model, target.gpu, target.layout, global_batch=8,
                       space=LayoutSpace(tp=(1,), pp=(1,))).ranked
    assert fastest.plan["layout"]["gpus"] == ranked[0].layout.gpus
    if len(info.choices) > 1:
        cheapest = info.choices[1]
        assert cheapest.plan["cost"]["usd"] <= fastest.plan["cost"]["usd"]
        assert cheapest.plan["time"]["hours"] >= fastest.plan["time"]["hours"]
    lay = fastest.plan["layout"]
    assert f"--num_gpus {min(lay['gpus'], lay['gpus_per_node'])}" in fastest.launch_command
    # the spec is one the runner accepts, and its ds_config is the one shown
    spec = TrialSpec.from_dict(fastest.spec).validate()
    assert spec.steps == fastest.plan["time"]["steps"] and spec.layout.gpus == lay["gpus"]
    assert spec.ds_config() == fastest.ds_config
    assert fastest.ds_config["train_batch_size"] == 8  # the sweep's global batch is kept


def test_recommended_files_are_written_beside_the_page(study: optuna.Study, tmp_path: Path) -> None:
    page = build_report(study, tmp_path / "out")
    folder = page.parent / "recommended"
    spec = json.loads((folder / "spec.json").read_text())
    assert (folder / "cmd.txt").read_text().startswith("deepspeed ")
    assert json.loads((folder / "ds_config.json").read_text())["train_batch_size"] == 8
    assert spec["model"] == "trainplan-tiny"
    for fid in ("memory-vs-gpus", "time-cost-vs-gpus", "throughput-vs-microbatch", "loss-vs-compute"):
        assert f'id="fig-{fid}"' in page.read_text()


def test_gpu_scaling_rows_follow_the_planner(target: Target) -> None:
    from dataclasses import replace

    # a 7B model, where sharding matters more than ZeRO's fixed buffers
    target = replace(target, model=load_model("llama-2-7b"), layout=Layout(micro_batch=1, seq_len=4096, grad_accum=8))
    info = get_gpu_scaling_info(target)
    assert info.gpu_memory_bytes == load_gpu("a100-80gb").memory_bytes
    row = {(r["gpus"], r["zero"]): r for r in info.rows}
    assert set(z for _, z in row) == {0, 1, 2, 3}
    assert row[(8, 3)]["memory_bytes"] < row[(8, 0)]["memory_bytes"]  # ZeRO-3 shards the model states
    p = plan(target.model, target.layout.with_(gpus=8, zero=3, grad_accum=1), target.gpu)
    assert row[(8, 3)]["memory_bytes"] == p.memory.total and row[(8, 3)]["hours"] == pytest.approx(p.hours)


def test_microbatch_and_compute_views(study: optuna.Study, target: Target) -> None:
    mb = get_microbatch_info(target)
    memory = [r["memory_bytes"] for r in mb.rows]
    assert [r["micro_batch"] for r in mb.rows][:3] == [1, 2, 4] and memory == sorted(memory)
    compute = get_compute_info(read_study(study), target)
    per_token = plan(target.model, target.layout, target.gpu).flops.model_per_token
    assert compute.flops_per_token == pytest.approx(per_token)
    row = next(r for r in compute.rows if r["trial"] == 0)
    assert row["compute_flops"] == pytest.approx(40 * 2048 * per_token)
    assert {r["trial"] for r in compute.rows} == {0, 1, 2, 6, 7}  # a loss and tokens to place them


def test_plan_report_page(tmp_path: Path) -> None:
    model, gpu = load_model("llama-2-7b"), load_gpu("a100-80gb")
    layout = Layout(gpus=8, zero=3, micro_batch=2, grad_accum=8, seq_len=4096)
    p = plan(model, layout, gpu, tokens=2e12)
    rec = recommend(model, gpu, layout, global_batch=layout.global_batch, tokens=2e12)
    page = build_plan_report(p, rec, tmp_path / "plan.html")
    text = page.read_text()
    assert page == tmp_path / "plan.html" and text.count("* plotly.js") == 1
    for fid in ("memory-breakdown", "memory-vs-gpus", "time-cost-vs-gpus", "throughput-vs-microbatch"):
        assert f'id="fig-{fid}"' in text
    breakdown = json.loads((tmp_path / "report_data" / "memory-breakdown.json").read_text())
    assert sum(r["bytes"] for r in breakdown["rows"]) == p.memory.total
    data = json.loads((tmp_path / "report_data" / "plan.json").read_text())
    assert data["layout"]["gpus"] == 8 and data["time"]["tokens"] == 2e12
    assert json.loads((tmp_path / "recommended" / "spec.json").read_text())["model"] == "llama-2-7b"
    assert build_plan_report(p, None, tmp_path / "again.html").read_text().count("pass --recommend") == 1


def test_memory_axis_spans_the_data_not_1e77(target: Target) -> None:
    # The default sweep's tiny model: ~1 GiB per GPU against an 80 GiB A100. plotly.js reads an
    # annotation on a log axis in log10 units, so an add_hline label at 80 GiB once stretched this
    # axis to 1e80; the range is now explicit and the GPU's memory is a trace.
    from trainplan.reports import get_memory_plot

    info = get_gpu_scaling_info(target)
    fig = get_memory_plot(info)
    capacity = info.gpu_memory_bytes / 2**30
    low, high = fig.layout.yaxis.range
    ys = [y for trace in fig.data for y in trace.y]
    assert max(ys) == pytest.approx(capacity) and min(ys) > 0
    assert 10**high == pytest.approx(capacity * 1.25) and 10**low == pytest.approx(min(ys) / 1.25)
    assert not fig.layout.annotations and not fig.layout.shapes


def test_microbatch_view_keeps_the_global_batch_and_says_when_it_is_flat(target: Target) -> None:
    from dataclasses import replace

    from trainplan.reports import get_microbatch_plot

    tiny = get_microbatch_info(target)
    assert tiny.rows and all(r["global_batch"] == target.layout.global_batch for r in tiny.rows)
    assert tiny.flat  # one GPU: nothing per micro-batch to amortise, so the planner predicts one speed
    fig = get_microbatch_plot(tiny)
    assert "same tokens/s for every micro-batch" in fig.layout.title.text
    assert fig.layout.yaxis.range[0] == 0  # a flat line drawn as flat, not zoomed onto rounding noise
    # ZeRO-3 on 8 GPUs gathers parameters every micro-batch: fewer, larger ones are faster.
    big = replace(target, model=load_model("llama-2-7b"),
                  layout=Layout(gpus=8, zero=3, micro_batch=1, grad_accum=16, seq_len=4096))
    info = get_microbatch_info(big)
    speeds = [r["tokens_per_s"] for r in info.rows]
    assert [r["micro_batch"] for r in info.rows] == [1, 2, 4, 8, 16]  # the divisors of 16 per GPU
    assert speeds == sorted(speeds) and not info.flat
    assert "same tokens/s" not in get_microbatch_plot(info).layout.title.text


def test_a_cpu_trial_reports_rank_hours_not_gpu_hours(study: optuna.Study, target: Target) -> None:
    record = read_study(study)
    assert "gpu_hours" in get_summary_info(record, target).best_metrics  # no result.json: as recorded
    (Path(record.best.trial_dir) / "result.json").write_text(json.dumps({"status": "completed", "device": {"kind": "cpu", "name": "host CPU"}}))
    metrics = get_summary_info(record, target).best_metrics
    assert "gpu_hours" not in metrics and metrics["cpu_rank_hours"] == record.best.gpu_hours
