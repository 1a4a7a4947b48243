"""Real trials through the real ``deepspeed`` launcher on the CPU (gloo): what a user would see.

Kept cheap: tiny batches, a few steps, 300 kB of data, except the default task's 100 steps. The
first DeepSpeed run on a fresh machine compiles C++ ops (about 100 s) unless ``make setup`` built
them; pytest-timeout's per-test limit (pyproject.toml) is far above that.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
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


def _side_by_side(starts: dict, at_once: int = 2) -> dict:
    """Start the jobs of ``starts`` (key -> a function starting one and returning its TrialHandle or
    Popen), ``at_once`` at a time, and wait for all of them: key -> (the ended job, its finalized
    result or exit code), each collected as soon as it ends. A short trial is mostly start-up
    (imports, one process after another), which two overlap on 2 cores; the trials run one thread
    each (tests/_proc.py: ONE_THREAD)."""
    pending, running, done = list(starts), {}, {}
    try:
        while pending or running:
            while pending and len(running) < at_once:
                key = pending.pop(0)
                running[key] = starts[key]()
            for key, job in list(running.items()):
                if job.poll() is not None:
                    done[key] = (job, job.finalize() if hasattr(job, "finalize") else job.returncode)
                    del running[key]
            time.sleep(0.1)
    finally:  # a failure or a timeout here leaves no trial running
        for job in running.values():
            if hasattr(job, "stop"):
                job.stop(grace_s=10)
            else:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
    return done


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
    folders = {key: tmp_path_factory.mktemp(f"ranks-{key}") for key in specs}
    done = _side_by_side({key: (lambda key=key: launch_trial(specs[key], folders[key], env=ONE_THREAD))
                          for key in specs})
    return {key: (result, folders[key]) for key, (_, result) in done.items()}


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


def test_huge_learning_rate_diverges_early(one_rank_runs):
    # `trainplan run` as a user types it, beside the other one-rank trials (ONE_RANK_TRIALS).
    tmp, code = one_rank_runs["test_huge_learning_rate_diverges_early"]
    result = json.loads((tmp / "run.out").read_text())
    assert result["status"] == "diverged" and code == 3 == result["exit_code"], (tmp / "run.err").read_text()[-2000:]
    assert result["diverged_at_step"] is not None and result["diverged_at_step"] < 20
    assert _metrics(tmp / "trial")[-1]["step"] == result["diverged_at_step"] == result["steps"]


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


@pytest.fixture(scope="module")
def stopped_trial(tmp_path_factory):
    """One two-rank trial of no end, stopped (SIGTERM, then SIGKILL after 30 s) once it passed step 3,
    by :meth:`TrialHandle.stop` in a child process that adopts orphans, as ``trainplan run`` and
    ``trainplan search`` do (adopting lasts for the life of the process that asks): (trial folder,
    what the child saw). The two tests below read the one trial."""
    from tests._proc import run_group

    folder = tmp_path_factory.mktemp("stopped")
    proc = run_group([sys.executable, "-c", _STOPPED_TRIAL_CPU, str(folder)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, json.loads(proc.stdout.strip().splitlines()[-1])


def test_sigterm_ends_as_terminated_with_metrics_intact_and_no_orphans(stopped_trial):
    folder, got = stopped_trial
    assert got["processes"] >= 4  # the launcher, launch.py and two ranks ran before the stop
    result = json.loads((folder / "result.json").read_text())
    records = _metrics(folder)  # every line parses: nothing half-written
    assert result["status"] == got["status"] == "terminated", result
    assert [r["step"] for r in records] == list(range(records[-1]["step"] + 1))
    assert result["steps"] == records[-1]["step"] >= 3
    assert _trial_processes(folder) == []
    # wait4 kept the launcher tree's CPU time: at least its own torch + DeepSpeed import
    assert got["reaped"] is not None and got["reaped"] > 1.0


def test_a_stopped_trial_is_waited_for_to_its_last_process(stopped_trial):
    folder, got = stopped_trial
    assert got["adopt"] is True and got["status"] == "terminated" and got["processes"] >= 4
    # Every process of the trial (launcher, launch.py, two ranks) was waited for by someone in
    # the tree or by the adopter, so the total covers at least what the samples saw.
    assert got["reaped"] >= got["sampled"] > 0
    assert got["stop_s"] < 15  # adopted processes that died are waited for, not mistaken for live ones
    assert _trial_processes(folder) == []


def test_timeout_stops_the_trial(one_rank_runs):
    tmp, code = one_rank_runs["test_timeout_stops_the_trial"]
    result = json.loads((tmp / "run.out").read_text())
    assert code == 124 and result["status"] == "timeout" and "15 s" in result["reason"], result
    assert _trial_processes(tmp / "trial") == []


def _tiny_config() -> dict:
    from trainplan.planner import load_model

    return dict(load_model("trainplan-tiny").hf_config)


def _broken(tmp):
    config = _tiny_config()
    config["hidden_act"] = "no-such-activation"
    (tmp / "broken.json").write_text(json.dumps(config))
    spec = TrialSpec(model=str(tmp / "broken.json"), steps=3, **SMALL, layout=SMALL_LAYOUT)
    return lambda: _InThread(lambda: run_trial(spec, tmp / "trial", env=ONE_THREAD))  # run_trial's own path


def _checkpoint(tmp):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainplan.runners._data import stdlib_text

    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**_tiny_config()))
    with torch.no_grad():
        model.lm_head.weight.zero_()  # a recognisable checkpoint: uniform predictions, loss ln 256
    model.save_pretrained(tmp / "ckpt")
    text = stdlib_text(200_000).decode()
    with (tmp / "docs.jsonl").open("w") as fh:
        for i in range(0, len(text), 2000):
            fh.write(json.dumps({"text": text[i:i + 2000]}) + "\n")
    spec = TrialSpec(model=str(tmp / "ckpt"), data=str(tmp / "docs.jsonl"), steps=4, **SMALL, layout=SMALL_LAYOUT)
    return lambda: launch_trial(spec, tmp / "trial", env=ONE_THREAD)


def _tokenizer(tmp):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from trainplan.runners._data import stdlib_text

    text = stdlib_text(300_000).decode()
    (tmp / "corpus.txt").write_text(text)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator([text[:100_000]], trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"]))
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", unk_token="<unk>").save_pretrained(tmp / "tok")
    spec = TrialSpec(data=str(tmp / "corpus.txt"), tokenizer=str(tmp / "tok"), steps=4, **SMALL, layout=SMALL_LAYOUT)
    return lambda: launch_trial(spec, tmp / "trial", env=ONE_THREAD)


HAND_EDITED = TrialSpec(steps=3, **SMALL, layout=SMALL_LAYOUT, hyperparams={
    "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 1, "schedule": "constant"})


def _hand_edited(tmp):
    # cmd.txt invites rerunning a trial by hand after editing its ds_config.json: the command that
    # prepare_trial wrote, run as the user would, after the edit.
    from trainplan.runners import prepare_trial
    from trainplan.runners._opcache import extensions_dir

    command = prepare_trial(HAND_EDITED, tmp / "applied")
    path = tmp / "applied" / "ds_config.json"
    config = json.loads(path.read_text())
    config["optimizer"]["params"].update(lr=1e-2, weight_decay=0.37, betas=[0.85, 0.97])
    config["scheduler"]["params"]["warmup_max_lr"] = 1e-2  # WarmupLR's peak: the same edit, made whole
    path.write_text(json.dumps(config))
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions_dir()), **ONE_THREAD}

    def start():
        with open(tmp / "hand.out", "w") as out, open(tmp / "hand.err", "w") as err:
            return subprocess.Popen(command, env=env, stdout=out, stderr=err, start_new_session=True)
    return start


class _InThread:
    """A blocking call (``run_trial``) as a job of :func:`_side_by_side`."""

    def __init__(self, call) -> None:
        self._out: list = []
        self._thread = threading.Thread(target=lambda: self._out.append(_outcome(call)), daemon=True)
        self._thread.start()

    def poll(self) -> int | None:
        return None if self._thread.is_alive() else 0

    def stop(self, grace_s: float) -> None:  # run_trial stops its own trial if it fails
        self._thread.join(300)

    def finalize(self):
        ok, value = self._out[0]
        if not ok:
            raise value
        return value


def _outcome(call) -> tuple[bool, object]:
    try:
        return True, call()
    except BaseException as exc:
        return False, exc


def _cli_run(*args: str):
    """``trainplan run ARGS --out TMP/trial`` as a user types it; stdout and stderr to TMP/run.out, .err."""
    def prepare(tmp):
        command = [sys.executable, "-m", "trainplan", "run", "--quiet", "--out", str(tmp / "trial"), *args]

        def start():
            with open(tmp / "run.out", "w") as out, open(tmp / "run.err", "w") as err:
                return subprocess.Popen(command, env={**os.environ, **ONE_THREAD}, stdout=out, stderr=err,
                                        start_new_session=True)
        return start
    return prepare


ONE_RANK_SMALL = ("--micro-batch", "4", "--seq-len", "64", "--eval-tokens", "2048", "--max-data-bytes", "300000")


ONE_RANK_TRIALS = {"test_huge_learning_rate_diverges_early": _cli_run(
                       "--lr", "10", "--schedule", "constant", "--warmup-steps", "0", "--steps", "60", *ONE_RANK_SMALL),
                   "test_timeout_stops_the_trial": _cli_run("--steps", "100000", "--timeout", "15", *ONE_RANK_SMALL),
                   "test_broken_model_config_crashes_with_the_error_recorded": _broken,
                   "test_checkpoint_folder_fine_tunes_on_local_jsonl": _checkpoint,
                   "test_local_text_with_a_local_tokenizer": _tokenizer,
                   "test_a_hand_edited_ds_config_is_applied_whole_or_refused": _hand_edited}


@pytest.fixture(scope="module")
def one_rank_runs(request, tmp_path_factory):
    """The independent one-rank trials of the tests that use it and that this session selected, side by
    side (two at a time, one thread each): test name -> (trial's parent folder, result.json or the
    command's exit code). Each test asserts on its own trial."""
    selected = {item.originalname for item in request.session.items if hasattr(item, "originalname")}
    tmps = {name: tmp_path_factory.mktemp("one-rank") for name in ONE_RANK_TRIALS if name in selected}
    # Each trial's inputs are made when it is due, while the ones before it run.
    starts = {name: (lambda name=name, tmp=tmp: ONE_RANK_TRIALS[name](tmp)()) for name, tmp in tmps.items()}
    return {name: (tmps[name], result) for name, (_, result) in _side_by_side(starts).items()}


def test_broken_model_config_crashes_with_the_error_recorded(one_rank_runs):
    _, result = one_rank_runs["test_broken_model_config_crashes_with_the_error_recorded"]
    assert result["status"] == "crashed" and result["exit_code"] == 1
    assert "no-such-activation" in result["reason"] and "no-such-activation" in result["stderr_tail"]


def test_checkpoint_folder_fine_tunes_on_local_jsonl(one_rank_runs):
    tmp, result = one_rank_runs["test_checkpoint_folder_fine_tunes_on_local_jsonl"]
    assert result["status"] == "completed", result["reason"]
    records = _metrics(tmp / "trial")
    assert records[0]["eval_loss"] == pytest.approx(math.log(256), abs=1e-4)  # the saved weights were loaded
    assert result["final_eval_loss"] < records[0]["eval_loss"]


def test_local_text_with_a_local_tokenizer(one_rank_runs):
    tmp, result = one_rank_runs["test_local_text_with_a_local_tokenizer"]
    assert result["status"] == "completed", result["reason"]
    start = _metrics(tmp / "trial")[0]["eval_loss"]
    assert abs(start - math.log(300)) < 0.3  # the model took the tokenizer's 300-token vocabulary


def test_a_hand_edited_ds_config_is_applied_whole_or_refused(one_rank_runs, tmp_path):
    # cmd.txt invites rerunning a trial by hand after editing its ds_config.json: the engine's
    # optimizer then holds the file's lr, betas and weight decay, all of them (the weight decay
    # used to come from spec.json while the lr came from the file).
    from trainplan.runners import prepare_trial
    from trainplan.runners.train import main as train_main

    tmp, code = one_rank_runs["test_a_hand_edited_ds_config_is_applied_whole_or_refused"]
    result = json.loads((tmp / "applied" / "result.json").read_text())
    assert code == 0 and result["status"] == "completed", (tmp / "hand.err").read_text()[-2000:]
    assert result["optimizer"]["weight_decay"] == [0.37, 0.0]  # norms and biases are never decayed
    assert result["optimizer"]["betas"] == [0.85, 0.97]
    assert [r["lr"] for r in _metrics(tmp / "applied")][-1] == pytest.approx(1e-2)  # past the warm-up

    # An optimizer lr edited without the linear schedule's peak would be half applied: refused.
    spec = HAND_EDITED
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
