"""The search calibrating as it goes (search/_calibrate.py): refit from a real Optuna study's trials,
screening against the calibrated memory's upper bound, and the sweep key's validation."""

from __future__ import annotations

import optuna
import pytest

from tests.cli.test_calibrate_cli import _trial_folders
from trainplan.errors import UsageError
from trainplan.runners import TrialSpec
from trainplan.search import sweep_from_dict
from trainplan.search._calibrate import calibrated_screen, current_calibration, refit_calibration


def _study(dirs: list[str]) -> optuna.Study:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for d in dirs:
        study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"trial_dir": d, "status": "completed"}))
    return study


def test_refit_writes_the_run_folder_calibration_and_screening_uses_its_upper_bound(tmp_path) -> None:
    sweep = sweep_from_dict({"calibrate": True})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert refit_calibration(_study(_trial_folders(tmp_path / "a", 3)), sweep, run_dir) is None  # too few yet
    assert current_calibration(sweep, run_dir) is None
    cal = refit_calibration(_study(_trial_folders(tmp_path / "b", 12)), sweep, run_dir)
    assert cal is not None and (run_dir / "calibration.json").is_file()
    assert current_calibration(sweep, run_dir).speed["e_max"] == cal.speed["e_max"]
    assert current_calibration(sweep_from_dict({}), run_dir) is None  # not asked for

    small = calibrated_screen(TrialSpec(layout={"micro_batch": 8, "seq_len": 128}), cal)
    c = small["plan"]["calibrated"]["memory_bytes"]
    assert small["fits"] is True and small["memory_bytes"] == int(c["high"]) > c["value"]
    assert small["capacity_bytes"] == 24 * 2**30
    huge = calibrated_screen(TrialSpec(layout={"micro_batch": 4096, "seq_len": 1024}), cal)
    assert huge["fits"] is False and huge["plan"]["calibrated"]["outside_data"]


def test_calibrate_key_must_be_a_bool() -> None:
    with pytest.raises(UsageError, match="calibrate: must be true or false"):
        sweep_from_dict({"calibrate": "yes"})
