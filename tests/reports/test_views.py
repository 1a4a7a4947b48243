"""Data functions of every view, on studies built with ``optuna.trial.create_trial``."""

from __future__ import annotations

import optuna
import pytest
from tests.reports.conftest import attrs, build_study
from optuna.trial import TrialState

from trainplan.reports import (
    get_curves_info,
    get_curves_plot,
    get_estimate_info,
    get_history_info,
    get_importance_info,
    get_pareto_info,
    get_scatter_info,
    get_table_info,
    get_timeline_info,
    read_study,
)


def test_trials_are_classified_by_the_search_status(study: optuna.Study) -> None:
    record = read_study(study)
    assert [(t.number, t.category, t.status) for t in record.trials] == [
        (0, "completed", "completed"), (1, "best", "completed"), (2, "pruned", "pruned"), (3, "failed", "oom"),
        (4, "failed", "diverged"), (5, "infeasible", "infeasible"), (6, "completed", "completed"),
        (7, "completed", "completed")]
    assert record.best is not None and record.best.number == 1
    assert record.objective_names == ("eval_loss",)
    assert record.log_params == ("lr",) and record.categorical_params == ("global_batch",)
    assert record.trials[3].reason == "CUDA out of memory at step 1"


def test_history_keeps_a_running_best_over_completed_trials(study: optuna.Study) -> None:
    info = get_history_info(read_study(study))
    assert info.numbers == [0, 1, 6, 7]
    assert info.best_so_far[0] == info.values[0]
    assert info.best_so_far[1:] == [info.values[1]] * 3  # trial 1 stays best
    assert info.categories == ["completed", "best", "completed", "completed"]


def test_curves_rank_pruned_trials_and_filter_top_k(study: optuna.Study) -> None:
    info = get_curves_info(read_study(study), top_k=2)
    by_number = {s.number: s for s in info.series}
    assert set(by_number) == {0, 1, 2, 4, 6, 7}  # trials 3 and 5 never logged a point
    assert by_number[1].rank == 0 and by_number[2].rank is not None  # pruned trials rank by eval loss
    assert by_number[4].rank is None  # diverged before its first eval
    assert by_number[0].eval_index == [9, 19, 29, 39] and len(by_number[0].eval_loss) == 4
    assert info.visible(2) == [0, 1] and len(info.visible(None)) == 6
    rows = info.rows()
    assert len(rows) == sum(len(s.step) for s in info.series)
    assert {"trial", "step", "tokens", "elapsed_s", "train_loss", "eval_loss"} <= set(rows[0])


def test_curves_plot_starts_with_the_top_k_and_offers_the_filter(study: optuna.Study) -> None:
    info = get_curves_info(read_study(study), top_k=2)
    fig = get_curves_plot(info)
    per_trial = [t for t in fig.data if t.meta is not None]
    assert len(per_trial) == 2 * len(info.series)  # eval and train curve per trial
    shown = sorted({t.meta for t in per_trial if t.visible})
    assert shown == [0, 1]
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == ["all trials", "top 2", "top 5"] and fig.layout.updatemenus[0].active == 1
    # x is steps; customdata carries tokens and seconds for the page's axis selector
    eval0 = next(t for t in per_trial if t.meta == 0 and t.yaxis in (None, "y"))
    assert list(eval0.x) == [10, 20, 30, 40] and eval0.customdata.shape == (4, 2)
    assert eval0.customdata[0][0] == pytest.approx(10 * 2048)


def test_importances_need_two_completed_trials(storage: str) -> None:
    study = optuna.create_study(storage=storage, study_name="one")
    study.add_trial(optuna.trial.create_trial(
        value=1.0, params={"lr": 1e-3}, distributions={"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1)}))
    info = get_importance_info(study)
    assert info.importances == {} and "2 completed" in info.message


def test_importances_sum_to_one(study: optuna.Study) -> None:
    info = get_importance_info(study)
    assert info.message == ""
    assert set(info.importances) == {"lr", "global_batch", "weight_decay"}
    assert sum(info.importances.values()) == pytest.approx(1.0)


def test_scatter_and_timeline(study: optuna.Study) -> None:
    record = read_study(study)
    scatter = get_scatter_info(record)
    assert scatter.params == ["global_batch", "lr", "weight_decay"] and scatter.log_params == ["lr"]
    assert scatter.columns["global_batch"] == [16, 8, 32, 32]
    timeline = get_timeline_info(record)
    assert timeline.numbers == list(range(8)) and timeline.duration_s == [25.0] * 8
    assert timeline.start[0] == "2026-01-01T12:00:00"


def test_pareto_front_only_for_multi_objective(storage: str, tmp_path) -> None:
    single = read_study(build_study(storage, "single"))
    assert get_pareto_info(single) is None
    multi = read_study(build_study(storage, "multi", multi=True))
    assert multi.multi_objective and multi.objective_names == ("eval_loss", "gpu_hours")
    info = get_pareto_info(multi)
    assert info is not None and info.objectives == ("eval_loss", "gpu_hours")
    front = {n for n, f in zip(info.numbers, info.on_front) if f}
    # 1 has the lowest loss, 7 the fewest GPU-hours (half the steps); 0 and 6 are dominated by 1.
    assert front == {1, 7}
    assert {t.number for t in multi.trials if t.category == "best"} == {1, 7}


def test_table_and_estimates(study: optuna.Study) -> None:
    record = read_study(study)
    table = get_table_info(record)
    assert [r["status"] for r in table.rows][:6] == ["completed", "completed", "pruned", "oom", "diverged", "infeasible"]
    assert table.rows[5]["reason"].startswith("planner:") and table.rows[0]["duration_s"] == 25.0
    assert table.rows[1]["eval_loss"] == pytest.approx(record.best.values[0])
    est = get_estimate_info(record)
    row = next(r for r in est.rows if r["trial"] == 0)
    assert row["est_memory_bytes"] == 60e6 and row["peak_mem_bytes"] == 66e6


def test_running_trials_and_missing_attributes_are_tolerated(storage: str) -> None:
    study = optuna.create_study(storage=storage, study_name="bare")
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))  # no attributes at all
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={**attrs("pruned", final=2.0),
                                                                                   "curve": [[1, "x", None, 1, 2]]}))
    record = read_study(study)
    assert [t.category for t in record.trials] == ["failed", "pruned"]
    assert record.best is None and record.trials[0].status == "crashed"
    assert record.trials[1].curve[0].tokens == 0.0  # a malformed number is dropped, not fatal


def test_parallel_coordinates_title_clears_the_axis_labels(study: optuna.Study) -> None:
    # plotly.js draws parcoords axis labels above the plot area: with the report's 50 px top
    # margin they were drawn over the title.
    from trainplan.reports import get_parallel_plot

    fig = get_parallel_plot(get_scatter_info(read_study(study)))
    assert fig.layout.title.text.startswith("Parallel coordinates")
    assert fig.layout.margin.t >= 100 and fig.data[0].type == "parcoords"


def test_the_report_and_the_trial_table_read_study_attributes_alike(storage: str) -> None:
    # One reading (search/_records.py:read_study_attrs): a two-objective study trainplan did not
    # create names its objectives value_0, value_1 in the report and in `trainplan trials` alike
    # (the report said value, value_1), and attributes of the wrong shape fall back to defaults.
    from trainplan.search._records import trial_records

    study = optuna.create_study(storage=storage, study_name="foreign", directions=["minimize", "minimize"])
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[1.0, 2.0]))
    study.set_user_attr("objectives", {"names": ["eval_loss"]})  # one name for two objectives
    study.set_user_attr("sweep", ["not", "a", "mapping"])
    study.set_user_attr("command", "trainplan search")
    record = read_study(study)
    assert record.objective_names == ("value_0", "value_1")
    assert {"value_0", "value_1"} <= set(trial_records(study)[0])
    assert record.sweep == {} and record.command == ("trainplan search",) and record.environment == {}


def test_best_trial_on_the_cpu_reports_rank_hours_and_broken_files_are_tolerated(storage: str, tmp_path) -> None:
    # "Ran on the CPU" is runners._result.ran_on_cpu's rule; the summary's own copy (and its
    # ds_config.json reading) raised on a file that starts like an object but is not JSON.
    from trainplan.reports import get_summary_info

    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "result.json").write_text('{"device": {"kind": "cpu"}}')
    study = optuna.create_study(storage=storage, study_name="cpu")
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[1.0],
                                              user_attrs={**attrs("completed", final=1.0), "trial_dir": str(folder)}))
    metrics = get_summary_info(read_study(study), "no target").best_metrics
    assert "gpu_hours" not in metrics and "cpu_rank_hours" in metrics
    (folder / "result.json").write_text('{"device": broken')
    (folder / "ds_config.json").write_text('{"train_batch_size": ')  # hand-edited, half saved
    info = get_summary_info(read_study(study), "no target")
    assert "cpu_rank_hours" not in info.best_metrics and "gpu_hours" in info.best_metrics
    assert info.best_ds_config == {}
