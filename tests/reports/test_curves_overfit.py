"""The learning-curves figure marks trials that overfit (checked on the figure's data)."""

from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import TrialState

from tests.reports.conftest import SWEEP, add, attrs, build_study
from trainplan.reports._curves import get_curves_info, get_curves_plot
from trainplan.reports._records import read_study


def _overfitting_curve() -> list[list]:
    """Train loss falls throughout; eval (every 4 steps) is best at step 12, then rises 3 times."""
    evals = {4: 2.9, 8: 2.7, 12: 2.6, 16: 2.65, 20: 2.7, 24: 2.8}
    return [[s, s * 512, 0.5 * s, 3.0 - 0.05 * s, evals.get(s)] for s in range(1, 25)]


def _study(storage: str, window: int) -> optuna.Study:
    study = build_study(storage)
    study.set_user_attr("sweep", {**SWEEP, "overfit": {"window": window, "stop": True}})
    a = attrs("pruned", final=None, reason="stopped at 12288 tokens: overfitting since step 24")
    a.update(curve=_overfitting_curve(), tokens=24 * 512, elapsed_s=12.0)
    add(study, 8, TrialState.PRUNED, {"lr": 3e-2, "global_batch": 8, "weight_decay": 0.0}, a)
    return study


def test_an_overfitting_curve_is_marked_where_it_was_detected(storage: str) -> None:
    info = get_curves_info(read_study(_study(storage, window=3)))
    by_number = {s.number: s for s in info.series}
    s = by_number[8]
    assert s.overfit is not None and s.overfit["step"] == 24 and s.overfit["best_eval_loss"] == 2.6
    assert s.step[s.overfit_index] == 24 and s.overfit_index in s.eval_index
    assert all(o.overfit is None and o.overfit_index is None for n, o in by_number.items() if n != 8)
    rows = [r for r in info.rows() if r["overfit_detected"]]
    assert [(r["trial"], r["step"], r["eval_loss"]) for r in rows] == [(8, 24, 2.8)]
    fig = get_curves_plot(info)
    marks = [t for t in fig.data if t.marker is not None and t.marker.symbol == "x" and t.meta == 8]
    assert len(marks) == 1
    assert list(np.asarray(marks[0].x)) == [24] and float(np.asarray(marks[0].y)[0]) == np.float32(2.8)
    assert "overfitting since step 24" in marks[0].hovertemplate
    assert any(t.showlegend and t.name.startswith("overfitting detected") for t in fig.data)
    # the top-K dropdown hides and shows the mark with its trial
    n_traces = len(fig.data)
    assert all(len(b.args[0]["visible"]) == n_traces for b in fig.layout.updatemenus[0].buttons)


def test_the_sweeps_window_decides(storage: str) -> None:
    info = get_curves_info(read_study(_study(storage, window=4)))  # only 3 rises: not overfitting at window 4
    assert all(s.overfit is None for s in info.series)
    assert not any(t.marker is not None and t.marker.symbol == "x" for t in get_curves_plot(info).data)
