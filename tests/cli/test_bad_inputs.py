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
CAL_PLAN = "plan --model trainplan-tiny --seq-len 128 --micro-batch 12"
SCALE = "scale --run-dir {d}/ladder --target-model trainplan-tiny --tokens 1M --out {d}/target"

# A calibration file that is JSON of the right keys, with one value broken (written by _write from a real fit).
CAL_BREAKS: dict[str, tuple[tuple[str, ...], object]] = {
    "version_text": (("version",), "2"), "version_nan": (("version",), float("nan")), "version_1": (("version",), 1),
    "version_true": (("version",), True), "format": (("format",), "other-tool"), "no_device": (("device",), None),
    "device_text": (("device",), "cpu"), "kind": (("device", "kind"), "tpu"), "memory": (("device", "memory_bytes"), "lots"),
    "memory_zero": (("device", "memory_bytes"), 0), "peak_text": (("device", "peak_flops"), "fast"),
    "peak_zero": (("device", "peak_flops", "fp32"), 0), "peak_inf": (("device", "peak_flops", "fp32"), float("inf")),
    "cores": (("device", "cores"), -2), "speed_list": (("speed",), []), "speed_text": (("speed",), "fast"),
    "e_max_text": (("speed", "e_max", "value"), "x"), "e_max_null": (("speed", "e_max", "value"), None),
    "e_max_negative": (("speed", "e_max", "value"), -1.0), "e_max_zero": (("speed", "e_max", "value"), 0.0),
    "e_max_missing": (("speed", "e_max"), None), "e_max_list": (("speed", "e_max"), [1, 2]),
    "e_max_low": (("speed", "e_max", "low"), "x"), "overhead_text": (("memory", "overhead_bytes", "value"), "big"),
    "overhead_nan": (("memory", "overhead_bytes", "value"), float("nan")), "share_missing": (("memory", "share"), None),
    "residual_text": (("residual",), "x"), "residual_empty": (("residual",), {}), "ranges_empty": (("ranges",), {}),
    "precision_missing": (("ranges", "precision"), None), "precision_empty": (("ranges", "precision"), []),
    "work_text": (("ranges", "work_flops"), "x"), "ranks_text": (("ranges", "ranks"), "1"),
    "layers_text": (("ranges", "layers"), "4"), "paths_list": (("ranges", "paths"), []),
    "trials_object": (("trials",), {"a": 1}), "trials_text": (("trials",), "abc"), "trials_no_id": (("trials", 0, "id"), None),
    "stack_text": (("stack",), "torch"), "stack_numbers": (("stack", "torch"), 2), "boot_text": (("boot",), "x"),
    "boot_short": (("boot", "speed"), [[1.0]]), "boot_nan": (("boot", "memory"), [[float("nan")] * 4]),
    "timing": (("timing",), "sundial"), "paths_value": (("ranges", "paths", "tp"), 5),
    "threads_text": (("ranges", "threads_per_rank"), {"1": "x"}), "threads_negative": (("ranges", "threads_per_rank"), {"1": -3}),
    "peak_other_precision": (("device", "peak_flops"), {"fp8": 1e12}),
    "kernels_text": (("device", "kernels"), "fast"), "kernels_rows_text": (("device", "kernels"), {"1": {"linear": "x"}}),
    "kernels_row_nan": (("device", "kernels"), {"1": {"linear": [[64, 64, 64, float("nan")]] * 4, "sdpa": []}}),
    "kernels_short_row": (("device", "kernels"), {"1": {"linear": [[64, 64]] * 4, "sdpa": [[1, 2, 3, 4, 1e-3]] * 4}}),
    "kernels_zero_seconds": (("device", "kernels"), {"1": {"sdpa": [[1, 2, 3, 4, 0]] * 4}}),
    "kernels_threads_text": (("device", "kernels"), {"1": {"threads": "two"}}),
}
# A trial folder with one file broken: alone, it leaves calibrate no usable trial (names RUN_DIR).
TRIAL_BREAKS = ("result_binary", "result_list", "result_nan_memory", "result_inf_memory", "result_negative_memory",
                "result_no_memory", "result_no_device", "result_device_text", "result_failed", "spec_list",
                "spec_layout_text", "spec_micro_batch_text", "spec_model_missing", "metrics_binary", "metrics_nan",
                "metrics_list", "metrics_missing")
# A study.db that is not a ladder study: (folder, the key named for --storage, for --run-dir).
STUDY_BREAKS = (("text", "--storage", "--run-dir"), ("binary", "--storage", "--run-dir"), ("zero", "--study", "--study"),
                ("foreign", "--study", "--study"), ("folder", "--storage", "--run-dir"), ("empty", "--storage", "--run-dir"))
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
    (f"{RUN} --spec {{d}}/spec_micro_text.json --global-batch 16", "--micro-batch"),  # checked before the rule multiplies it
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
    # --- plan: the newest flags (--dataset-tokens, --calibration) ---
    (f"{PLAN} --tokens ''", "--tokens"),
    *[(f"{PLAN} --dataset-tokens {v}", "--dataset-tokens") for v in ("nan", "inf", "-1", "0", "abc", "1e30", "5Q", "''")],
    (f"{PLAN} --dataset-tokens", "--dataset-tokens"),
    *[(f"{CAL_PLAN} --calibration {{d}}/{name}", "--calibration") for name in (
        "no-cal.json", "empty.txt", "binary.bin", "list.json", "one.txt", "spec_unknown.json", "userdir",
        *(f"cal_{bad}.json" for bad in CAL_BREAKS))],
    # --- calibrate ---
    ("calibrate", "RUN_DIR"),
    ("calibrate {d}/no-such-folder", "RUN_DIR"),
    ("calibrate {d}/one.txt", "RUN_DIRS"),
    ("calibrate {d}/emptydir", "RUN_DIR"),
    ("calibrate {d}/userdir", "RUN_DIR"),
    *[(f"calibrate {{d}}/trials/{name}", "RUN_DIR") for name in TRIAL_BREAKS],
    ("calibrate {d}/trials/good -o {d}", "--out"),
    ("calibrate {d}/trials/good -o {d}/no-such-folder/c.json", "--out"),
    ("calibrate {d}/trials/good --timing sundial", "--timing"),
    ("calibrate {d}/trials/good --format xml", "--format"),
    ("calibrate {d}/trials/good --storage sqlite:///{d}/study.db", "RUN_DIR"),
    ("calibrate --storage sqlite:///{d}/ladder/study.db", "--storage"),  # trial folders not on this machine
    ("calibrate --storage sqlite:///{d}/ladder/study.db --study nope", "--study"),
    ("calibrate --storage sqlite:///{d}/missing.db", "--storage"),  # refused, not created (real-process test)
    ("scale --storage sqlite:///{d}/missing.db --target-model trainplan-tiny", "--storage"),
    ("calibrate --storage foo://nowhere", "--storage"),
    *[(f"calibrate --storage sqlite:///{{d}}/{name}/study.db", key) for name, key, _ in STUDY_BREAKS],
    # --- scale ---
    ("scale --target-model trainplan-tiny", "--run-dir"),
    *[(f"{SCALE} {flag}", flag.split()[0]) for flag in (
        "--budget nan", "--budget inf", "--budget -1", "--budget 0", "--budget abc", "--tolerance nan",
        "--tolerance inf", "--tolerance -0.1", "--tolerance 0", "--tolerance 5", "--tolerance abc", "--seq-len 0",
        "--seq-len 100000000000", "--seq-len x", "--max-gpus 0", "--max-gpus 10000000000000", "--max-gpus 2.5",
        "--tokens nan", "--tokens -5", "--tokens inf", "--tokens 1e30", "--tokens ''", "--dataset-tokens nan",
        "--dataset-tokens -1", "--dataset-tokens abc", "--dataset-tokens ''", "--gpu nope-gpu", "--optimize speed",
        "--hyperparams-from magic", "--format xml", "--report {d}", "--out {d}/one.txt", "--out {d}/userdir",
        "--study nope", "--storage sqlite:///{d}/ladder/study.db")],
    *[(f"scale --run-dir {{d}}/ladder --target-model {model}", "--target-model")
      for model in ("nope-model", "{d}/binary.bin", "{d}/list.json", "{d}/no-config.json")],
    ("scale --run-dir {d}/no-such-folder --target-model trainplan-tiny", "--run-dir"),
    ("scale --run-dir {d}/one.txt --target-model trainplan-tiny", "--run-dir"),
    ("scale --storage {d}/one.txt --target-model trainplan-tiny", "--storage"),
    ("scale --storage foo://nowhere --target-model trainplan-tiny", "--storage"),
    *[(f"scale --storage sqlite:///{{d}}/{name}/study.db --target-model trainplan-tiny", key) for name, key, _ in STUDY_BREAKS],
    *[(f"scale --run-dir {{d}}/{name} --target-model trainplan-tiny", key) for name, _, key in STUDY_BREAKS],
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
    (d / "spec_micro_text.json").write_text(json.dumps({"layout": {"micro_batch": "4"}}))
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
    (d / "binary.bin").write_bytes(bytes(range(256)) * 4)
    _write_calibration_inputs(d)
    _write_studies(d)


def _write_calibration_inputs(d: Path) -> None:
    """Real trial folders (the calibrate CLI test's synthetic measurements), one broken copy per
    TRIAL_BREAKS entry, and a real calibration fitted from them with one broken copy per CAL_BREAKS."""
    import copy
    import shutil

    from tests.cli.test_calibrate_cli import _trial_folders

    good = [Path(p) for p in _trial_folders(d / "trials" / "good", 12)]
    assert main(["calibrate", str(d / "trials" / "good"), "-o", str(d / "cal.json"), "--format", "json"]) == 0
    one = good[0]

    def broken(name: str, file: str, change) -> None:  # type: ignore[no-untyped-def]
        folder = d / "trials" / name
        shutil.copytree(one, folder)
        path = folder / file
        if isinstance(change, bytes) or change is None:
            path.unlink() if change is None else path.write_bytes(change)
            return
        path.write_text(change(path.read_text()) if callable(change) else change)

    def edit(key: str, value) -> object:  # type: ignore[no-untyped-def]
        return lambda text: json.dumps({**json.loads(text), key: value})

    for name, file, change in (
        ("result_binary", "result.json", bytes(range(256))), ("result_list", "result.json", "[1]"),
        ("result_nan_memory", "result.json", edit("peak_mem_bytes", float("nan"))),
        ("result_inf_memory", "result.json", edit("peak_mem_bytes", float("inf"))),
        ("result_negative_memory", "result.json", edit("peak_mem_bytes", -5)),
        ("result_no_memory", "result.json", edit("peak_mem_bytes", None)),
        ("result_no_device", "result.json", edit("device", None)), ("result_device_text", "result.json", edit("device", "cpu")),
        ("result_failed", "result.json", edit("status", "oom")), ("spec_list", "spec.json", "[]"),
        ("spec_layout_text", "spec.json", edit("layout", "x")),
        ("spec_micro_batch_text", "spec.json", lambda t: json.dumps({**json.loads(t), "layout": {
            **json.loads(t)["layout"], "micro_batch": "x"}})),
        ("spec_model_missing", "spec.json", edit("model", "/nonexistent/config.json")),
        ("metrics_binary", "metrics.jsonl", bytes(range(256))),
        ("metrics_nan", "metrics.jsonl", "".join(json.dumps({"step": i, "tokens": 100 * i, "tokens_per_s": float("nan")})
                                                 + "\n" for i in range(1, 7))),
        ("metrics_list", "metrics.jsonl", "[1, 2]\n" * 6), ("metrics_missing", "metrics.jsonl", None),
    ):
        broken(name, file, change)
    assert set(TRIAL_BREAKS) == {p.name for p in (d / "trials").iterdir()} - {"good"}
    cal = json.loads((d / "cal.json").read_text())
    for name, (path, value) in CAL_BREAKS.items():
        doc = copy.deepcopy(cal)
        *parents, last = path
        node = doc
        for key in parents:
            node = node[key]
        if value is None and last not in ("value",):
            del node[last]
        else:
            node[last] = value
        (d / f"cal_{name}.json").write_text(json.dumps(doc))


def _write_studies(d: Path) -> None:
    """A ladder study (the scale CLI test's), and study.db files that are not one (STUDY_BREAKS)."""
    import sqlite3

    import optuna

    from tests.cli.test_scale_cli import LRS, _loss
    from tests.search.test_ladder import make_study

    (d / "ladder").mkdir()
    make_study(d / "ladder" / "study.db", {"w64": 0, "w96": 0, "w128": 0}, loss_of=_loss, lrs=LRS[:3])
    for name in ("text", "binary", "zero", "foreign", "empty"):
        (d / name).mkdir()
    (d / "text" / "study.db").write_text("not a database\n")
    (d / "binary" / "study.db").write_bytes(bytes(range(256)) * 16)
    (d / "zero" / "study.db").write_bytes(b"")
    with sqlite3.connect(d / "foreign" / "study.db") as db:
        db.execute("create table notes (body text)")
    (d / "folder" / "study.db").mkdir(parents=True)
    optuna.create_study(study_name="empty", storage=f"sqlite:///{d / 'empty' / 'study.db'}")


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
    assert {"plan", "run", "search", "trials", "report", "gpus", "models", "calibrate", "scale"} <= verbs


@pytest.mark.parametrize("case", ["plan --model llama-2-7b --price nan", "run --data {d}/latin1.txt",
                                  "search --n-trials 0", "report --storage sqlite:///{d}/missing.db",
                                  "trials --storage {d}/missing.log",
                                  "plan --model trainplan-tiny --calibration {d}/cal_e_max_zero.json",
                                  "calibrate {d}/trials/metrics_binary", "scale --run-dir {d}/text --target-model gpt2"])
def test_bad_input_in_a_real_process(case: str, files: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TRAINPLAN_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run([sys.executable, "-m", "trainplan", *_argv(case, files)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (files / "missing.db").exists() and not (files / "missing.log").exists()


def test_scale_on_a_study_whose_trials_hold_no_ladder_config(files: Path, tmp_path: Path, no_processes: list,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # Completed trials whose "config" attribute is not the search's (another tool's study, or edited):
    # skipped as no ladder point, so scale names the study as too small instead of crashing.
    import optuna

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="other", storage=url)
    for config in ("oops", {"model": "trainplan-tiny", "layout": "x"}, None):
        trial = study.ask()
        if config is not None:
            trial.set_user_attr("config", config)
        study.tell(trial, 1.0)
    code = main(["scale", "--storage", url, "--target-model", "trainplan-tiny", "--out", str(tmp_path / "t")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--storage" in lines[0] and "too few trials" in lines[0], lines
