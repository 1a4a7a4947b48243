"""``trainplan run`` without launching: flag precedence, the trial folder, one-line errors."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from trainplan.cli import main
from trainplan.runners import TrialSpec, ops_compiled
from trainplan.runners._device import gpu_present


def _dry_run(capsys, *args: str) -> dict:
    assert main(["run", "--dry-run", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_dry_run_writes_a_trial_folder_runnable_by_hand(tmp_path, capsys):
    out = _dry_run(capsys, "--out", str(tmp_path / "t"), "--gpus", "2", "--zero", "2", "--steps", "7")
    folder = Path(out["trial_dir"])
    assert {p.name for p in folder.iterdir()} == {"spec.json", "ds_config.json", "cmd.txt"}
    cmd = shlex.split((folder / "cmd.txt").read_text())
    assert cmd == out["command"]
    assert Path(cmd[0]).name == "deepspeed" and cmd[cmd.index("--num_gpus") + 1] == "2"
    assert cmd[cmd.index("--module") + 1] == "trainplan.runners.train"
    assert 0 < int(cmd[cmd.index("--master_port") + 1]) < 65536
    assert json.loads((folder / "ds_config.json").read_text())["zero_optimization"]["stage"] == 2
    spec = TrialSpec.from_json(folder / "spec.json")
    assert spec.steps == 7 and spec.layout.gpus == 2
    assert spec.layout.precision == ("bf16" if gpu_present() else "fp32")


def test_flags_override_the_spec_file_which_overrides_defaults(tmp_path, capsys):
    file = tmp_path / "trial.json"
    file.write_text(json.dumps({"steps": 50, "seed": 4, "layout": {"micro_batch": 8},
                                "hyperparams": {"lr": 1e-2, "weight_decay": 0.0}}))
    out = _dry_run(capsys, "--spec", str(file), "--out", str(tmp_path / "t"), "--lr", "5e-4", "--beta2", "0.99")
    spec = TrialSpec.from_json(Path(out["trial_dir"]) / "spec.json")
    assert spec.hyperparams.lr == 5e-4            # command line
    assert spec.hyperparams.weight_decay == 0.0   # file
    assert spec.steps == 50 and spec.seed == 4 and spec.layout.micro_batch == 8
    assert spec.hyperparams.betas == (0.9, 0.99)  # beta1 default, beta2 flag
    assert spec.layout.seq_len == 128             # default


def test_global_batch_sets_accumulation(tmp_path, capsys):
    out = _dry_run(capsys, "--out", str(tmp_path / "t"), "--gpus", "2", "--micro-batch", "4", "--global-batch", "24")
    assert TrialSpec.from_json(Path(out["trial_dir"]) / "spec.json").layout.grad_accum == 3
    # As in `trainplan plan`: --grad-accum given as well is accepted when it is the one implied (24 / (4 x 2) = 3).
    out = _dry_run(capsys, "--out", str(tmp_path / "u"), "--gpus", "2", "--micro-batch", "4", "--global-batch", "24",
                   "--grad-accum", "3")
    assert TrialSpec.from_json(Path(out["trial_dir"]) / "spec.json").layout.grad_accum == 3


def test_a_disagreeing_grad_accum_names_both_flags_and_the_implied_value(tmp_path, capsys):
    args = ["--gpus", "2", "--micro-batch", "4", "--global-batch", "24", "--grad-accum", "2"]
    assert main(["run", "--dry-run", "--out", str(tmp_path / "t"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trainplan: error: --grad-accum: 2 disagrees with --global-batch 24")
    assert "implies 3" in err[0]
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(("args", "flag"), [
    (["--lr", "-1"], "--lr"),
    (["--zero", "7"], "--zero"),
    (["--schedule", "cos"], "--schedule"),
    (["--model", "llama-2-7"], "--model"),
    (["--data", "/nonexistent/x.txt"], "--data"),
    (["--global-batch", "10", "--micro-batch", "4"], "--global-batch"),
    (["--global-batch", "16", "--grad-accum", "2"], "--grad-accum"),  # 16 / 16 implies 1 (was: refused as a pair)
    pytest.param(["--precision", "fp16"], "--precision",
                 marks=pytest.mark.skipif(gpu_present(), reason="fp16 is allowed on a GPU")),
    (["--steps", "10", "--warmup-steps", "11"], "--warmup-steps"),
    (["--hostfile", "/nonexistent/hosts"], "--hostfile"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, args, flag):
    assert main(["run", "--dry-run", "--out", str(tmp_path / "t"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"trainplan: error: {flag}:")


def test_first_compile_is_detected_from_the_extensions_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert not ops_compiled()
    built = tmp_path / "py311_cpu" / "fused_adam"
    built.mkdir(parents=True)
    (built / "fused_adam.so").write_bytes(b"")
    import sys

    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert ops_compiled() == (tag == "py311")


def test_help_lists_every_flag_the_issue_asks_for(capsys):
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--data", "--tokenizer", "--steps", "--seq-len", "--micro-batch", "--grad-accum",
                 "--global-batch", "--lr", "--weight-decay", "--warmup-steps", "--schedule", "--beta1", "--beta2",
                 "--grad-clip", "--dropout", "--zero", "--precision", "--gpus", "--include", "--hostfile",
                 "--seed", "--eval-every", "--out", "--spec", "--timeout", "--quiet"):
        assert flag in text


def test_help_is_the_spec_fields_docstrings_with_the_runners_defaults(capsys):
    from trainplan.runners import DEFAULT_HYPERPARAMS, DEFAULT_LAYOUT

    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"Peak learning rate. [default: {DEFAULT_HYPERPARAMS.lr:g}]" in text
    assert f"Tokens per sequence. [default: {DEFAULT_LAYOUT.seq_len}]" in text
