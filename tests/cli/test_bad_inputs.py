"""Every bad input, over every verb, is one line naming the flag or key, exit code 2, no traceback,
and no process started.

The table runs through the in-process entry point (``trainplan.cli.main``) so that it takes
seconds; ``subprocess.Popen`` is replaced by a tripwire, so a case that would start any process
(a launcher, the orphan guard) fails. A few cases also run as real subprocesses. The totals go in
the README (tried / clean).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainplan.cli import main

CORES = os.cpu_count() or 1

# (argv, the flag or key the one error line must name). "{d}" is the folder of fixture files.
PLAN = "plan --model llama-2-7b"
RUN = "run --dry-run"
CASES: list[tuple[str, str]] = [
    # --- plan: flags ---
    ("plan", "--model"),
    ("plan --model nope-model", "--model"),
    ("plan --model /nonexistent/config.json", "--model"),
    (f"{PLAN} --gpu nope-gpu", "--gpu"),
    (f"{PLAN} --gpus 0", "--gpus"),
    (f"{PLAN} --gpus -1", "--gpus"),
    (f"{PLAN} --gpus abc", "--gpus"),
    (f"{PLAN} --gpus 2.5", "--gpus"),
    (f"{PLAN} --gpus 1000000000000000000000000", "--gpus"),
    (f"{PLAN} --gpus-per-node 0", "--gpus-per-node"),
    (f"{PLAN} --gpus-per-node 5000", "--gpus-per-node"),
    (f"{PLAN} --seq-len 0", "--seq-len"),
    (f"{PLAN} --seq-len -5", "--seq-len"),
    (f"{PLAN} --seq-len x", "--seq-len"),
    (f"{PLAN} --seq-len 1000000000000", "--seq-len"),
    (f"{PLAN} --micro-batch 0", "--micro-batch"),
    (f"{PLAN} --micro-batch nan", "--micro-batch"),
    (f"{PLAN} --micro-batch 100000000000000", "--micro-batch"),
    (f"{PLAN} --grad-accum 0", "--grad-accum"),
    (f"{PLAN} --global-batch 0", "--global-batch"),
    (f"{PLAN} --gpus 2 --global-batch 3", "--global-batch"),
    (f"{PLAN} --tokens inf", "--tokens"),
    (f"{PLAN} --tokens nan", "--tokens"),
    (f"{PLAN} --tokens -1", "--tokens"),
    (f"{PLAN} --tokens 0", "--tokens"),
    (f"{PLAN} --tokens abc", "--tokens"),
    (f"{PLAN} --tokens 1e30", "--tokens"),
    (f"{PLAN} --tokens 5Q", "--tokens"),
    (f"{PLAN} --zero 4", "--zero"),
    (f"{PLAN} --zero -1", "--zero"),
    (f"{PLAN} --zero a", "--zero"),
    (f"{PLAN} --offload disk", "--offload"),
    (f"{PLAN} --tp 0", "--tp"),
    (f"{PLAN} --pp 0", "--pp"),
    (f"{PLAN} --tp 5000", "--tp"),
    (f"{PLAN} --precision fp8", "--precision"),
    (f"{PLAN} --checkpointing some", "--checkpointing"),
    (f"{PLAN} --attention fast", "--attention"),
    (f"{PLAN} --optimizer lion", "--optimizer"),
    (f"{PLAN} --mfu nan", "--mfu"),
    (f"{PLAN} --mfu inf", "--mfu"),
    (f"{PLAN} --mfu 0", "--mfu"),
    (f"{PLAN} --mfu 1.5", "--mfu"),
    (f"{PLAN} --mfu -0.1", "--mfu"),
    (f"{PLAN} --mfu abc", "--mfu"),
    (f"{PLAN} --price nan", "--price"),
    (f"{PLAN} --price inf", "--price"),
    (f"{PLAN} --price -1", "--price"),
    (f"{PLAN} --price abc", "--price"),
    (f"{PLAN} --price 1e9", "--price"),
    (f"{PLAN} --recommend --max-gpus 0", "--max-gpus"),
    (f"{PLAN} --recommend --top 0", "--top"),
    (f"{PLAN} --optimize speed", "--optimize"),
    (f"{PLAN} --format yaml", "--format"),
    (f"{PLAN} --ds-config {{d}}/no-such-folder/ds.json", "--ds-config"),
    (f"{PLAN} --ds-config {{d}}", "--ds-config"),
    (f"{PLAN} --report {{d}}/no-such-folder/plan.html", "--report"),
    (f"{PLAN} --frobnicate", "--frobnicate"),
    (f"{PLAN} --zero", "--zero"),
    # --- plan: model configs ---
    ("plan --model {d}/bad.json", "bad.json"),
    # --- run: flags (a dry run checks everything a launch would) ---
    (f"{RUN} --steps 0", "--steps"),
    (f"{RUN} --steps -1", "--steps"),
    (f"{RUN} --steps x", "--steps"),
    (f"{RUN} --steps nan", "--steps"),
    (f"{RUN} --steps 100000000000000", "--steps"),
    (f"{RUN} --seq-len 0", "--seq-len"),
    (f"{RUN} --micro-batch 0", "--micro-batch"),
    (f"{RUN} --grad-accum 0", "--grad-accum"),
    (f"{RUN} --global-batch 3", "--global-batch"),
    (f"{RUN} --global-batch 32 --grad-accum 3", "--grad-accum"),  # 32 / 16 implies 2 (an agreeing pair runs)
    (f"{RUN} --global-batch 40 --grad-accum 2", "--global-batch"),
    (f"{PLAN} --micro-batch 4 --global-batch 32 --grad-accum 3", "--grad-accum"),
    (f"{RUN} --lr 0", "--lr"),
    (f"{RUN} --lr -1", "--lr"),
    (f"{RUN} --lr nan", "--lr"),
    (f"{RUN} --lr inf", "--lr"),
    (f"{RUN} --lr fast", "--lr"),
    (f"{RUN} --lr 100", "--lr"),
    (f"{RUN} --min-lr-ratio 2", "--min-lr-ratio"),
    (f"{RUN} --min-lr-ratio nan", "--min-lr-ratio"),
    (f"{RUN} --weight-decay -1", "--weight-decay"),
    (f"{RUN} --weight-decay nan", "--weight-decay"),
    (f"{RUN} --warmup-steps -1", "--warmup-steps"),
    (f"{RUN} --schedule zigzag", "--schedule"),
    (f"{RUN} --beta1 1", "--beta1"),
    (f"{RUN} --beta1 nan", "--beta1"),
    (f"{RUN} --beta1 -0.1", "--beta1"),
    (f"{RUN} --beta2 1.5", "--beta2"),
    (f"{RUN} --eps 0", "--eps"),
    (f"{RUN} --eps nan", "--eps"),
    (f"{RUN} --grad-clip -1", "--grad-clip"),
    (f"{RUN} --grad-clip inf", "--grad-clip"),
    (f"{RUN} --dropout 1", "--dropout"),
    (f"{RUN} --dropout -0.5", "--dropout"),
    (f"{RUN} --dropout nan", "--dropout"),
    (f"{RUN} --zero 4", "--zero"),
    (f"{RUN} --zero -1", "--zero"),
    (f"{RUN} --offload disk", "--offload"),
    (f"{RUN} --precision fp8", "--precision"),
    (f"{RUN} --precision fp16", "--precision"),
    (f"{RUN} --attention fast", "--attention"),
    (f"{RUN} --gpus 0", "--gpus"),
    (f"{RUN} --gpus {CORES + 1}", "--gpus"),
    (f"{RUN} --gpus 1000000000000", "--gpus"),
    (f"{RUN} --seed -1", "--seed"),
    (f"{RUN} --seed 1099511627776", "--seed"),
    (f"{RUN} --eval-every 0", "--eval-every"),
    (f"{RUN} --eval-tokens 0", "--eval-tokens"),
    (f"{RUN} --eval-tokens 64", "--eval-tokens"),
    (f"{RUN} --log-every 0", "--log-every"),
    (f"{RUN} --max-data-bytes 0", "--max-data-bytes"),
    (f"{RUN} --timeout 0", "--timeout"),
    (f"{RUN} --timeout nan", "--timeout"),
    (f"{RUN} --timeout -1", "--timeout"),
    (f"{RUN} --estimate-gpu nope-gpu", "--estimate-gpu"),
    (f"{RUN} --model nope-model", "--model"),
    (f"{RUN} --hostfile {{d}}/no-hostfile", "--hostfile"),
    (f"{RUN} --out {{d}}/one.txt", "--out"),
    (f"{RUN} --out {{d}}/userdir", "--out"),
    (f"{RUN} --nope", "--nope"),
    # --- run: data files ---
    (f"{RUN} --data {{d}}/no-such-file.txt", "--data"),
    (f"{RUN} --data {{d}}/empty.txt", "--data"),
    (f"{RUN} --data {{d}}/one.txt", "--data"),
    (f"{RUN} --data {{d}}/latin1.txt", "--data"),
    (f"{RUN} --data {{d}}/mal.jsonl", "--data"),
    (f"{RUN} --data {{d}}/latin1.jsonl", "--data"),
    (f"{RUN} --data {{d}}/key.jsonl", "--text-key"),
    (f"{RUN} --data {{d}}/big.jsonl --text-key body", "--text-key"),
    (f"{RUN} --data {{d}}/num.jsonl", "--text-key"),
    (f"{RUN} --data {{d}}/arr.jsonl", "--text-key"),
    (f"{RUN} --data {{d}}/data.csv", "--data"),
    (f"{RUN} --data {{d}}/emptydir", "--data"),
    (f"{RUN} --data {{d}}/nofiles", "--data"),
    (f"{RUN} --data {{d}}/fake.parquet", "--data"),
    (f"{RUN} --data {{d}}/big.txt --seq-len 4096 --eval-tokens 4096 --max-data-bytes 30000", "--data"),
    (f"{RUN} --data {{d}}/big.txt --tokenizer {{d}}/no-tokenizer", "--tokenizer"),
    (f"{RUN} --data {{d}}/big.txt --tokenizer {{d}}/emptydir", "--tokenizer"),
    (f"{RUN} --data {{d}}/big.txt --tokenizer {{d}}/one.txt", "--tokenizer"),
    # --- run: trial specs ---
    (f"{RUN} --spec {{d}}/no-spec.json", "--spec"),
    (f"{RUN} --spec {{d}}/bad.json", "--spec"),
    (f"{RUN} --spec {{d}}/list.json", "--spec"),
    (f"{RUN} --spec {{d}}/spec_unknown.json", "nope"),
    (f"{RUN} --spec {{d}}/spec_steps.json", "--steps"),
    (f"{RUN} --spec {{d}}/spec_zero.json", "--zero"),
    (f"{RUN} --spec {{d}}/spec_lr.json", "--lr"),
    # --- search: flags (checked before any trial) ---
    ("search --n-trials 0", "--n-trials"),
    ("search --n-trials -3", "--n-trials"),
    ("search --n-trials x", "--n-trials"),
    ("search --timeout nan", "--timeout"),
    ("search --timeout 0", "--timeout"),
    ("search --max-gpu-hours inf", "--max-gpu-hours"),
    ("search --max-gpu-hours -1", "--max-gpu-hours"),
    ("search --workers 0", "--workers"),
    (f"search --workers {CORES + 1}", "--workers"),
    ("search --sampler bayes", "sampler.type"),
    ("search --pruner always", "pruner.type"),
    ("search --seed -1", "--seed"),
    ("search --format yaml", "--format"),
    ("search --export {d}/trials.xlsx", "--export"),
    ("search --export {d}/no-such-folder/t.csv", "--export"),
    ("search --storage foo://nowhere", "--storage"),
    ("search --storage postgresql+psycopg://u:pw@127.0.0.1:1/db", "--storage"),
    ("search --bogus", "--bogus"),
    # --- search: sweep files ---
    ("search {d}/no-sweep.yaml", "--sweep"),
    ("search {d}/bad.yaml", "--sweep"),
    ("search {d}/list.yaml", "--sweep"),
    ("search {d}/sw_unknown.yaml", "colour"),
    ("search {d}/sw_ntrials.yaml", "budget.n_trials"),
    ("search {d}/sw_param.yaml", "space"),
    ("search {d}/sw_lowhigh.yaml", "space.lr"),
    ("search {d}/sw_sampler.yaml", "sampler.type"),
    ("search {d}/sw_objective.yaml", "objectives"),
    ("search {d}/sw_workers.yaml", "workers"),
    ("search {d}/sw_data.yaml", "--data"),
    ("search {d}/sw_textkey.yaml", "--text-key"),
    # --- trials ---
    ("trials --storage sqlite:///{d}/missing.db", "--storage"),
    ("trials --storage {d}/missing.db", "--storage"),
    ("trials --storage {d}/missing.log", "--storage"),
    ("trials --storage sqlite:///{d}/study.db --study-name nope", "--study-name"),
    ("trials --storage sqlite:///{d}/study.db --study-name s --format xml", "--format"),
    ("trials --storage sqlite:///{d}/study.db --study-name s --format parquet", "--format"),
    ("trials --storage sqlite:///{d}/study.db --study-name s -o {d}/t.xlsx", "--format"),
    ("trials --storage sqlite:///{d}/study.db --study-name s -o {d}/no-such-folder/t.csv", "--output"),
    ("trials {d}/no-sweep.yaml", "--sweep"),
    # --- report ---
    ("report --storage sqlite:///{d}/missing.db", "--storage"),
    ("report --storage {d}/missing.db", "--storage"),
    ("report --storage foo://nowhere", "--storage"),
    ("report --storage sqlite:///{d}/study.db --study nope", "--study"),
    ("report --storage sqlite:///{d}/study.db --top-k 0", "--top-k"),
    ("report --storage sqlite:///{d}/study.db --top-k -1", "--top-k"),
    ("report --storage sqlite:///{d}/study.db --top-k x", "--top-k"),
    ("report --storage sqlite:///{d}/study.db --tokens inf", "--tokens"),
    ("report --storage sqlite:///{d}/study.db --tokens nan", "--tokens"),
    ("report --storage sqlite:///{d}/study.db --tokens -5", "--tokens"),
    ("report --storage sqlite:///{d}/study.db --tokens many", "--tokens"),
    ("report", "--storage"),  # no runs/search-*/study.db
    # --- catalogs and the command itself ---
    ("gpus --format yaml", "--format"),
    ("models --format yaml", "--format"),
    ("nope-verb", "nope-verb"),
    ("--nope plan", "--nope"),
]


def _write(d: Path) -> None:
    (d / "empty.txt").write_text("")
    (d / "one.txt").write_text("just one line\n")
    (d / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 5000)
    (d / "big.txt").write_text("hello trainplan\n" * 20000)
    (d / "mal.jsonl").write_text('{"text": "a"}\n{"text": oops\n')
    (d / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    (d / "key.jsonl").write_text('{"body": "a"}\n')
    (d / "big.jsonl").write_text(json.dumps({"text": "hello " * 50}) + "\n")
    (d / "num.jsonl").write_text('{"text": 5}\n')
    (d / "arr.jsonl").write_text("[1, 2]\n")
    (d / "data.csv").write_text("text\nhello\n")
    (d / "fake.parquet").write_text("this is not parquet")
    (d / "emptydir").mkdir()
    (d / "nofiles").mkdir()
    (d / "nofiles" / "readme.md").write_text("no data here\n")
    (d / "userdir").mkdir()
    (d / "userdir" / "thesis.tex").write_text("mine\n")
    (d / "bad.json").write_text("{not json")
    (d / "list.json").write_text("[]")
    (d / "spec_unknown.json").write_text(json.dumps({"nope": 1}))
    (d / "spec_steps.json").write_text(json.dumps({"steps": -1}))
    (d / "spec_zero.json").write_text(json.dumps({"layout": {"zero": 7}}))
    (d / "spec_lr.json").write_text(json.dumps({"hyperparams": {"lr": -1.0}}))
    (d / "bad.yaml").write_text("space: [unclosed\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    sweeps = {
        "sw_unknown": {"colour": "blue"},
        "sw_ntrials": {"budget": {"n_trials": -1}},
        "sw_param": {"space": {"learning_speed": {"low": 1, "high": 2}}},
        "sw_lowhigh": {"space": {"lr": {"low": 1e-2, "high": 1e-3}}},
        "sw_sampler": {"sampler": {"type": "bayes"}},
        "sw_objective": {"objectives": ["accuracy"]},
        "sw_workers": {"workers": 0},
        "sw_data": {"base": {"data": str(d / "empty.txt")}},
        "sw_textkey": {"base": {"data": str(d / "key.jsonl")}},
    }
    for name, body in sweeps.items():
        (d / f"{name}.yaml").write_text(yaml.safe_dump(body))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{d / 'study.db'}")
    study.tell(study.ask(), 1.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad-inputs")
    _write(d)
    return d


@pytest.fixture()
def no_processes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Fail any attempt to start a process (launcher, orphan guard, anything)."""
    started: list[list[str]] = []

    class Tripwire:
        def __init__(self, args, *a, **k):  # type: ignore[no-untyped-def]
            started.append(list(args) if isinstance(args, (list, tuple)) else [str(args)])
            raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", Tripwire)
    return started


def _argv(case: str, d: Path) -> list[str]:
    return shlex.split(case.replace("{d}", str(d)))


@pytest.mark.parametrize(("case", "key"), CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_one_line_exit_2(case: str, key: str, files: Path, tmp_path: Path, no_processes: list,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRAINPLAN_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    code = main(_argv(case, files))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-800:])
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0]
    assert key.replace("{d}", str(files)) in lines[0], lines[0]
    assert not no_processes
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("spec.json"))


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 150
    assert len({c for c, _ in CASES}) == len(CASES)
    verbs = {c.split()[0] for c, _ in CASES}
    assert {"plan", "run", "search", "trials", "report", "gpus", "models"} <= verbs


@pytest.mark.parametrize("case", ["plan --model llama-2-7b --price nan", "run --data {d}/latin1.txt",
                                  "search --n-trials 0", "report --storage sqlite:///{d}/missing.db",
                                  "trials --storage {d}/missing.log"])
def test_bad_input_in_a_real_process(case: str, files: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TRAINPLAN_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run([sys.executable, "-m", "trainplan", *_argv(case, files)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (files / "missing.db").exists() and not (files / "missing.log").exists()
