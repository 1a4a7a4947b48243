"""`trainplan plan`, `models` and `gpus` as a user runs them: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainplan.cli import main

BASE = ["plan", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "8", "--zero", "3"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_json_has_documented_schema(capsys):
    code, out, _ = run(capsys, *BASE, "--tokens", "2T", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["kind"] == "estimate"
    assert doc["parameters"]["total"] == 6_738_415_616
    per_gpu = doc["memory"]["per_gpu"]
    for key in ("weights_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes", "total_bytes"):
        assert per_gpu[key] >= 0
    assert per_gpu["total_bytes"] == sum(v for k, v in per_gpu.items() if k != "total_bytes")
    assert isinstance(doc["fits"], bool)
    assert doc["throughput"]["tokens_per_s"] > 0
    assert doc["time"]["tokens"] == 2e12 and doc["time"]["hours"] > 0
    assert doc["cost"]["usd"] == pytest.approx(doc["time"]["gpu_hours"] * doc["cost"]["price_per_gpu_hour"])


def test_plan_table_labels_numbers_as_estimates(capsys):
    code, out, _ = run(capsys, *BASE)
    assert code == 0
    assert "estimate" in out and "FITS" in out and "GPU-hours" in out


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["plan", "--model", "llama-70b"], "--model"),
        (["plan", "--model", "gpt2", "--gpu", "h100"], "--gpu"),
        (["plan", "--model", "gpt2", "--tp", "5", "--gpus", "5"], "--tp"),
        (["plan", "--model", "gpt2", "--pp", "16", "--gpus", "16"], "--pp"),
        (["plan", "--model", "gpt2", "--gpus", "0"], "--gpus"),
        (["plan", "--model", "gpt2", "--zero", "5"], "--zero"),
        (["plan", "--model", "gpt2", "--gpus", "4", "--micro-batch", "3", "--global-batch", "16"], "--global-batch"),
        (["plan", "--model", "gpt2", "--tokens", "lots"], "--tokens"),
        (["plan", "--model", "gpt2", "--mfu", "1.5"], "--mfu"),
        (["plan", "--model", "gpt2", "--offload", "cpu"], "--offload"),
        (["plan", "--model", "gpt2", "--gpus", "3", "--tp", "2"], "--gpus"),
    ],
)
def test_bad_input_is_one_line_exit_2_naming_the_flag(capsys, argv, flag):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert flag in lines[0] and "Traceback" not in err


def test_unknown_model_suggests_close_names(capsys):
    _, _, err = run(capsys, "plan", "--model", "llama-70b")
    assert "llama-2-70b" in err


def test_bad_model_config_names_the_problem(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "vocab_size": 100, "hidden_size": 100,
                               "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 3}))
    code, _, err = run(capsys, "plan", "--model", str(cfg))
    assert code == 2 and "--model" in err and "does not divide" in err


def test_debug_shows_traceback(capsys):
    with pytest.raises(Exception, match="unknown GPU"):
        main(["--debug", "plan", "--model", "gpt2", "--gpu", "nope"])


def test_recommend_writes_ds_config_of_the_best_layout(tmp_path, capsys):
    path = tmp_path / "ds.json"
    code, out, _ = run(capsys, "plan", "--model", "llama-2-13b", "--gpu", "a100-80gb", "--seq-len", "4096",
                       "--global-batch", "256", "--recommend", "--max-gpus", "32", "--optimize", "cost",
                       "--ds-config", str(path), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    best = doc["top"][0]
    assert best["fits"] and doc["feasible"] >= len(doc["top"]) > 1
    costs = [p["cost"]["usd"] for p in doc["top"]]
    assert costs == sorted(costs)
    ds = json.loads(path.read_text())
    assert ds == doc["ds_config"]
    assert ds["train_batch_size"] == 256 == best["layout"]["global_batch"]
    assert ds["zero_optimization"]["stage"] == best["layout"]["zero"]
    assert ds["train_micro_batch_size_per_gpu"] == best["layout"]["micro_batch"]


def test_models_and_gpus_list_the_catalogs(capsys):
    code, out, _ = run(capsys, "models", "--format", "json")
    names = {m["name"] for m in json.loads(out)}
    assert code == 0 and {"gpt2-xl", "llama-3.1-405b", "mixtral-8x7b", "qwen2.5-72b", "gemma-7b"} <= names
    code, out, _ = run(capsys, "gpus", "--format", "json")
    keys = set(json.loads(out))
    assert code == 0
    for wanted in ("v100", "a10", "l4", "l40s", "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "mi300x"):
        assert any(k == wanted or k.startswith(wanted + "-") for k in keys), wanted


def test_plan_does_not_import_torch_transformers_or_deepspeed():
    code = (
        "import sys; from trainplan.cli import main;"
        "rc = main(['plan', '--model', 'llama-2-70b', '--gpus', '64', '--zero', '3', '--recommend', '--format', 'json']);"
        "heavy = [m for m in ('torch', 'transformers', 'deepspeed', 'optuna', 'plotly') if m in sys.modules];"
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stderr


def test_console_script_entry_point_works():
    proc = subprocess.run([sys.executable, "-m", "trainplan", "plan", "--model", "gpt2", "--format", "json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["parameters"]["total"] == 124_439_808


def test_ds_config_carries_the_plans_own_schedule_and_says_where_each_value_came_from(tmp_path, capsys):
    # 2T tokens / (1024 sequences x 4096 tokens) = 476,837.16 steps, rounded up: the schedule the
    # user launches must end there, not after a default 1000 steps.
    path = tmp_path / "ds_config.json"
    code, out, _ = run(capsys, "plan", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "64", "--zero", "3",
                       "--micro-batch", "4", "--global-batch", "1024", "--seq-len", "4096", "--tokens", "2T",
                       "--ds-config", str(path), "--format", "json")
    assert code == 0
    assert json.loads(out)["time"]["steps"] == 476_838
    ds = json.loads(path.read_text())
    assert ds["scheduler"]["type"] == "WarmupCosineLR"
    assert ds["scheduler"]["params"]["total_num_steps"] == 476_838
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 4_769  # 1% of the steps, rounded up
    assert ds["optimizer"]["params"]["lr"] == 3e-4
    assert ds["train_batch_size"] == 1024 and ds["gradient_accumulation_steps"] == 4  # 1024 / (4 x 64)
    sources = ds["trainplan"]["sources"]
    assert set(sources) == {"total_num_steps", "warmup_num_steps", "lr"}
    assert "--tokens" in sources["total_num_steps"] and "476,838" in sources["total_num_steps"]
    assert "1%" in sources["warmup_num_steps"] and "default" in sources["lr"]


def test_recommend_leads_with_the_recommendation_and_a_requested_layout_that_does_not_fit_is_one_line(capsys):
    code, out, _ = run(capsys, "plan", "--model", "llama-2-13b", "--gpu", "a100-80gb", "--seq-len", "4096",
                       "--global-batch", "256", "--recommend", "--max-gpus", "32")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("Recommended layouts")  # the answer comes first
    requested = [line for line in lines if line.startswith("requested layout")]
    assert len(requested) == 1 and "1 x a100-80gb" in requested[0] and "DOES NOT FIT" in requested[0]
    assert "step time" not in out  # no full table for a layout that cannot run
    # A requested layout that fits keeps its full table, after the recommendation.
    code, out, _ = run(capsys, "plan", "--model", "gpt2", "--gpu", "a100-80gb", "--recommend", "--max-gpus", "2",
                       "--seq-len", "1024")
    assert code == 0 and out.index("Recommended layouts") < out.index("the requested layout") < out.index("step time")


def test_grad_accum_given_with_the_global_batch_must_be_the_one_it_implies(capsys):
    # 8 GPUs x micro-batch 4 = 32 sequences per micro-step: a global batch of 128 implies accumulation 4.
    code, out, _ = run(capsys, *BASE, "--micro-batch", "4", "--global-batch", "128", "--grad-accum", "4", "--format", "json")
    assert code == 0 and json.loads(out)["layout"]["grad_accum"] == 4
    code, _, err = run(capsys, *BASE, "--micro-batch", "4", "--global-batch", "128", "--grad-accum", "3")
    assert code == 2 and err.strip().startswith("trainplan: error: --grad-accum:") and "implies 4" in err


def test_layout_help_is_the_layout_fields_docstrings(capsys):
    from trainplan.cli._help import field_docs
    from trainplan.planner import Layout

    assert main(["plan", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in ("gpus", "tp", "attention"):
        assert field_docs(Layout)[name] in text
