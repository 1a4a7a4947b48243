"""What does `trainplan run` cost beyond training? Two ratios against peers measured in this run.

Run: ``.venv/bin/python benchmarks/runner_overhead.py [--steps 60] [--out benchmarks/results/runner_overhead.md]``

(a) Overhead: the wall time `trainplan run` spends outside its training loop (CLI, trial folder,
    launcher, rank start-up, data, model, engine, step-0 eval, result) against
    - B0, a bare ``deepspeed --num_gpus 1`` launch of an empty script (the launcher's own cost), and
    - B1, a bare launch of a script that only imports torch, transformers and deepspeed and builds
      and ``deepspeed.initialize``-s the same model (the least any DeepSpeed HF trial must pay).
    Target (issue 3): at most 1.3x the bare launcher's overhead.
(b) Throughput: the runner's training tokens/s (result.json, first interval excluded) against a
    plain PyTorch loop (torch.optim.AdamW) on the same model, batch and thread count, run before
    and after the trial so both see the same machine load. Target: at least 0.9 on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEEPSPEED = str(Path(sys.executable).with_name("deepspeed"))
TRAINPLAN = str(Path(sys.executable).with_name("trainplan"))

INIT_ONLY = """
import deepspeed, torch
deepspeed.init_distributed()
from transformers import AutoConfig, AutoModelForCausalLM
from trainplan.planner import load_model
from trainplan.runners import TrialSpec
model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**dict(load_model("trainplan-tiny").hf_config)))
deepspeed.initialize(model=model, model_parameters=model.parameters(), config=TrialSpec().ds_config())
torch.distributed.destroy_process_group()  # without it the rank lingers ~100 s at exit (gloo)
"""


def _wall(argv: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _bare(script: str, work: Path, repeats: int) -> float:
    path = work / f"bare_{abs(hash(script))}.py"
    path.write_text(script)
    return statistics.median(_wall([DEEPSPEED, "--num_gpus", "1", str(path)], work) for _ in range(repeats))


def plain_loop(steps: int, micro_batch: int = 16, seq_len: int = 128) -> list[float]:
    """Per-step tokens/s of a plain PyTorch loop on the default task's model, batch and data path."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainplan.planner import load_model
    from trainplan.runners._data import load_corpus

    torch.manual_seed(0)
    corpus = load_corpus(data="stdlib", text_key="text", tokenizer=None, max_bytes=4_000_000,
                         eval_tokens=16384, seq_len=seq_len, seed=0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**dict(load_model("trainplan-tiny").hf_config)),
                                             attn_implementation="sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    speeds = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        ids = corpus.train_batch(step * micro_batch, micro_batch)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        speeds.append(micro_batch * seq_len / (time.perf_counter() - t0))
    return speeds[1:]  # the first step pays for warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="launches per bare peer (median)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "runner_overhead.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runner_overhead_"))
    load_start = os.getloadavg()[0]

    plain_before = plain_loop(args.steps)
    t0 = time.perf_counter()
    subprocess.run([TRAINPLAN, "run", "--quiet", "--steps", str(args.steps), "--eval-every", str(args.steps),
                    "--out", str(work / "trial")], check=True, cwd=work, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    plain_after = plain_loop(args.steps)
    result = json.loads((work / "trial" / "result.json").read_text())
    records = [json.loads(line) for line in (work / "trial" / "metrics.jsonl").read_text().splitlines()]
    # Per-step speeds of the runner, bar step 0 (no training), step 1 (warm-up) and eval steps.
    runner = [r["tokens_per_s"] for r in records if r["step"] > 1 and r["eval_loss"] is None]
    loop_s = result["elapsed_s"]
    overhead = wall - loop_s
    b0 = _bare("", work, args.repeats)
    b1 = _bare(INIT_ONLY, work, args.repeats)
    plain = plain_before + plain_after
    # The cores are shared with other jobs whose load comes in bursts: the median step and the
    # fastest step (the machine's uncontended speed) are steadier than a mean over the run.
    median_ratio = statistics.median(runner) / statistics.median(plain)
    best_ratio = max(runner) / max(plain)

    lines = [
        "# runner overhead (benchmarks/runner_overhead.py)",
        "",
        f"machine: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPU cores, "
        f"no GPU; {args.steps} steps of 16 x 128 byte tokens, trainplan-tiny, 1 rank, fp32, ZeRO 0; "
        f"load average at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f} (the cores are shared)",
        "",
        "| quantity | seconds |",
        "|---|---|",
        f"| `trainplan run` wall | {wall:.2f} |",
        f"| of which training loop (result.json elapsed_s) | {loop_s:.2f} |",
        f"| runner overhead R = wall - loop | {overhead:.2f} |",
        f"| of which rank start-up to first step (result.json startup_s) | {result.get('startup_s') or float('nan'):.2f} |",
        f"| B0 bare launcher, empty script (median of {args.repeats}) | {b0:.2f} |",
        f"| B1 bare launcher, imports + deepspeed.initialize only (median of {args.repeats}) | {b1:.2f} |",
        "",
        "| ratio | value | target |",
        "|---|---|---|",
        f"| (a) R / B0 | {overhead / b0:.2f} | <= 1.3 |",
        f"| (a') R / B1 | {overhead / b1:.2f} | <= 1.3 |",
        f"| (b) runner / plain PyTorch tokens/s, median step | {median_ratio:.2f} | >= 0.9 |",
        f"| (b') runner / plain PyTorch tokens/s, fastest step | {best_ratio:.2f} | >= 0.9 |",
        "",
        f"runner steps: median {statistics.median(runner):,.0f}, fastest {max(runner):,.0f} tok/s "
        f"(result.json mean {result['tokens_per_s']:,.0f}); plain PyTorch steps (run before and after the trial): "
        f"median {statistics.median(plain):,.0f}, fastest {max(plain):,.0f} tok/s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
