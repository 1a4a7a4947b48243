"""Optuna plumbing against real storages: factories, storage rules, the exact budget under
concurrency, resume accounting of retried trials, and dead-worker reclaim."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from trainplan.search import budget_count, load_sweep, make_pruner, make_sampler, open_study, storage_url, sweep_from_dict
from trainplan.search._optuna import heartbeat_writer
from trainplan.search._study import _claim, reclaim_dead_local_trials, reclaim_silent_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(("kind", "cls"), [("tpe", optuna.samplers.TPESampler), ("gp", optuna.samplers.GPSampler),
                                           ("cmaes", optuna.samplers.CmaEsSampler), ("random", optuna.samplers.RandomSampler)])
def test_sampler_factory(kind: str, cls: type) -> None:
    assert isinstance(make_sampler(load_sweep(None, {"sampler.type": kind})), cls)


def test_grid_sampler_enumerates_the_choices() -> None:
    sweep = load_sweep(None, {"sampler.type": "grid", "space": {"global_batch": {"choices": [8, 16]},
                                                                "schedule": {"choices": ["cosine", "constant"]}}})
    study = optuna.create_study(sampler=make_sampler(sweep))
    from trainplan.search import suggest

    seen = set()
    for _ in range(4):
        trial = study.ask()
        seen.add(tuple(sorted(suggest(trial, sweep).items())))
        study.tell(trial, 1.0)
    assert len(seen) == 4


@pytest.mark.parametrize(("kind", "cls"), [("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
                                           ("hyperband", optuna.pruners.HyperbandPruner),
                                           ("median", optuna.pruners.MedianPruner), ("none", optuna.pruners.NopPruner)])
def test_pruner_factory(kind: str, cls: type) -> None:
    assert isinstance(_unguarded(make_pruner(load_sweep(None, {"pruner.type": kind}))), cls)


def _unguarded(pruner: optuna.pruners.BasePruner) -> optuna.pruners.BasePruner:
    return getattr(pruner, "wrapped", pruner)


def test_startup_trials_run_to_the_end_and_set_the_bar() -> None:
    # Rungs at 100 and 300 tokens (rf 3); the first two trials are guarded.
    sweep = load_sweep(None, {"pruner.type": "successive_halving", "pruner.min_resource": 100,
                              "pruner.n_startup_trials": 2})
    study = optuna.create_study(pruner=make_pruner(sweep))

    def pruned_at(curve: list[float]) -> int | None:
        trial = study.ask()
        for step, value in zip((100, 200, 300, 400), curve):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return step
        study.tell(trial, curve[-1])
        return None

    assert pruned_at([3.0, 2.8, 2.6, 2.5]) is None
    assert pruned_at([4.0, 3.9, 3.8, 3.7]) is None  # worse everywhere, but a start-up trial
    assert "completed_rung_1" in study.trials[1].system_attrs  # its rungs were still recorded
    assert pruned_at([3.5, 3.0, 2.9, 2.8]) == 100  # not the best 1/3 of three at the first rung
    assert pruned_at([2.9, 2.7, 2.5, 2.4]) is None  # the best at both rungs
    unguarded = make_pruner(load_sweep(None, {"pruner.n_startup_trials": 0}))
    assert isinstance(unguarded, optuna.pruners.SuccessiveHalvingPruner)  # no guard when none asked


def test_storage_rules(tmp_path: Path) -> None:
    assert storage_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/study.db"
    assert storage_url("postgresql://u@h/db", tmp_path) == "postgresql://u@h/db"
    assert storage_url("sweeps/s.log", tmp_path) == "sweeps/s.log"
    assert storage_url("my.db", tmp_path).startswith("sqlite:///") and storage_url("my.db", tmp_path).endswith("/my.db")


def _run_claims(sweep, run_dir: Path, threads: int) -> optuna.Study:
    study = open_study(sweep, run_dir)
    url = storage_url(sweep.storage, run_dir)

    def worker() -> None:
        while True:
            trial = _claim(study, sweep, url)
            if trial is None:
                return
            if trial is False:
                time.sleep(0.05)
                continue
            time.sleep(0.01)
            study.tell(trial, float(trial.number))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return study


@pytest.mark.parametrize("storage", [None, "journal.log"])
def test_concurrent_workers_never_exceed_n_trials(tmp_path: Path, storage: str | None) -> None:
    sweep = load_sweep(None, {"budget.n_trials": 7, "storage": str(tmp_path / storage) if storage else None,
                              "sampler.type": "random"})
    study = _run_claims(sweep, tmp_path, threads=4)
    trials = study.get_trials()
    assert len(trials) == 7 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # Running again (a resume) finds the budget spent and creates nothing.
    assert len(_run_claims(sweep, tmp_path, threads=2).get_trials()) == 7


def test_dead_local_worker_is_reclaimed_and_its_retry_keeps_the_budget(tmp_path: Path) -> None:
    sweep = load_sweep(None, {"budget.n_trials": 2, "sampler.type": "random"})
    study = open_study(sweep, tmp_path)
    done = study.ask()
    study.tell(done, 1.0)
    # A worker that died mid-trial: its pid is gone and its process group still runs.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # (It carries its trial's spec path, as a launcher does: only verified trial processes are ended.)
    from trainplan.search._guard import process_start_ticks

    trial_dir = tmp_path / "trials" / "trial-0001"
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--spec",
                               str(trial_dir / "spec.json")], start_new_session=True)
    running = study.ask()
    running.suggest_float("lr", 1e-4, 1e-2, log=True)
    running.set_user_attr("trial_dir", str(trial_dir))
    running.set_user_attr("worker", {"host": os.uname().nodename, "pid": dead.pid, "start": -1, "pgid": orphan.pid,
                                     "leader_start": process_start_ticks(orphan.pid)})
    assert reclaim_dead_local_trials(study, sweep) == [running.number]
    assert orphan.wait(timeout=10) is not None  # its process group was ended
    trials = study.get_trials()
    retry = trials[-1]
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == study.trials[running.number].params
    assert budget_count(trials) == 2  # the failed original and its retry use one slot
    # The retry is what the next claim returns, although the budget looks spent.
    url = storage_url(None, tmp_path)
    claimed = _claim(study, sweep, url)
    assert claimed is not None and claimed is not False and claimed.number == retry.number
    study.tell(claimed, 0.5)
    assert _claim(study, sweep, url) is None


def test_live_local_worker_is_left_alone(tmp_path: Path) -> None:
    from trainplan.search._guard import process_start_ticks

    sweep = load_sweep(None, {"sampler.type": "random"})
    study = open_study(sweep, tmp_path)
    trial = study.ask()
    trial.set_user_attr("worker", {"host": os.uname().nodename, "pid": os.getpid(),
                                   "start": process_start_ticks(os.getpid()), "pgid": None})
    assert reclaim_dead_local_trials(study, sweep) == []
    assert study.get_trials()[0].state == optuna.trial.TrialState.RUNNING


def test_journal_trials_beat_and_a_silent_remote_worker_is_retried(tmp_path: Path) -> None:
    # Optuna has no heartbeat for journal files; trials there write a wall-clock "beat" instead.
    sweep = load_sweep(None, {"storage": str(tmp_path / "study.log"), "sampler.type": "random", "budget.n_trials": 2})
    study = open_study(sweep, tmp_path)
    beat = heartbeat_writer(study._storage, sweep)
    silent, alive = study.ask(), study.ask()
    for trial in (silent, alive):
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        trial.set_user_attr("worker", {"host": "another-machine", "pid": 1, "start": 0, "pgid": 7})
        beat(trial._trial_id)
    beats = {t.number: t.user_attrs["beat"] for t in study.get_trials()}
    assert all(abs(b - time.time()) < 60 for b in beats.values())
    study._storage.set_trial_user_attr(alive._trial_id, "beat", beats[alive.number] + 25)  # still beating
    now = beats[silent.number] + 3 * sweep.heartbeat_s + 1  # silent for just over 3 heartbeats
    assert reclaim_silent_trials(study, sweep, now=now) == [silent.number]
    trials = study.get_trials()
    assert trials[silent.number].state == optuna.trial.TrialState.FAIL
    assert "another-machine went silent" in trials[silent.number].user_attrs["reason"]
    assert trials[alive.number].state == optuna.trial.TrialState.RUNNING
    retry = trials[-1]
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == trials[silent.number].params
    assert budget_count(trials) == 2
    assert reclaim_silent_trials(study, sweep, now=now) == []  # once only


def test_rdb_storages_keep_optunas_heartbeat(tmp_path: Path) -> None:
    sweep = load_sweep(None, {"sampler.type": "random"})
    study = open_study(sweep, tmp_path)  # SQLite
    trial = study.ask()
    trial.set_user_attr("worker", {"host": "another-machine", "pid": 1, "start": 0, "pgid": None})
    beat = heartbeat_writer(study._storage, sweep)
    beat(trial._trial_id)
    assert "beat" not in study.get_trials()[0].user_attrs  # Optuna's own heartbeat table instead
    assert reclaim_silent_trials(study, sweep, now=time.time() + 3600) == []  # fail_stale_trials' job


def test_a_study_with_other_objectives_is_refused(tmp_path: Path) -> None:
    from trainplan.errors import UsageError

    open_study(load_sweep(), tmp_path)
    raw = {"objectives": ["eval_loss", "gpu_hours"]}
    with pytest.raises(UsageError) as info:
        open_study(sweep_from_dict(raw), tmp_path)
    assert info.value.key == "objectives"


def test_each_local_worker_gets_its_own_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainplan.errors import UsageError
    from trainplan.search import worker_devices

    sweep = sweep_from_dict({"workers": 2, "hardware": {"gpu": "a100-80gb", "gpus_per_trial": 2}})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting is kept
    assert [worker_devices(i, sweep) for i in (0, 1)] == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert worker_devices(1, sweep) == {"CUDA_VISIBLE_DEVICES": "6,7"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    with pytest.raises(UsageError) as info:
        worker_devices(1, sweep)
    assert info.value.key == "--workers"
    assert worker_devices(0, sweep_from_dict({})) is None


def test_local_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each rank of each worker gets cores / (workers x ranks per trial) threads, at least one.
    from trainplan.search import worker_devices

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    sweep = sweep_from_dict({"workers": 2, "hardware": {"gpu": "a100-80gb", "gpus_per_trial": 2}})
    assert worker_devices(1, sweep)["OMP_NUM_THREADS"] == "4"
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert worker_devices(0, sweep_from_dict({"workers": 2}))["OMP_NUM_THREADS"] == "1"
    assert worker_devices(1, sweep)["OMP_NUM_THREADS"] == "1"  # never zero


def test_first_rung_is_a_quarter_of_the_trial_in_tokens() -> None:
    # The default trial evaluates 8 times over 262144 tokens: the first rung is at its second
    # evaluation (65536 tokens, a quarter of the run), whatever global batch a trial samples.
    pruner = _unguarded(make_pruner(load_sweep()))
    assert pruner._min_resource == 65536
    assert _unguarded(make_pruner(load_sweep(None, {"pruner.min_resource": 1000})))._min_resource == 1000
