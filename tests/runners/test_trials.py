"""Real trials through the real ``deepspeed`` launcher on the CPU (gloo): what a user would see.

Kept cheap: tiny batches, a few steps, 300 kB of data, except the default task's 100 steps. The
first DeepSpeed run on a fresh machine compiles C++ ops (about 100 s) unless ``make setup`` built
them; pytest-timeout's per-test limit (pyproject.toml) is far above that.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import psutil
import pytest

from tests._proc import ONE_THREAD

from trainplan.cli import main
from trainplan.runners import METRIC_KEYS, TrialSpec, launch_trial, run_trial

pytestmark = pytest.mark.slow

SMALL = dict(eval_tokens=2048, max_data_bytes=300_000, eval_every=3)
SMALL_LAYOUT = dict(micro_batch=4, seq_len=64)


def _metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _trial_processes(folder) -> list[psutil.Process]:
    needle = str(folder / "spec.json")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.info["pid"] != os.getpid() and needle in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def _shm_segments(folder) -> list:
    """DeepSpeed's CPU all-reduce segments (``/dev/shm/deepspeed_allreduce_buffer_*``) of this trial's
    rendezvous port; trainplan switches that op off, so there must be none (runners/_dist.py)."""
    port = (folder / "cmd.txt").read_text().split("--master_port ")[1].split()[0]
    return [p for p in Path("/dev/shm").glob("deepspeed_allreduce_buffer_*") if f"_{port}_" in p.name]


def test_default_task_learns(tmp_path, capsys):
    folder = tmp_path / "default"
    code = main(["run", "--out", str(folder), "--log-every", "10", "--eval-every", "50"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    result = json.loads(out)
    assert result == json.loads((folder / "result.json").read_text()) | {}
    assert {p.name for p in folder.iterdir()} >= {"spec.json", "ds_config.json", "cmd.txt", "metrics.jsonl",
                                                  "result.json", "stdout.log", "stderr.log"}
    assert f"trial folder: {folder}" in err
    records = _metrics(folder)
    assert all(set(METRIC_KEYS) <= set(r) for r in records)
    start, end = records[0]["eval_loss"], result["final_eval_loss"]
    assert records[0]["step"] == 0 and abs(start - math.log(256)) < 0.2  # untrained: ~uniform over bytes
    assert result["status"] == "completed" and result["steps"] == 100 and result["tokens"] == 100 * 16 * 128
    assert end < 3.0 < start, (start, end)
    assert result["tokens_per_s"] > 0 and result["peak_mem_bytes"] > 0
    assert result["estimate"]["memory_bytes"] > 0  # the planner's number beside the measured one


TWO_RANKS = "test_two_ranks_match_one_rank_at_the_same_global_batch"


@pytest.fixture(scope="module")
def rank_runs(request, tmp_path_factory):
    """The one-rank reference ("ref") and the two-rank trial of each ZeRO stage this session
    selected: key -> (result, trial folder). Two trials at a time, one thread per rank: a 4-step
    trial is mostly start-up, and two of them overlap it on 2 cores."""
    zeros = sorted({item.callspec.params["zero"] for item in request.session.items
                    if getattr(item, "originalname", None) == TWO_RANKS})
    specs = {"ref": TrialSpec(steps=4, **SMALL, layout=dict(SMALL_LAYOUT, gpus=1, grad_accum=2))}
    specs |= {zero: TrialSpec(steps=4, **SMALL, layout=dict(SMALL_LAYOUT, gpus=2, grad_accum=1, zero=zero))
              for zero in zeros}
    pending, running, done = list(specs), {}, {}
    try:
        while pending or running:
            while pending and len(running) < 2:
                key = pending.pop(0)
                folder = tmp_path_factory.mktemp(f"ranks-{key}")
                running[key] = (launch_trial(specs[key], folder, env=ONE_THREAD), folder)
            for key, (handle, folder) in list(running.items()):
                if handle.wait(0.1) is not None:
                    done[key] = (handle.finalize(), folder)
                    del running[key]
    finally:  # a failure or a timeout here leaves no trial running
        for handle, _ in running.values():
            handle.stop(grace_s=10)
    return done


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_two_ranks_match_one_rank_at_the_same_global_batch(rank_runs, zero):
    ref_result, ref_folder = rank_runs["ref"]
    assert ref_result["status"] == "completed", ref_result["reason"]
    one_rank_curve = _metrics(ref_folder)
    result, folder = rank_runs[zero]
    assert result["status"] == "completed", result["reason"]
    curve = _metrics(folder)
    assert [r["step"] for r in curve] == [r["step"] for r in one_rank_curve]
    for mine, ref in zip(curve, one_rank_curve):
        for key in ("train_loss", "eval_loss"):
            if ref[key] is None:
                assert mine[key] is None
            else:
                assert mine[key] == pytest.approx(ref[key], abs=2e-3), (zero, mine["step"], key)
    assert curve[-1]["train_loss"] < curve[1]["train_loss"] - 0.3  # and it is learning
    assert _shm_segments(folder) == []  # nothing left in RAM-backed /dev/shm


def test_huge_learning_rate_diverges_early(tmp_path, capsys):
    code = main(["run", "--quiet", "--out", str(tmp_path), "--lr", "10", "--schedule", "constant",
                 "--warmup-steps", "0", "--steps", "60", "--micro-batch", "4", "--seq-len", "64",
                 "--eval-tokens", "2048", "--max-data-bytes", "300000"])
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "diverged" and code == 3 == result["exit_code"]
    assert result["diverged_at_step"] is not None and result["diverged_at_step"] < 20
    assert _metrics(tmp_path)[-1]["step"] == result["diverged_at_step"] == result["steps"]


def test_sigterm_ends_as_terminated_with_metrics_intact_and_no_orphans(tmp_path):
    spec = TrialSpec(steps=100_000, **SMALL | {"eval_every": 1000}, layout=dict(SMALL_LAYOUT, gpus=2))
    handle = launch_trial(spec, tmp_path)
    seen: list[dict] = []
    while not any(r["step"] >= 3 for r in seen):
        assert handle.wait(0.2) is None, (tmp_path / "stderr.log").read_text()[-2000:]
        seen += handle.new_metrics()
    assert len(_trial_processes(tmp_path)) >= 3  # the launcher, launch.py and two ranks
    handle.stop(grace_s=30)
    result = handle.finalize()
    records = _metrics(tmp_path)  # every line parses: nothing half-written
    assert result["status"] == "terminated", result
    assert [r["step"] for r in records] == list(range(records[-1]["step"] + 1))
    assert result["steps"] == records[-1]["step"] >= 3
    assert _trial_processes(tmp_path) == []
    # wait4 kept the launcher tree's CPU time: at least its own torch + DeepSpeed import
    assert handle.reaped_cpu_s is not None and handle.reaped_cpu_s > 1.0


_STOPPED_TRIAL_CPU = """
import json, os, sys, time
from pathlib import Path
from trainplan.runners import TrialSpec, adopt_orphans, launch_trial
from trainplan.search._guard import session_cpu_ticks
adopt = adopt_orphans()
spec = TrialSpec(steps=100_000, eval_tokens=2048, max_data_bytes=300_000, eval_every=1000,
                 layout=dict(micro_batch=4, seq_len=64, gpus=2))
handle = launch_trial(spec, Path(sys.argv[1]))
ticks = {}
while not any(r["step"] >= 3 for r in handle.new_metrics()) and handle.poll() is None:
    ticks.update(session_cpu_ticks([handle.pid]))
    time.sleep(0.2)
ticks.update(session_cpu_ticks([handle.pid]))
started = time.monotonic()
handle.stop(grace_s=30)
result = handle.finalize()
print(json.dumps({"adopt": adopt, "status": result["status"], "reaped": handle.reaped_cpu_s,
                  "stop_s": time.monotonic() - started,
                  "sampled": sum(ticks.values()) / os.sysconf("SC_CLK_TCK"), "processes": len(ticks)}))
"""


def test_a_stopped_trial_is_waited_for_to_its_last_process(tmp_path):
    # In a child process: adopting orphans lasts for the life of the process that asks.
    from tests._proc import run_group

    proc = run_group([sys.executable, "-c", _STOPPED_TRIAL_CPU, str(tmp_path)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["adopt"] is True and got["status"] == "terminated" and got["processes"] >= 4
    # Every process of the trial (launcher, launch.py, two ranks) was waited for by someone in
    # the tree or by the adopter, so the total covers at least what the samples saw.
    assert got["reaped"] >= got["sampled"] > 0
    assert got["stop_s"] < 15  # adopted processes that died are waited for, not mistaken for live ones
    assert _trial_processes(tmp_path) == []


def test_timeout_stops_the_trial(tmp_path, capsys):
    code = main(["run", "--quiet", "--out", str(tmp_path), "--steps", "100000", "--timeout", "15",
                 "--micro-batch", "4", "--seq-len", "64", "--eval-tokens", "2048", "--max-data-bytes", "300000"])
    result = json.loads(capsys.readouterr().out)
    assert code == 124 and result["status"] == "timeout" and "15 s" in result["reason"]
    assert _trial_processes(tmp_path) == []


def test_broken_model_config_crashes_with_the_error_recorded(tmp_path):
    config = _tiny_config()
    config["hidden_act"] = "no-such-activation"
    (tmp_path / "broken.json").write_text(json.dumps(config))
    spec = TrialSpec(model=str(tmp_path / "broken.json"), steps=3, **SMALL, layout=SMALL_LAYOUT)
    result = run_trial(spec, tmp_path / "trial")
    assert result["status"] == "crashed" and result["exit_code"] == 1
    assert "no-such-activation" in result["reason"] and "no-such-activation" in result["stderr_tail"]


def _tiny_config() -> dict:
    from trainplan.planner import load_model

    return dict(load_model("trainplan-tiny").hf_config)


def test_checkpoint_folder_fine_tunes_on_local_jsonl(tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainplan.runners._data import stdlib_text

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**_tiny_config()))
    with torch.no_grad():
        model.lm_head.weight.zero_()  # a recognisable checkpoint: uniform predictions, loss ln 256
    model.save_pretrained(tmp_path / "ckpt")
    text = stdlib_text(200_000).decode()
    with (tmp_path / "docs.jsonl").open("w") as fh:
        for i in range(0, len(text), 2000):
            fh.write(json.dumps({"text": text[i:i + 2000]}) + "\n")
    spec = TrialSpec(model=str(tmp_path / "ckpt"), data=str(tmp_path / "docs.jsonl"), steps=4, **SMALL,
                     layout=SMALL_LAYOUT)
    result = run_trial(spec, tmp_path / "trial")
    assert result["status"] == "completed", result["reason"]
    records = _metrics(tmp_path / "trial")
    assert records[0]["eval_loss"] == pytest.approx(math.log(256), abs=1e-4)  # the saved weights were loaded
    assert result["final_eval_loss"] < records[0]["eval_loss"]


def test_local_text_with_a_local_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from trainplan.runners._data import stdlib_text

    text = stdlib_text(300_000).decode()
    (tmp_path / "corpus.txt").write_text(text)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator([text[:100_000]], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"]))
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", unk_token="<unk>").save_pretrained(tmp_path / "tok")
    spec = TrialSpec(data=str(tmp_path / "corpus.txt"), tokenizer=str(tmp_path / "tok"), steps=4, **SMALL,
                     layout=SMALL_LAYOUT)
    result = run_trial(spec, tmp_path / "trial")
    assert result["status"] == "completed", result["reason"]
    start = _metrics(tmp_path / "trial")[0]["eval_loss"]
    assert abs(start - math.log(300)) < 0.3  # the model took the tokenizer's 300-token vocabulary


def test_a_hand_edited_ds_config_is_applied_whole_or_refused(tmp_path):
    # cmd.txt invites rerunning a trial by hand after editing its ds_config.json: the engine's
    # optimizer then holds the file's lr, betas and weight decay, all of them (the weight decay
    # used to come from spec.json while the lr came from the file).
    from trainplan.runners import prepare_trial
    from trainplan.runners._opcache import extensions_dir
    from trainplan.runners.train import main as train_main

    spec = TrialSpec(steps=3, **SMALL, layout=SMALL_LAYOUT, hyperparams={
        "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 1, "schedule": "constant"})
    command = prepare_trial(spec, tmp_path / "applied")
    path = tmp_path / "applied" / "ds_config.json"
    config = json.loads(path.read_text())
    config["optimizer"]["params"].update(lr=1e-2, weight_decay=0.37, betas=[0.85, 0.97])
    config["scheduler"]["params"]["warmup_max_lr"] = 1e-2  # WarmupLR's peak: the same edit, made whole
    path.write_text(json.dumps(config))
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions_dir())}
    import subprocess

    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    result = json.loads((tmp_path / "applied" / "result.json").read_text())
    assert proc.returncode == 0 and result["status"] == "completed", proc.stderr[-2000:]
    assert result["optimizer"]["weight_decay"] == [0.37, 0.0]  # norms and biases are never decayed
    assert result["optimizer"]["betas"] == [0.85, 0.97]
    assert [r["lr"] for r in _metrics(tmp_path / "applied")][-1] == pytest.approx(1e-2)  # past the warm-up

    # An optimizer lr edited without the linear schedule's peak would be half applied: refused.
    spec = spec.with_(hyperparams=spec.hyperparams.__class__(**{**spec.hyperparams.to_dict(), "schedule": "linear"}))
    prepare_trial(spec, tmp_path / "refused")
    path = tmp_path / "refused" / "ds_config.json"
    config = json.loads(path.read_text())
    config["optimizer"]["params"]["lr"] = 1e-2
    path.write_text(json.dumps(config))
    assert train_main(["--spec", str(tmp_path / "refused" / "spec.json")]) == 1
    result = json.loads((tmp_path / "refused" / "result.json").read_text())
    assert result["status"] == "crashed" and "ds_config.json:scheduler.params.warmup_max_lr" in result["reason"]
    assert not (tmp_path / "refused" / "metrics.jsonl").read_text()  # no step trained on half the edit
