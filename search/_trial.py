"""One Optuna trial, owned by the search: prepare, launch, follow, record, tell.

The trial processes never talk to the storage: the search prepares and screens the trial
(search/_prepare.py), launches the runner through the ``deepspeed`` launcher, follows it
(search/_follow.py: tails ``metrics.jsonl``, reports eval loss against tokens seen so trials of
different batch sizes compare at equal data, ends the whole process group when the pruner says
so), then records it here, through the one trial record of search/_records.py (the user attributes
listed in docs/protocol.md).

State mapping (also the budget's): completed -> COMPLETE; pruned -> PRUNED; infeasible, oom and
diverged -> PRUNED with a violated constraint, so TPE and GP learn to avoid the region (Optuna
samplers ignore FAIL trials) and no loss of theirs is ever a "best"; crashed, terminated and
timeout -> FAIL (not the configuration's fault). Every state counts toward ``n_trials``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError
from trainplan.search._follow import Followed, finite, follow_trial
from trainplan.search._optuna import heartbeat_writer
from trainplan.search._prepare import Prepared, prepare_trial, screen
from trainplan.search._records import TrialOutcome, write_estimate, write_overfit, write_status, write_worker

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from trainplan.search._guard import OrphanGuard
    from trainplan.search._sweep import SweepSpec

__all__ = ["record_trial", "run_trial_for", "screen"]


def run_trial_for(study: optuna.Study, trial: optuna.Trial, sweep: SweepSpec, run_dir: Path,
                  guard: OrphanGuard | None, stop: threading.Event, env: dict[str, str] | None = None) -> str:
    """Run ``trial`` to its end and tell the study; returns the trial's status. ``env`` is added
    to the launch environment (a worker's own GPUs and share of the cores, ``worker_devices``)."""
    import trainplan.runners as runners  # looked up here: tests stand a fake launcher in
    from trainplan.search._guard import process_start_ticks  # where used: see search/_follow.py

    heartbeat = heartbeat_writer(study._storage, sweep)
    if heartbeat is not None:
        heartbeat(trial._trial_id)
    prepared = prepare_trial(trial, sweep, run_dir)
    if prepared.rejected is not None:
        return _tell_infeasible(study, trial, prepared.rejected, prepared.estimate)
    assert prepared.spec is not None and prepared.estimate is not None
    try:
        handle = runners.launch_trial(prepared.spec, prepared.trial_dir, master_port=runners.free_port(), env=env)
    except UsageError as exc:  # e.g. a data path the runner cannot read: no process started
        return _tell_failed(study, trial, f"launch refused: {exc}")
    if guard is not None:
        guard.watch(handle.pid)
    # The launcher's start time too: a later search ends this group only if it is still this one.
    write_worker(trial, {**prepared.worker, "pgid": handle.pid, "leader_start": process_start_ticks(handle.pid)})
    followed = follow_trial(handle, trial, sweep, prepared.spec, guard, stop, heartbeat)
    return record_trial(study, trial, sweep, prepared, followed)


def _tell_infeasible(study: optuna.Study, trial: optuna.Trial, reason: str, estimate: dict[str, Any] | None) -> str:
    import optuna

    TrialOutcome.infeasible(reason).write(trial)
    if estimate is not None:
        write_estimate(trial, estimate)
        trial.set_constraint("memory", estimate["memory_bytes"] / estimate["capacity_bytes"] - 1.0)
    else:
        trial.set_constraint("memory", 1.0)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return "infeasible"


def _tell_failed(study: optuna.Study, trial: optuna.Trial, reason: str) -> str:
    import optuna

    write_status(trial, "crashed", reason)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return "crashed"


def _outcome(sweep: SweepSpec, followed: Followed) -> TrialOutcome:
    """The measured record of a trial the search launched and followed to its end."""
    result, curve, overfit = followed.result, followed.curve, followed.overfit
    status = "pruned" if followed.pruned else result.get("status", "crashed")
    reason = result.get("reason", "")
    at = curve[-1][1] if curve else 0
    if followed.overfit_stop and overfit is not None:
        reason = (f"stopped at {at} tokens: overfitting since step {overfit['step']} (eval loss "
                  f"{overfit['eval_loss_from']:.4f} -> {overfit['eval_loss_to']:.4f} over {overfit['window']} evaluations "
                  f"while train loss fell)")
    elif followed.pruned:
        reason = f"pruned at {at} tokens: eval loss not among the best at this rung"
    if followed.interrupted:
        status, reason = "terminated", "the search was interrupted; queued again for the next run"
    elapsed = float(result.get("elapsed_s") or 0.0)
    return TrialOutcome(status=status, reason=reason, curve=curve, tokens=int(result.get("tokens") or at or 0),
                        tokens_per_s=result.get("tokens_per_s"), peak_mem_bytes=result.get("peak_mem_bytes"),
                        elapsed_s=elapsed, gpu_hours=elapsed * sweep.hardware.gpus_per_trial / 3600,
                        cpu_seconds=followed.cpu_seconds)


def _objective_values(sweep: SweepSpec, outcome: TrialOutcome, result: dict[str, Any]) -> list[float]:
    values = []
    for name in sweep.objectives:
        value = result.get("final_eval_loss") if name == "eval_loss" else getattr(outcome, name, None)
        if not finite(value):
            raise ValueError(f"objective {name} is {value!r}")
        values.append(float(value))
    return values


def record_trial(study: optuna.Study, trial: optuna.Trial, sweep: SweepSpec, prepared: Prepared,
                 followed: Followed) -> str:
    """Store what the trial measured, set its constraints and tell the study; returns its status."""
    import optuna

    outcome = _outcome(sweep, followed)
    write_overfit(trial, followed.overfit)
    outcome.write(trial)
    estimate = prepared.estimate or {}
    ratio = estimate["memory_bytes"] / estimate["capacity_bytes"] - 1.0 if estimate.get("memory_bytes") else 0.0
    # A measured OOM overrules the planner: the constraint is violated whatever it estimated.
    trial.set_constraint("memory", max(ratio, 0.05) if outcome.status == "oom" else ratio)
    trial.set_constraint("stable", 1.0 if outcome.status == "diverged" else 0.0)
    state = optuna.trial.TrialState
    if outcome.status == "completed":
        try:
            study.tell(trial, _objective_values(sweep, outcome, followed.result))
        except ValueError as exc:
            return _tell_failed(study, trial, f"completed without a usable objective: {exc}")
    elif outcome.status in ("pruned", "oom", "diverged"):
        study.tell(trial, state=state.PRUNED)
    else:
        frozen = study.tell(trial, state=state.FAIL)
        if followed.interrupted:
            # Not the configuration's fault: queue it again, so the next run of the same command
            # retries it in this budget slot (as for a dead worker).
            from optuna.storages import RetryHeartbeatStaleTrialCallback

            RetryHeartbeatStaleTrialCallback(max_retry=sweep.max_retries)(study, frozen)
    return outcome.status
