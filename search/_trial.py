"""One Optuna trial, owned by the search: screen, launch, tail, prune, record, tell.

The trial processes never talk to the storage: this module launches the runner through the
``deepspeed`` launcher, tails ``metrics.jsonl``, reports eval loss against tokens seen (so trials
of different batch sizes compare at equal data), ends the whole process group when the pruner
says so, and stores the record (the user attributes listed in docs/protocol.md) with the trial.

State mapping (also the budget's): completed -> COMPLETE; pruned -> PRUNED; infeasible, oom and
diverged -> PRUNED with a violated constraint, so TPE and GP learn to avoid the region (Optuna
samplers ignore FAIL trials) and no loss of theirs is ever a "best"; crashed, terminated and
timeout -> FAIL (not the configuration's fault). Every state counts toward ``n_trials``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from trainplan.runners import TrialSpec
    from trainplan.search._guard import OrphanGuard
    from trainplan.search._sweep import SweepSpec

__all__ = ["run_trial_for", "screen"]

# A pruned trial trains on until its stop arrives: at ~16k tokens/s on the built-in task each
# 0.1 s of reaction costs ~1.6k tokens, so the metrics are read often; the /proc scan for CPU
# samples (a fallback, see cpu_seconds below) runs less often.
_POLL_S = 0.1
_CPU_SAMPLE_S = 0.5
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def screen(spec: TrialSpec, sweep: SweepSpec) -> dict[str, Any]:
    """The planner's verdict on ``spec`` for the sweep's GPU: ``fits``, ``memory_bytes``,
    ``capacity_bytes``, ``tokens_per_s`` (the ``estimate`` record) and the plan as JSON.

    When the planner cannot estimate the trial (a model family it does not model, a planner
    error) ``fits`` is None and ``plan["error"]`` (plan.json) says why: the trial runs unscreened,
    as the runner does.
    """
    from trainplan.planner import load_gpu

    gpu = load_gpu(sweep.hardware.gpu)
    if sweep.hardware.memory_gib is not None:
        # the sweep states the memory a trial has: it replaces the card's nvidia-smi figure too
        gpu = dataclasses.replace(gpu, memory_gib=sweep.hardware.memory_gib, usable_mib=None)
    try:
        from trainplan.planner import load_model, plan

        result = plan(load_model(spec.model), spec.layout, gpu, tokens=spec.total_tokens)
        # fits compares the nvidia-smi figure (memory.total) with the card's usable bytes; a trial
        # measures max_memory_allocated, so that estimate is kept beside it for the report.
        return {"fits": bool(result.fits), "memory_bytes": int(result.memory.total),
                "allocated_bytes": int(result.memory.allocated),
                "capacity_bytes": int(result.usable_bytes), "tokens_per_s": float(result.perf.tokens_per_s),
                "plan": result.to_dict()}
    except Exception as exc:  # noqa: BLE001 - an unscreened trial beats no trial; the reason is kept
        return {"fits": None, "memory_bytes": None, "allocated_bytes": None, "capacity_bytes": int(gpu.memory_bytes),
                "tokens_per_s": None, "plan": {"error": f"{type(exc).__name__}: {exc}"}}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _objective_values(sweep: SweepSpec, attrs: dict[str, Any], result: dict[str, Any]) -> list[float]:
    values = []
    for name in sweep.objectives:
        value = result.get("final_eval_loss") if name == "eval_loss" else attrs.get(name)
        if not _finite(value):
            raise ValueError(f"objective {name} is {value!r}")
        values.append(float(value))
    return values


def _record_base(trial: optuna.Trial, spec: TrialSpec | None, values: dict[str, Any], trial_dir: Path) -> None:
    trial.set_user_attr("trial_dir", str(trial_dir))
    config = {"params": values}
    if spec is not None:
        config.update(spec.to_dict())
    trial.set_user_attr("config", config)


def _tell_infeasible(study: optuna.Study, trial: optuna.Trial, reason: str, estimate: dict[str, Any] | None) -> str:
    import optuna

    trial.set_user_attr("status", "infeasible")
    trial.set_user_attr("reason", reason)
    for key in ("curve",):
        trial.set_user_attr(key, [])
    for key in ("tokens", "elapsed_s", "gpu_hours", "cpu_seconds"):
        trial.set_user_attr(key, 0)
    trial.set_user_attr("tokens_per_s", None)
    trial.set_user_attr("peak_mem_bytes", None)
    if estimate is not None:
        trial.set_user_attr("estimate", {k: estimate.get(k) for k in ("memory_bytes", "allocated_bytes", "tokens_per_s", "fits")})
        trial.set_constraint("memory", estimate["memory_bytes"] / estimate["capacity_bytes"] - 1.0)
    else:
        trial.set_constraint("memory", 1.0)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return "infeasible"


def run_trial_for(study: optuna.Study, trial: optuna.Trial, sweep: SweepSpec, run_dir: Path,
                  guard: OrphanGuard | None, stop: threading.Event, env: dict[str, str] | None = None) -> str:
    """Run ``trial`` to its end and tell the study; returns the trial's status. ``env`` is added
    to the launch environment (a worker's own ``CUDA_VISIBLE_DEVICES``)."""
    import optuna

    from trainplan.runners import free_port, launch_trial
    from trainplan.search._calibrate import calibrated_screen, current_calibration
    from trainplan.search._guard import process_start_ticks, session_cpu_ticks
    from trainplan.search._optuna import heartbeat_writer
    from trainplan.search._overfit import overfit_at
    from trainplan.search._records import curve_row, write_attrs
    from trainplan.search._space import resolve_trial, suggest

    trial_dir = run_dir / "trials" / f"trial-{trial.number:04d}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    # Who owns this trial, recorded before anything can die: a restart on this host reclaims it.
    worker = {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start_ticks(os.getpid()), "pgid": None}
    trial.set_user_attr("worker", worker)
    heartbeat = heartbeat_writer(study._storage, sweep)
    if heartbeat is not None:
        heartbeat(trial._trial_id)
    values = suggest(trial, sweep)
    try:
        spec = resolve_trial(sweep, values)
    except UsageError as exc:
        _record_base(trial, None, values, trial_dir)
        return _tell_infeasible(study, trial, f"invalid configuration: {exc}", None)
    _record_base(trial, spec, values, trial_dir)
    cal = current_calibration(sweep, run_dir)  # sweep key calibrate: true (search/_calibrate.py)
    estimate = calibrated_screen(spec, cal) if cal is not None else screen(spec, sweep)
    (trial_dir / "plan.json").write_text(json.dumps(estimate["plan"], indent=2) + "\n")
    trial.set_user_attr("estimate", {k: estimate.get(k) for k in ("memory_bytes", "allocated_bytes", "tokens_per_s", "fits")})
    if estimate["fits"] is False:
        spec.to_json(trial_dir / "spec.json")  # so the user can see what was rejected
        gib = 2**30
        reason = (f"planner: needs {estimate['memory_bytes'] / gib:.2f} GiB per GPU, "
                  f"{sweep.hardware.gpu if cal is None else cal.device['name'] + ' (calibrated, upper bound)'} "
                  f"has {estimate['capacity_bytes'] / gib:.2f} GiB")
        return _tell_infeasible(study, trial, reason, estimate)

    try:
        handle = launch_trial(spec, trial_dir, master_port=free_port(), env=env)
    except UsageError as exc:  # e.g. a data path the runner cannot read: no process started
        trial.set_user_attr("status", "crashed")
        trial.set_user_attr("reason", f"launch refused: {exc}")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return "crashed"
    pgid = handle.pid
    if guard is not None:
        guard.watch(pgid)
    # The launcher's start time too: a later search ends this group only if it is still this one.
    trial.set_user_attr("worker", {**worker, "pgid": pgid, "leader_start": process_start_ticks(pgid)})
    can_prune = len(sweep.objectives) == 1 and sweep.pruner.type != "none"
    curve: list[list[Any]] = []
    cpu: dict[int, int] = {}
    pruned = interrupted = overfit_stop = False
    overfit: dict[str, Any] | None = None  # search/_overfit.py: eval loss rising while train loss falls
    last_beat = last_sample = 0.0
    try:
        while True:
            finished = handle.poll() is not None
            if time.monotonic() - last_sample >= _CPU_SAMPLE_S:
                cpu.update(session_cpu_ticks([pgid]))
                last_sample = time.monotonic()
            for rec in handle.new_metrics():
                curve.append(curve_row(rec))
                loss = rec.get("eval_loss")
                # Not at the last evaluation: a rung falling there (e.g. reduction factor 2 from a
                # quarter) must not mark a trial that trained to the end as pruned.
                if can_prune and not pruned and _finite(loss) and 0 < (rec.get("tokens") or 0) < spec.total_tokens:
                    trial.report(float(loss), step=int(rec["tokens"]))
                    pruned = trial.should_prune()
                if overfit is None and _finite(loss):
                    overfit = overfit_at(curve, sweep.overfit.window)
            if overfit is not None and sweep.overfit.stop and not finished and not pruned:
                pruned = overfit_stop = True
            if pruned or finished:
                break
            if stop.is_set():
                interrupted = True
                break
            if heartbeat is not None and time.monotonic() - last_beat >= sweep.heartbeat_s:
                heartbeat(trial._trial_id)
                last_beat = time.monotonic()
            time.sleep(_POLL_S)
    finally:
        if handle.poll() is None:
            handle.stop(5.0)
        result = handle.finalize()
        if guard is not None:
            guard.release(pgid)
    cpu.update(session_cpu_ticks([pgid]))
    for rec in handle.new_metrics():  # the lines written after the last poll
        curve.append(curve_row(rec))
    status = "pruned" if pruned else result.get("status", "crashed")
    reason = result.get("reason", "")
    overfit = overfit or overfit_at(curve, sweep.overfit.window)
    trial.set_user_attr("overfit", overfit)
    if overfit_stop:
        reason = (f"stopped at {curve[-1][1] if curve else 0} tokens: overfitting since step {overfit['step']} (eval loss "
                  f"{overfit['eval_loss_from']:.4f} -> {overfit['eval_loss_to']:.4f} over {overfit['window']} evaluations "
                  f"while train loss fell)")
    elif pruned:
        reason = f"pruned at {curve[-1][1] if curve else 0} tokens: eval loss not among the best at this rung"
    if interrupted:
        status, reason = "terminated", "the search was interrupted; queued again for the next run"
    elapsed = float(result.get("elapsed_s") or 0.0)
    attrs = {
        "status": status, "reason": reason, "curve": curve,
        "tokens": int(result.get("tokens") or (curve[-1][1] if curve else 0) or 0),
        "tokens_per_s": result.get("tokens_per_s"), "peak_mem_bytes": result.get("peak_mem_bytes"),
        "elapsed_s": elapsed, "gpu_hours": elapsed * sweep.hardware.gpus_per_trial / 3600,
        # Two lower bounds of the trial's CPU time; the larger is kept. Sampling misses what a
        # process used after its last sample; the launcher's wait4 total misses ranks that a
        # stop killed before anyone waited for them. For a trial that ends by itself, it is exact.
        "cpu_seconds": max(sum(cpu.values()) / _CLK_TCK, handle.reaped_cpu_s or 0.0),
    }
    write_attrs(trial, attrs)
    ratio = estimate["memory_bytes"] / estimate["capacity_bytes"] - 1.0 if estimate["memory_bytes"] else 0.0
    # A measured OOM overrules the planner: the constraint is violated whatever it estimated.
    trial.set_constraint("memory", max(ratio, 0.05) if status == "oom" else ratio)
    trial.set_constraint("stable", 1.0 if status == "diverged" else 0.0)
    state = optuna.trial.TrialState
    if status == "completed":
        try:
            study.tell(trial, _objective_values(sweep, attrs, result))
        except ValueError as exc:
            trial.set_user_attr("status", "crashed")
            trial.set_user_attr("reason", f"completed without a usable objective: {exc}")
            study.tell(trial, state=state.FAIL)
            return "crashed"
    elif status in ("pruned", "oom", "diverged"):
        study.tell(trial, state=state.PRUNED)
    else:
        frozen = study.tell(trial, state=state.FAIL)
        if interrupted:
            # Not the configuration's fault: queue it again, so the next run of the same command
            # retries it in this budget slot (as for a dead worker).
            from optuna.storages import RetryHeartbeatStaleTrialCallback

            RetryHeartbeatStaleTrialCallback(max_retry=sweep.max_retries)(study, frozen)
    return status
