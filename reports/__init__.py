"""One self-contained HTML page for the decision: ``trainplan report`` and ``plan --report``.

Each view is a data function (``get_X_info``: plain typed values, no plotly) and a plot function
(``get_X_plot``: a figure that computes nothing new); the builders only assemble them. plotly,
optuna and the planner are imported inside the functions that use them.
"""

from __future__ import annotations

from trainplan.reports._curves import CurveSeries, CurvesInfo, get_curves_info, get_curves_plot
from trainplan.reports._diagnostics import (
    HistoryInfo,
    ImportanceInfo,
    ParetoInfo,
    ScatterInfo,
    TimelineInfo,
    get_history_info,
    get_history_plot,
    get_importance_info,
    get_importance_plot,
    get_parallel_plot,
    get_pareto_info,
    get_pareto_plot,
    get_scatter_info,
    get_slice_plot,
    get_timeline_info,
    get_timeline_plot,
)
from trainplan.reports._html import DATA_DIR
from trainplan.reports._page import build_plan_report, build_report
from trainplan.reports._records import CATEGORIES, CurvePoint, StudyRecord, TrialRecord, read_study
from trainplan.reports._scaling import (
    BreakdownInfo,
    ComputeInfo,
    GpuScalingInfo,
    MicroBatchInfo,
    get_breakdown_info,
    get_breakdown_plot,
    get_compute_info,
    get_compute_plot,
    get_gpu_scaling_info,
    get_memory_plot,
    get_microbatch_info,
    get_microbatch_plot,
    get_time_cost_plot,
)
from trainplan.reports._summary import (
    EstimateInfo,
    LayoutChoice,
    SummaryInfo,
    get_estimate_info,
    get_estimate_plot,
    get_summary_info,
)
from trainplan.reports._table import EnvironmentInfo, TableInfo, get_environment_info, get_table_info
from trainplan.reports._target import Target, resolve_target

__all__ = [
    "BreakdownInfo", "CATEGORIES", "ComputeInfo", "CurvePoint", "CurveSeries", "CurvesInfo", "DATA_DIR", "EnvironmentInfo",
    "EstimateInfo", "GpuScalingInfo", "HistoryInfo", "ImportanceInfo", "LayoutChoice", "MicroBatchInfo",
    "ParetoInfo", "ScatterInfo", "StudyRecord", "SummaryInfo", "TableInfo", "Target", "TimelineInfo",
    "TrialRecord", "build_plan_report", "build_report", "get_breakdown_info", "get_breakdown_plot", "get_compute_info", "get_compute_plot",
    "get_curves_info", "get_curves_plot", "get_environment_info", "get_estimate_info", "get_estimate_plot",
    "get_gpu_scaling_info", "get_history_info", "get_history_plot", "get_importance_info",
    "get_importance_plot", "get_memory_plot", "get_microbatch_info", "get_microbatch_plot",
    "get_parallel_plot", "get_pareto_info", "get_pareto_plot", "get_scatter_info", "get_slice_plot",
    "get_summary_info", "get_table_info", "get_time_cost_plot", "get_timeline_info", "get_timeline_plot",
    "read_study", "resolve_target",
]
