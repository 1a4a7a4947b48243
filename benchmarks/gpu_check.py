"""The planner and the runner measured on one GPU, in one short call (issue 14).

Run, from the repository root:

    python benchmarks/gpu_check.py --budget-s 420     # a GPU: writes benchmarks/results/gpu_check.{md,json}
    bash benchmarks/gpu_check.sh                      # the same on a bare device machine (set-up included)
    python benchmarks/gpu_check.py --plan-only        # the grid and the planner's numbers, no trial
    python benchmarks/gpu_check.py --smoke --out DIR  # CPU: a 2-rank and a 1-rank trial of a tiny model

Each row is one real ``trainplan run`` trial (its folder keeps the standard files: spec.json,
ds_config.json, cmd.txt, metrics.jsonl, result.json, logs) of a Llama-style model with 32k
vocabulary, bf16, SDPA, sequences of 2048 byte tokens, on one GPU, a few dozen steps. It records the
measured peak ``max_memory_allocated`` and ``max_memory_reserved``, tokens/s of the median step and
its MFU (model FLOPs 6N + 12·L·d·s over the GPU's dense bf16 peak), beside ``trainplan plan``'s
estimate for the same layout on the same GPU, and the errors in % (estimate - measured) / measured.
Targets (issue 14): memory within 10% of max_memory_allocated and tokens/s within 15% on every row;
MFU >= 40% for the largest model at its best micro-batch, and the runner >= 0.95x a plain PyTorch
loop (bf16 autocast, fused AdamW) of the same model and batch on the same GPU.

The grid is ordered most informative first. Before each trial the time it needs is predicted; one
that cannot finish inside ``--budget-s`` is listed as not run, and every trial gets the time left as
its ``--timeout``. The results are rewritten after every trial, so a check cut short keeps what it
measured. A trial that runs out of memory is a row with status ``oom``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GIB = 2**30

# Llama-style models from ~125M to ~1.5B parameters (untied 32k vocabulary, heads of 64-128, SwiGLU
# at ~2.7 d); the widths and depths of GPT-3's small/medium/XL rows and of TinyLlama.
_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000,
          "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
MODELS: dict[str, dict[str, Any]] = {
    "llama-125m": _LLAMA | dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                num_attention_heads=12, num_key_value_heads=12),
    "llama-350m": _LLAMA | dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24,
                                num_attention_heads=16, num_key_value_heads=16),
    "llama-760m": _LLAMA | dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=24,
                                num_attention_heads=12, num_key_value_heads=12),
    "llama-1.5b": _LLAMA | dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=28,
                                num_attention_heads=16, num_key_value_heads=16),
}


@dataclass(frozen=True, slots=True)
class Case:
    """One row of the grid: a model and a one-node layout."""

    model: str
    zero: int
    micro_batch: int
    checkpointing: str = "none"
    gpus: int = 1

    @property
    def name(self) -> str:
        ckpt = "" if self.checkpointing == "none" else f"-ckpt{self.checkpointing}"
        return f"{self.model}-z{self.zero}-mb{self.micro_batch}{ckpt}-{self.gpus}r"


PLAIN = "plain-loop"
"""Grid marker: the plain PyTorch loop, on the largest model's fastest ZeRO-0 trial so far."""

GPU_GRID: list[Case | str] = [
    Case("llama-1.5b", 0, 4),           # the runner-speed target's model; pays the one-time op build
    Case("llama-125m", 0, 16),          # the other end of the size range
    Case("llama-1.5b", 0, 2),
    PLAIN,                              # runner vs plain PyTorch, same model and batch
    Case("llama-760m", 0, 8),
    Case("llama-350m", 0, 16),
    Case("llama-1.5b", 3, 4),           # ZeRO stages on one GPU: the engine's own buffers
    Case("llama-1.5b", 0, 16, "full"),  # checkpointing: activations of one block, recompute
    Case("llama-1.5b", 2, 4),
    Case("llama-1.5b", 0, 8),           # near the planner's fit boundary on 80 GB
    Case("llama-125m", 1, 8),
    Case("llama-350m", 2, 8, "full"),
    Case("llama-760m", 3, 4, "full"),
    Case("llama-1.5b", 1, 4),
    Case("llama-125m", 3, 16),
    Case("llama-760m", 0, 16),
    Case("llama-1.5b", 0, 1),
]
GPU_SEQ_LEN, GPU_STEPS, GPU_LR = 2048, 30, 3e-4

SMOKE_GRID: list[Case | str] = [
    Case("trainplan-tiny", 2, 4, gpus=2),  # two CPU ranks (gloo)
    Case("trainplan-tiny", 0, 4, "full"),  # one rank; checkpointing reaches the model
    PLAIN,
]
SMOKE_SEQ_LEN, SMOKE_STEPS, SMOKE_LR = 64, 8, 3e-3

WARM_STEPS = 2
"""Steps left out of the median: the first ones grow the allocator and pick kernels."""
RESERVE_S = 15.0
"""Budget kept back for writing the results after the last trial."""


def say(text: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# Environment ------------------------------------------------------------------------------------
_PROBE = """
import json, torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(json.dumps({"kind": "cuda", "name": p.name, "memory_bytes": p.total_memory,
                      "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                      "cuda": torch.version.cuda}))
else:
    print(json.dumps({"kind": "cpu"}))
"""


def device_info() -> dict[str, Any]:
    """The device, asked in a child process: this one must hold no GPU memory while trials run."""
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, cwd="/")
    info = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"kind": "cpu"}
    if info["kind"] == "cuda":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else None
    else:
        cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                    if line.startswith("model name")), platform.processor())
        info.update(name=cpu, cores=os.cpu_count())
    return info


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def catalog_gpu(info: dict[str, Any]) -> str | None:
    """The planner's catalog key for the device ``torch`` reports (None where none matches)."""
    name = info.get("name", "").upper()
    if info.get("kind") != "cuda":
        return None
    if "H200" in name:
        return "h200"
    if "H100" in name:
        return "h100-pcie" if "PCIE" in name else "h100-sxm"  # "NVIDIA H100 80GB HBM3" is the SXM5 part
    if "A100" in name:
        return "a100-80gb" if info.get("memory_bytes", 0) > 50 * GIB else "a100-40gb"
    for key in ("b200", "l40s", "l4", "a10"):
        if key.upper() in name.replace(" ", ""):
            return key
    return None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "transformers", "deepspeed"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    from trainplan import __version__

    out["trainplan"] = __version__  # gpu_check.sh imports the tree uninstalled
    rev = os.environ.get("GPU_CHECK_REV")
    if not rev:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                 capture_output=True, text=True, timeout=10)
            rev = git.stdout.strip() or None
    out["trainplan_commit"] = rev
    return out


# Planner ----------------------------------------------------------------------------------------
def model_ref(model: str, work: Path) -> str:
    """A preset name, or the path of the grid model's config.json (written once into ``work``)."""
    if model not in MODELS:
        return model
    path = work / "models" / model / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(MODELS[model], indent=2) + "\n")
    return str(path)


def spec_for(case: Case, ref: str, *, smoke: bool, steps: int, gpu: str | None) -> Any:
    from trainplan.runners import TrialSpec

    seq_len = SMOKE_SEQ_LEN if smoke else GPU_SEQ_LEN
    layout = dict(gpus=case.gpus, zero=case.zero, micro_batch=case.micro_batch, grad_accum=1, seq_len=seq_len,
                  precision="fp32" if smoke else "bf16", checkpointing=case.checkpointing, attention="sdpa")
    eval_tokens = seq_len * case.micro_batch  # one held-out batch: start and end losses, no more
    needed = steps * case.micro_batch * case.gpus * seq_len + eval_tokens
    return TrialSpec(model=ref, steps=steps, layout=layout, eval_every=steps, eval_tokens=eval_tokens,
                     max_data_bytes=max(300_000, int(1.2 * needed)), log_every=1, gpu=gpu,
                     hyperparams=dict(lr=SMOKE_LR if smoke else GPU_LR, warmup_steps=min(5, steps)))


def estimate(spec: Any, gpu: str | None) -> dict[str, Any]:
    """``trainplan plan``'s numbers for the trial's layout on ``gpu`` (memory only without one)."""
    from trainplan.planner import count_parameters, estimate_memory, flops, load_gpu, load_model, plan

    model = load_model(spec.model)
    lay = spec.layout
    fl = flops(model, lay.seq_len, lay.tokens_per_step, lay.checkpointing)
    out: dict[str, Any] = {"parameters": count_parameters(model).total, "tokens_per_step": lay.tokens_per_step,
                           "model_flops_per_token": fl.model_per_token, "hardware_flops_per_token": fl.hardware_per_token}
    if gpu is None:
        mem = estimate_memory(model, lay)
        return out | {"memory_bytes": mem.total, "allocated_bytes": mem.allocated, "reserved_bytes": mem.reserved,
                      "peak_phase": mem.peak_phase, "memory": mem.breakdown(), "fits": None, "tokens_per_s": None,
                      "step_time_s": None, "mfu": None, "peak_flops": None}
    p = plan(model, lay, load_gpu(gpu), tokens=spec.total_tokens).to_dict()
    m = p["memory"]
    return out | {"memory_bytes": m["per_gpu"]["total_bytes"], "allocated_bytes": m["max_allocated_bytes"],
                  "reserved_bytes": m["reserved_bytes"], "peak_phase": m.get("peak_phase"), "memory": m["per_gpu"],
                  "fits": p["fits"], "tokens_per_s": p["throughput"]["tokens_per_s"],
                  "step_time_s": p["throughput"]["step_time_s"], "mfu": p["throughput"]["mfu"],
                  "peak_flops": p["gpu"]["peak_tflops"] * 1e12}


# Trials -----------------------------------------------------------------------------------------
def _run_group(argv: list[str], *, timeout: float, log: Path) -> int | None:
    """Run ``argv`` in its own session, output to ``log``; past ``timeout`` kill the whole group (None).

    It runs in the log's folder, not the repository root: where trainplan is not installed but
    imported through PYTHONPATH (gpu_check.sh), ``python -m`` would find the root's own
    ``trainplan/`` first, which lacks the subpackages that pyproject.toml maps into it."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise


def median_step(records: list[dict[str, Any]]) -> tuple[float | None, int]:
    """Median tokens/s over the timed steps (after the warm-up, without the evaluated last step)."""
    timed = [r["tokens_per_s"] for r in records
             if r.get("step", 0) > WARM_STEPS and r.get("eval_loss") is None and r.get("tokens_per_s")]
    if len(timed) < 3:
        timed = [r["tokens_per_s"] for r in records if r.get("step", 0) >= 1 and r.get("tokens_per_s")]
    return (statistics.median(timed) if timed else None), len(timed)


def pct(est: float | None, measured: float | None) -> float | None:
    return None if not est or not measured else 100.0 * (est - measured) / measured


def run_case(case: Case, spec: Any, est: dict[str, Any], work: Path, timeout: float) -> dict[str, Any]:
    """One ``trainplan run`` trial; its row with what the trial folder holds."""
    trial_dir = work / "trials" / case.name
    spec_in = work / "specs" / f"{case.name}.json"
    spec_in.parent.mkdir(parents=True, exist_ok=True)
    spec.with_(timeout_s=round(max(timeout, 10.0), 1)).to_json(spec_in)
    argv = [sys.executable, "-m", "trainplan", "run", "--spec", str(spec_in), "--out", str(trial_dir), "--quiet"]
    t0 = time.perf_counter()
    code = _run_group(argv, timeout=timeout + 60, log=work / "logs" / f"{case.name}.log")
    wall = time.perf_counter() - t0
    try:
        result = json.loads((trial_dir / "result.json").read_text())
    except (OSError, ValueError):
        last = [line for line in _read(str(work / "logs" / f"{case.name}.log")).splitlines() if line.strip()][-1:]
        result = {"status": "timeout" if code is None else "crashed", "exit_code": code,
                  "reason": f"trainplan run ended (exit {code}) without a result.json: {' '.join(last)[:300]}"}
    records = []
    with contextlib.suppress(OSError):
        records = [json.loads(line) for line in (trial_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    tps, timed = median_step(records)
    row = measured_row(case, est, tps, timed, result)
    row.update(trial_dir=str(trial_dir.relative_to(work)), wall_s=round(wall, 2), result=result,
               spec=_json_or_none(trial_dir / "spec.json"))
    return row


def measured_row(case: Case, est: dict[str, Any], tps: float | None, timed: int,
                 result: dict[str, Any]) -> dict[str, Any]:
    alloc, reserved = result.get("peak_mem_bytes"), result.get("peak_reserved_bytes")
    if result.get("status") == "oom":
        alloc = reserved = tps = None  # a peak before the failed allocation says nothing
    flops_per_s = tps * est["model_flops_per_token"] if tps else None
    mfu = flops_per_s / est["peak_flops"] if flops_per_s and est.get("peak_flops") else None
    return {
        "name": case.name, "model": case.model, "gpus": case.gpus, "zero": case.zero,
        "micro_batch": case.micro_batch, "checkpointing": case.checkpointing,
        "status": result.get("status"), "reason": result.get("reason", ""),
        "measured": {"peak_allocated_bytes": alloc, "peak_reserved_bytes": reserved, "tokens_per_s": tps,
                     "steps_timed": timed, "step_time_s": (est["tokens_per_step"] / tps) if tps else None,
                     "mfu": mfu, "startup_s": result.get("startup_s"), "loop_s": result.get("elapsed_s")},
        "estimate": est,
        # like for like: the planner's max_memory_allocated against the measured one, its reserved
        # bytes against max_memory_reserved (a record from before these keys compares the total)
        "error_pct": {"memory_vs_allocated": pct(est.get("allocated_bytes", est["memory_bytes"]), alloc),
                      "memory_vs_reserved": pct(est.get("reserved_bytes", est["memory_bytes"]), reserved),
                      "tokens_per_s": pct(est.get("tokens_per_s"), tps)},
    }


def _json_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# The plain PyTorch loop -------------------------------------------------------------------------
def plain_loop(spec_path: Path, out: Path) -> None:
    """The runner's model, data and batch in a plain loop: bf16 autocast on a GPU, torch's (fused)
    AdamW, the same clipping and checkpointing; per-step tokens/s, synchronised every step as the
    runner's loss all-reduce does. Mirrors benchmarks/runner_overhead.py's loop."""
    import torch

    from trainplan.runners import TrialSpec
    from trainplan.runners._data import load_corpus
    from trainplan.runners._loop import _param_groups, build_model

    spec = TrialSpec.from_json(spec_path)
    lay, hp = spec.layout, spec.hyperparams
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    record: dict[str, Any] = {"spec": str(spec_path), "micro_batch": lay.micro_batch, "steps": spec.steps,
                              "checkpointing": lay.checkpointing, "device": device.type,
                              "optimizer": f"torch.optim.AdamW(fused={cuda})",
                              "precision": "bf16 autocast, fp32 weights" if cuda and lay.mixed else "fp32"}
    try:
        torch.manual_seed(spec.seed)
        corpus = load_corpus(data=spec.data, text_key=spec.text_key, tokenizer=spec.tokenizer,
                             max_bytes=spec.max_data_bytes, eval_tokens=spec.eval_tokens, seq_len=lay.seq_len,
                             seed=spec.seed)
        model = build_model(spec, corpus.vocab_size).to(device)
        if lay.checkpointing == "full":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        opt = torch.optim.AdamW(_param_groups(model, hp.weight_decay), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps,
                                **({"fused": True} if cuda else {}))
        amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda and lay.mixed else contextlib.nullcontext
        micro, accum = lay.micro_batch, lay.grad_accum
        speeds = []
        for step in range(1, spec.steps + 1):
            t0 = time.perf_counter()
            for k in range(accum):
                ids = corpus.train_batch(((step - 1) * accum + k) * micro, micro).to(device)
                with amp():
                    loss = model(input_ids=ids, labels=ids).loss
                (loss / accum).backward()
            if hp.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            float(loss.detach())  # one host sync per step
            speeds.append(micro * accum * lay.seq_len / (time.perf_counter() - t0))
        timed = speeds[WARM_STEPS:] if len(speeds) > WARM_STEPS + 2 else speeds
        record.update(status="completed", tokens_per_s=statistics.median(timed), steps_timed=len(timed),
                      tokens_per_s_per_step=speeds)
    except torch.cuda.OutOfMemoryError as exc:
        record.update(status="oom", reason=str(exc)[:500])
    if cuda:
        record.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(device),
                      peak_reserved_bytes=torch.cuda.max_memory_reserved(device))
    out.write_text(json.dumps(record, indent=2) + "\n")


def run_plain(rows: list[dict[str, Any]], largest: str, work: Path, timeout: float,
              peak_flops: float | None) -> dict[str, Any] | None:
    """The plain loop on the fastest completed ZeRO-0 trial of ``largest`` (the next if it runs out of
    memory); None when there is no such trial yet."""
    candidates = sorted((r for r in rows if r["model"] == largest and r["zero"] == 0 and r["gpus"] == 1
                         and r["status"] == "completed" and r["measured"]["tokens_per_s"]),
                        key=lambda r: -r["measured"]["tokens_per_s"])
    if not candidates:
        return None
    deadline = time.perf_counter() + timeout
    out: dict[str, Any] = {}
    for row in candidates:
        left = deadline - time.perf_counter()
        if left < 20:
            break
        path = work / "plain" / f"{row['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        say(f"plain PyTorch loop on {row['name']} ({left:.0f} s left)")
        code = _run_group([sys.executable, str(Path(__file__).resolve()), "--plain-loop", str(work / row["trial_dir"] / "spec.json"),
                           "--plain-out", str(path)], timeout=left, log=work / "logs" / f"plain-{row['name']}.log")
        out = _json_or_none(path) or {"status": "timeout" if code is None else "crashed", "exit_code": code,
                                      "reason": f"see logs/plain-{row['name']}.log"}
        out["runner_trial"] = row["name"]
        if out["status"] == "completed":
            runner, plain = row["measured"]["tokens_per_s"], out["tokens_per_s"]
            fpt = row["estimate"]["model_flops_per_token"]
            out.update(runner_tokens_per_s=runner, ratio=runner / plain,
                       runner_mfu=row["measured"]["mfu"], mfu=plain * fpt / peak_flops if peak_flops else None)
            break
        if out["status"] != "oom":
            break
    return out


# Report -----------------------------------------------------------------------------------------
def _f(value: float | None, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    return "—" if value is None else format(value / scale, fmt) + unit


def summary(report: dict[str, Any]) -> dict[str, Any]:
    done = [r for r in report["trials"] if r["status"] == "completed"]
    mem = [r["error_pct"]["memory_vs_allocated"] for r in done if r["error_pct"]["memory_vs_allocated"] is not None]
    tps = [r["error_pct"]["tokens_per_s"] for r in done if r["error_pct"]["tokens_per_s"] is not None]
    largest = report["largest_model"]
    big = [r for r in done if r["model"] == largest and r["measured"]["mfu"] is not None]
    best = max(big, key=lambda r: r["measured"]["mfu"], default=None)
    plain = report.get("plain_loop") or {}
    return {
        "trials": len(report["trials"]), "completed": len(done),
        "oom": sum(r["status"] == "oom" for r in report["trials"]),
        "memory_within_10pct": f"{sum(abs(e) <= 10 for e in mem)}/{len(mem)}",
        "memory_worst_pct": max(mem, key=abs, default=None),
        "tokens_per_s_within_15pct": f"{sum(abs(e) <= 15 for e in tps)}/{len(tps)}",
        "tokens_per_s_worst_pct": max(tps, key=abs, default=None),
        "largest_best_mfu": best["measured"]["mfu"] if best else None,
        "largest_best_trial": best["name"] if best else None,
        "runner_vs_plain": plain.get("ratio"),
    }


def render(report: dict[str, Any]) -> str:
    dev, ver, s = report["device"], report["versions"], report["summary"]
    smoke = report["smoke"]
    title = "GPU check, CPU smoke run" if smoke else "GPU check"
    lines = [
        f"# {title} (benchmarks/gpu_check.py)", "",
        f"device: {dev.get('name')} ({dev.get('kind')}"
        + (f", {dev['memory_bytes'] / GIB:.1f} GiB, compute {dev.get('capability')}, {dev.get('sms')} SMs, "
           f"driver {dev.get('driver')}, CUDA {dev.get('cuda')}" if dev.get("kind") == "cuda" else f", {dev.get('cores')} cores")
        + f"); planner GPU: {report['gpu'] or 'none (memory only)'}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()),
        f"run: {report['started']}, {report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget; "
        f"{report['steps']} steps per trial, sequences of {report['seq_len']} tokens, "
        f"{'fp32' if smoke else 'bf16'}, SDPA; tokens/s of the median step after {WARM_STEPS} warm-up steps",
        "",
    ]
    if smoke:
        lines += ["CPU smoke run: measured memory is the rank's peak allocated bytes (the CPU's allocation "
                  "counter, docs/protocol.md; no reserved figure) and there is no tokens/s estimate or MFU without a GPU.", ""]
    lines += [
        "| trial | model | params | ZeRO | mb | ckpt | ranks | status | alloc GiB | plan alloc GiB | alloc err % "
        "| reserved GiB | plan reserved GiB | reserved err % | tok/s | plan tok/s | tok/s err % | MFU % | plan MFU % "
        "| start-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["trials"]:
        m, e, err = r["measured"], r["estimate"], r["error_pct"]
        status = r["status"] if r["status"] != "oom" else "**oom**"
        lines.append(
            f"| {r['name']} | {r['model']} | {_f(e.get('parameters'), '.3g', 1e9)}B | {r['zero']} | {r['micro_batch']} "
            f"| {r['checkpointing']} | {r['gpus']} | {status} | {_f(m['peak_allocated_bytes'], '.2f', GIB)} "
            f"| {_f(e.get('allocated_bytes', e['memory_bytes']), '.2f', GIB)} | {_f(err['memory_vs_allocated'], '+.1f')} "
            f"| {_f(m['peak_reserved_bytes'], '.2f', GIB)} | {_f(e.get('reserved_bytes', e['memory_bytes']), '.2f', GIB)} "
            f"| {_f(err['memory_vs_reserved'], '+.1f')} | {_f(m['tokens_per_s'], ',.0f')} "
            f"| {_f(e.get('tokens_per_s'), ',.0f')} | {_f(err['tokens_per_s'], '+.1f')} "
            f"| {_f(m['mfu'], '.1f', 0.01)} | {_f(e.get('mfu'), '.1f', 0.01)} | {_f(m['startup_s'], '.1f')} |")
    for r in report["trials"]:
        if r["status"] not in ("completed", "oom") and r.get("reason"):
            lines.append(f"\n{r['name']}: {r['status']}: {r['reason'][:300]}")
    for r in report["trials"]:
        if r["status"] == "oom" or (r["estimate"].get("fits") is False and r["status"] == "completed"):
            lines.append(f"\n{r['name']}: {r['status']}; the planner said it "
                         f"{'fits' if r['estimate'].get('fits') else 'does not fit'} "
                         f"({r['estimate']['memory_bytes'] / GIB:.1f} GiB estimated).")
    if report["not_run"]:
        lines += ["", "Not run (time budget, or after two crashes in a row): " + ", ".join(report["not_run"]) + "."]
    plain = report.get("plain_loop")
    lines += ["", "| target | result | met |", "|---|---|---|"]
    lines.append(f"| planner memory within 10% of max_memory_allocated, every completed row | "
                 f"{s['memory_within_10pct']} (worst {_f(s['memory_worst_pct'], '+.1f', unit=' %')}) | "
                 f"{_met(s['memory_within_10pct'])} |")
    lines.append(f"| planner tokens/s within 15%, every completed row | {s['tokens_per_s_within_15pct']} "
                 f"(worst {_f(s['tokens_per_s_worst_pct'], '+.1f', unit=' %')}) | {_met(s['tokens_per_s_within_15pct'])} |")
    best = s["largest_best_mfu"]
    lines.append(f"| runner MFU >= 40%, {report['largest_model']} at its best micro-batch | "
                 f"{_f(best, '.1f', 0.01, ' %')} ({s['largest_best_trial'] or 'no completed trial with an MFU'}) | "
                 f"{'—' if best is None else ('yes' if best >= 0.40 else 'no')} |")
    ratio = s["runner_vs_plain"]
    if plain and plain.get("status") == "completed":
        text = (f"{ratio:.3f}x ({plain['runner_tokens_per_s']:,.0f} vs {plain['tokens_per_s']:,.0f} tok/s, "
                f"{plain['runner_trial']}; plain loop MFU {_f(plain.get('mfu'), '.1f', 0.01, ' %')})")
    else:
        text = f"not measured ({(plain or {}).get('status', 'no completed ZeRO-0 trial of the largest model')})"
    lines.append(f"| runner tokens/s >= 0.95x plain PyTorch, same model and batch | {text} | "
                 f"{'—' if ratio is None else ('yes' if ratio >= 0.95 else 'no')} |")
    how = f"{plain['precision']}, {plain['optimizer']}" if plain and plain.get("precision") else "bf16 autocast"
    if report.get("replanned"):
        rp = report["replanned"]
        lines += ["", f"Estimates: the planner at {rp['trainplan_commit']} ({rp['at']}, `--replan`), on the measured "
                  f"rows of the run above; the estimates the run itself recorded (planner at "
                  f"{ver.get('trainplan_commit')}) are each trial's `estimate_at_run` in the JSON file. "
                  + (rp.get("note") or "")]
    lines += ["", f"Errors are (estimate - measured) / measured. The plain loop ({how}, the same model, data, batch, clipping and "
              "checkpointing, one host sync per step) runs in a child "
              "process of this script on the same device, right after the trials it is compared with, so that "
              "this process holds no GPU memory while trials run. The full record of every trial (its "
              "result.json and spec.json, the planner's terms) is the JSON file beside this one."]
    return "\n".join(lines) + "\n"


def _met(fraction: str) -> str:
    done, total = fraction.split("/")
    return "—" if total == "0" else ("yes" if done == total else "no")


def write(report: dict[str, Any], out: Path, started: float | None) -> None:
    """The report's JSON and table into ``out`` (each written whole); ``started``: the check's start, for
    its wall time (None: keep the recorded one)."""
    if started is not None:
        report["wall_s"] = time.perf_counter() - started
    report["summary"] = summary(report)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("gpu_check.json", json.dumps(report, indent=1) + "\n"), ("gpu_check.md", render(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def replan(path: Path, out: Path, note: str = "") -> int:
    """Re-estimate the measured rows of a GPU check with this tree's planner (no GPU needed): the
    measurements stay, each row's estimate is replaced (the run's own moves to ``estimate_at_run``),
    and the errors, summary and table are recomputed."""
    import tempfile

    from trainplan.runners import TrialSpec

    report = _read_report(path, "--replan")
    if isinstance(report, str):
        say(report)
        return 2
    models = Path(tempfile.mkdtemp(prefix="gpu-check-replan-"))
    for name, cfg in report["models"].items():
        (models / name).mkdir()
        (models / name / "config.json").write_text(json.dumps(cfg))
    for i, row in enumerate(report["trials"]):
        if row.get("spec") is None:
            continue
        spec = TrialSpec.from_dict({**row["spec"], "model": str(models / row["model"] / "config.json")})
        est = estimate(spec, report["gpu"])
        m, case = row["measured"], Case(row["model"], row["zero"], row["micro_batch"], row["checkpointing"], row["gpus"])
        new = measured_row(case, est, m["tokens_per_s"], m["steps_timed"], row["result"])
        new["measured"] = m  # as measured (an oom row's figures included)
        report["trials"][i] = {**row, **new, "estimate_at_run": row.get("estimate_at_run", row["estimate"])}
    report["replanned"] = {"trainplan_commit": versions()["trainplan_commit"],
                           "at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "note": note}
    write(report, out, None)
    print(render(report))
    return 0


def _read_report(path: Path, flag: str) -> dict[str, Any] | str:
    """A gpu_check.json written by this script, or a one-line reason naming ``flag`` why it is not."""
    try:
        report = json.loads(path.read_text())
        for key in ("device", "versions", "trials", "started", "budget_s", "work_dir", "models", "gpu"):
            report[key]  # noqa: B018 (present)
        report["device"].get("name"), list(report["trials"]), report["models"].items()  # noqa: B018 (shapes)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{flag} {path}: not a gpu_check.json ({type(err).__name__}: {err})"
    return report


def _previous(path: Path, dev: dict[str, Any]) -> dict[str, Any] | str:
    """An earlier call's report to continue, or why it cannot be (another device or stack)."""
    prev = _read_report(path, "--continue")
    if isinstance(prev, str):
        return prev
    name, ver = prev["device"].get("name"), prev["versions"]
    if name != dev.get("name"):
        return f"--continue {path}: measured on {name}, this device is {dev.get('name')}"
    now = versions()
    changed = [k for k in ("torch", "deepspeed", "transformers") if ver.get(k) != now.get(k)]
    if changed:
        return f"--continue {path}: measured with other versions of {', '.join(changed)}"
    return prev


# Main -------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU: the tiny model's 2-rank and 1-rank trials")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget for the whole check")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.md/.json [benchmarks/results; smoke: --work]")
    parser.add_argument("--work", type=Path, help="folder for trial folders and logs [runs/gpu-check-<time>]")
    parser.add_argument("--steps", type=int, help=f"steps per trial [{GPU_STEPS}; smoke {SMOKE_STEPS}]")
    parser.add_argument("--gpu", help="planner catalog GPU [detected from the device]")
    parser.add_argument("--plan-only", action="store_true", help="print the grid and the planner's numbers; run nothing")
    parser.add_argument("--continue", dest="previous", type=Path, metavar="JSON",
                        help="a gpu_check.json of an earlier call on the same device and versions: keep its rows "
                             "and run only the grid's rows it lacks (the 15-minute device time comes in pieces)")
    parser.add_argument("--replan", type=Path, metavar="JSON",
                        help="no GPU: the estimates of this planner for the measured rows of a gpu_check.json "
                             "(the run's own kept as estimate_at_run); writes gpu_check.md/.json to --out")
    parser.add_argument("--note", default="", help="with --replan: a sentence for the table (what changed, and whether "
                                                   "these rows were in view when it changed)")
    parser.add_argument("--plain-loop", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plain-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        plain_loop(args.plain_loop, args.plain_out)
        return 0

    if args.replan:
        return replan(args.replan, (args.out or RESULTS).resolve(), args.note)
    started = time.perf_counter()
    deadline = started + args.budget_s
    if args.plan_only:
        import tempfile

        args.work = Path(tempfile.mkdtemp(prefix="gpu-check-plan-"))
    work = (args.work or ROOT / "runs" / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out = (args.out or (work if args.smoke else RESULTS)).resolve()
    if args.smoke and out == RESULTS.resolve():
        parser.error("--smoke must not write over the committed GPU results; pass another --out")
    for sub in ("logs", "trials"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    steps = args.steps or (SMOKE_STEPS if args.smoke else GPU_STEPS)
    grid = SMOKE_GRID if args.smoke else GPU_GRID
    dev = {"kind": "cpu", "name": "not probed (--plan-only)"} if args.plan_only else device_info()
    gpu = args.gpu or catalog_gpu(dev)
    if args.plan_only and not args.smoke:
        gpu = gpu or "h100-sxm"
    if dev["kind"] != "cuda" and not args.smoke and not args.plan_only:
        say("no CUDA device: run with --smoke on a CPU")
        return 2
    if dev["kind"] == "cuda" and gpu is None:
        say(f"{dev['name']} is not in the planner's GPU catalog: pass --gpu")
        return 2
    previous = _previous(args.previous, dev) if args.previous else None
    if isinstance(previous, str):
        say(previous)
        return 2
    cases = [c for c in grid if isinstance(c, Case)]
    from trainplan.planner import load_model

    hf_configs = {m: dict(load_model(model_ref(m, work)).hf_config) for m in {c.model for c in cases}}
    largest = max(hf_configs, key=lambda m: estimate(spec_for(Case(m, 0, 1), model_ref(m, work), smoke=args.smoke,
                                                              steps=steps, gpu=gpu), gpu)["parameters"])
    report: dict[str, Any] = {
        "kind": "measured", "schema": "trainplan.gpu_check/1", "smoke": args.smoke, "device": dev, "gpu": gpu,
        "versions": versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "budget_s": args.budget_s,
        "steps": steps, "seq_len": SMOKE_SEQ_LEN if args.smoke else GPU_SEQ_LEN, "warm_steps": WARM_STEPS,
        "largest_model": largest, "models": hf_configs,
        "work_dir": str(work), "trials": [], "not_run": [], "plain_loop": None,
    }
    report["calls"] = [{"started": report["started"], "budget_s": args.budget_s, "work_dir": str(work),
                                 "trainplan_commit": report["versions"].get("trainplan_commit")}]
    pending = list(grid)
    if previous:  # its rows first; this call runs the rest of the grid in the grid's order
        report["trials"], report["plain_loop"] = previous["trials"], previous.get("plain_loop")
        report["calls"] = previous.get("calls") or [{"started": previous["started"], "budget_s": previous["budget_s"],
                                                     "work_dir": previous["work_dir"]}]
        report["calls"].append({"started": report["started"], "budget_s": args.budget_s, "work_dir": str(work),
                                 "trainplan_commit": report["versions"].get("trainplan_commit")})
        done = {r["name"] for r in report["trials"] if r["status"] != "crashed"}
        pending = [c for c in grid if (c == PLAIN and not report["plain_loop"]) or (isinstance(c, Case) and c.name not in done)]
        report["trials"] = [r for r in report["trials"] if r["name"] in done]
        say(f"continuing {args.previous}: {len(done)} rows kept, {len(pending)} left")
    say(f"device {dev.get('name')} -> planner GPU {gpu}; {len(cases)} trials of {steps} steps, budget {args.budget_s:.0f} s")
    from trainplan.runners import ops_compiled

    # Seconds a trial spends outside its training loop; the first launch in an environment also
    # JIT-builds DeepSpeed's Adam op. Afterwards, the last trial's figure.
    built = ops_compiled()
    overhead = 20.0 if built else (150.0 if dev["kind"] == "cuda" else 120.0)
    crashes = 0  # in a row: a broken set-up (say, an op that does not build) fails every trial alike
    while pending:
        item = pending.pop(0)
        left = deadline - time.perf_counter() - RESERVE_S
        if item == PLAIN:
            if args.plan_only:
                continue
            big = [r for r in report["trials"] if r["model"] == largest and r["status"] == "completed"]
            # No launcher and no engine: imports, data, model and the steps.
            guess = 20 + steps * max((r["measured"]["step_time_s"] or 0) for r in big) * 2 if big else 0
            nxt = next((i for i, c in enumerate(pending) if isinstance(c, Case) and c.model == largest), None)
            if not big and nxt is not None:
                pending.insert(nxt + 1, PLAIN)  # after the next trial of the largest model
                continue
            if big and guess <= left:
                report["plain_loop"] = run_plain(report["trials"], largest, work, left, report.get("peak_flops"))
            else:
                report["not_run"].append(PLAIN)
            write(report, out, started)
            continue
        assert isinstance(item, Case)
        if crashes >= 2:
            report["not_run"].append(item.name)
            continue
        spec = spec_for(item, model_ref(item.model, work), smoke=args.smoke, steps=steps, gpu=gpu)
        est = estimate(spec, gpu)
        report["peak_flops"] = est.get("peak_flops")
        if args.plan_only:
            print(f"{item.name:32s} {est['memory_bytes'] / GIB:7.2f} GiB  fits {est['fits']}  "
                  f"{_f(est.get('tokens_per_s'), ',.0f'):>9s} tok/s  step {_f(est.get('step_time_s'), '.3f')} s")
            continue
        step_guess = est.get("step_time_s") or 0.5
        predicted = overhead + steps * step_guess * 1.5
        if predicted > left:
            say(f"{item.name}: not run, predicted {predicted:.0f} s > {left:.0f} s left")
            report["not_run"].append(item.name)
            continue
        say(f"{item.name}: running (predicted {predicted:.0f} s, {left:.0f} s left)")
        row = run_case(item, spec, est, work, timeout=left)
        report["trials"].append(row)
        m = row["measured"]
        say(f"{item.name}: {row['status']}, {_f(m['peak_allocated_bytes'], '.2f', GIB)} GiB, "
            f"{_f(m['tokens_per_s'], ',.0f')} tok/s, wall {row['wall_s']:.0f} s")
        crashes = crashes + 1 if row["status"] == "crashed" else 0
        if crashes == 2:
            say("two trials in a row crashed: the rest are not run (see their stderr.log)")
        if not built:  # that trial paid for the build; the next one will not
            built, overhead = True, 30.0 if dev["kind"] == "cuda" else 12.0
        elif row["result"].get("elapsed_s") is not None:
            overhead = max(10.0, row["wall_s"] - row["result"]["elapsed_s"])
        write(report, out, started)
    if args.plan_only:
        return 0
    write(report, out, started)
    print(render(report))
    say(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}; trial folders under {work / 'trials'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
