"""Measure the model-state bytes a real DeepSpeed engine holds on each rank (CPU, gloo).

Run by ``tests/planner/test_memory_states.py``, or by hand from the repo root::

    deepspeed --master_port 29611 --num_gpus 2 tests/planner/memory_probe.py \
        --out /tmp/probe --model '{"model_type": "llama", ...}' --cases 0:fp32,3:bf16

For every case (ZeRO stage : precision) it builds the engine from exactly the config the runner
uses (``trainplan.planner.deepspeed_config``), trains two steps, and in the second one records
every tensor storage the engine holds, each storage once, sorted into the planner's categories,
three times: before ZeRO-1/2 reduces the gradients at the end of backward (full low-precision
gradients), right after ``engine.backward``, and at the moment the wrapped torch optimizer runs (fp32 gradient partitions, master copy and moments all alive). The
model-state peak is the largest of the three. One JSON file per rank and case: ``<out>/z<stage>_<prec>_r<rank>.json``.

Categories, in the order a storage is claimed (a storage counts once, under its first category):
``weights`` (module parameters, ZeRO-3 ``ds_tensor`` partitions), ``gradients`` (``.grad`` of
module and optimizer parameters, and optimizer attributes whose name says grad), ``optimizer``
(the torch optimizer's ``state``), ``master_weights`` (the torch optimizer's parameters that are
not module parameters: DeepSpeed's fp32 partitions), ``buffers`` (everything else reachable from
the DeepSpeed optimizer: reduce/all-gather buckets). Meta tensors hold no memory and are skipped.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
from pathlib import Path
from typing import Any

CATEGORIES = ("weights", "gradients", "optimizer", "master_weights", "buffers")


def _walk(obj: Any, path: str, out: list[tuple[str, Any]], depth: int, seen: set[int]) -> None:
    """Collect (attribute path, tensor) for tensors reachable from DeepSpeed/torch.optim objects."""
    import torch

    if depth > 6 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        out.append((path, obj))
        if obj.grad is not None:
            out.append((path + ".grad", obj.grad))
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _walk(item, f"{path}[{i}]", out, depth + 1, seen)
    elif isinstance(obj, dict):
        for key, item in list(obj.items()):
            _walk(item, f"{path}[{key if isinstance(key, (str, int)) else type(key).__name__}]", out, depth + 1, seen)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith(("deepspeed", "torch.optim")):
        if isinstance(obj, torch.nn.Module):  # the engine's module is walked through its parameters
            return
        for key, item in vars(obj).items():
            _walk(item, f"{path}.{key}", out, depth + 1, seen)


def snapshot(engine: Any) -> dict[str, Any]:
    """Bytes per category of the unique storages ``engine`` holds right now."""
    claimed: dict[tuple[str, int], tuple[int, str, str]] = {}

    def claim(tensor: Any, category: str, path: str) -> None:
        if tensor is None or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        if storage.nbytes() == 0:
            return
        claimed.setdefault((tensor.device.type, storage.data_ptr()), (storage.nbytes(), category, path))

    module_ids = set()
    for name, param in engine.module.named_parameters():
        module_ids.add(id(param))
        claim(param.data, "weights", name)
        claim(getattr(param, "ds_tensor", None), "weights", name + ".ds_tensor")
    for name, param in engine.module.named_parameters():
        claim(param.grad, "gradients", name + ".grad")
    basic = engine.basic_optimizer
    for group in basic.param_groups:
        for param in group["params"]:
            claim(param.grad, "gradients", "optimizer.param.grad")
    for state in basic.state.values():
        for key, value in state.items():
            if hasattr(value, "untyped_storage"):
                claim(value, "optimizer", f"optimizer.state.{key}")
    for group in basic.param_groups:
        for param in group["params"]:
            if id(param) not in module_ids:
                claim(param, "master_weights", "optimizer.param")
    reachable: list[tuple[str, Any]] = []
    _walk(engine.optimizer, "opt", reachable, 0, set())
    for path, tensor in reachable:
        leaf = path.rsplit(".", 1)[-1]
        claim(tensor, "gradients" if "grad" in leaf and "bucket" not in leaf else "buffers", path)
    totals = {category: 0 for category in CATEGORIES}
    for nbytes, category, _ in claimed.values():
        totals[category] += nbytes
    buffers = sorted(((path, nbytes) for nbytes, cat, path in claimed.values() if cat == "buffers" and nbytes > 4096),
                     key=lambda item: -item[1])
    return {"bytes": totals, "buffers": buffers}


def run_case(model_cfg: dict[str, Any], zero: int, precision: str, world: int) -> dict[str, Any]:
    """Build one engine, train two steps, snapshot it inside the second optimizer step."""
    import deepspeed
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainplan.planner import Hyperparams, Layout, deepspeed_config

    layout = Layout(gpus=world, zero=zero, precision=precision, micro_batch=1, seq_len=32)
    # warmup_steps=1: DeepSpeed 0.19's WarmupCosineLR rejects warmup_num_steps=0.
    config = deepspeed_config(layout, Hyperparams(warmup_steps=1))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**model_cfg))
    engine, *_ = deepspeed.initialize(model=model, config=config, model_parameters=model.parameters())
    basic = engine.basic_optimizer
    inner_step = basic.step
    taken: list[dict[str, Any]] = []

    def step_and_snapshot(*args: Any, **kwargs: Any) -> Any:
        if len(taken) == 0 and calls[0] == 1:
            taken.append(snapshot(engine))
        calls[0] += 1
        return inner_step(*args, **kwargs)

    calls = [0]
    basic.step = step_and_snapshot
    tokens = torch.randint(0, model_cfg["vocab_size"], (1, 32), generator=torch.Generator().manual_seed(1))
    after_backward: dict[str, Any] = {}
    before_reduce: list[dict[str, Any]] = []
    reduce = getattr(engine.optimizer, "reduce_gradients", None)
    if reduce is not None:  # ZeRO-1/2: the full low-precision gradients exist until this call
        def snapshot_and_reduce(*args: Any, **kwargs: Any) -> Any:
            if calls[0] == 1 and not before_reduce:
                before_reduce.append(snapshot(engine))
            return reduce(*args, **kwargs)

        engine.optimizer.reduce_gradients = snapshot_and_reduce
    for step in range(2):
        loss = engine(input_ids=tokens, labels=tokens).loss
        engine.backward(loss)
        if step == 1:
            after_backward = snapshot(engine)
        engine.step()
    result = {"step": taken[0], "backward": after_backward, "before_reduce": before_reduce[0] if before_reduce else after_backward}
    result.update(zero=zero, precision=precision, world=world, optimizer=type(engine.optimizer).__name__,
                  params=sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in engine.module.parameters()),
                  loss=float(loss.detach()))
    if hasattr(engine, "destroy"):
        engine.destroy()
    del engine, model, basic
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", required=True, help="Hugging Face config as JSON")
    parser.add_argument("--cases", required=True, help="comma-separated stage:precision, e.g. 0:fp32,2:bf16")
    args, _ = parser.parse_known_args()  # the launcher adds --local_rank

    from trainplan.runners._dist import init_distributed

    init_distributed("gloo")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    args.out.mkdir(parents=True, exist_ok=True)
    for case in args.cases.split(","):
        stage, precision = case.split(":")
        result = run_case(json.loads(args.model), int(stage), precision, world)
        result["rank"] = rank
        (args.out / f"z{stage}_{precision}_r{rank}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
