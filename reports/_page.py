"""The two pages: ``build_report`` (a study and its plan) and ``build_plan_report`` (a plan alone).

The builders only assemble: each view's data function computes, its plot function draws, and
:class:`~trainplan.reports._html.Page` writes the figure and its data. Section and figure ids are
fixed strings, so the same study gives the same bytes.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from trainplan.errors import UsageError
from trainplan.reports import _curves, _diagnostics, _scaling, _summary, _table
from trainplan.reports._html import Page, pre_json
from trainplan.reports._records import StudyRecord, read_study
from trainplan.reports._style import fmt_bytes, fmt_num, fmt_seconds
from trainplan.reports._target import Target, resolve_target

if TYPE_CHECKING:
    import optuna

    from trainplan.planner import Plan, Recommendation

__all__ = ["build_plan_report", "build_report"]

SECTIONS = (("summary", "Decision summary"), ("estimates", "Estimated vs measured"),
            ("curves", "Learning curves"), ("diagnostics", "Search diagnostics"),
            ("scaling", "Scaling trade-offs"), ("trials", "Trials"), ("environment", "Environment"))


def _empty(text: str) -> str:
    return f'<p class="empty">{html.escape(text)}</p>'


def _choices_html(choices: list[_summary.LayoutChoice]) -> str:
    e = html.escape
    head = ("choice", "GPUs", "nodes", "ZeRO", "offload", "micro-batch", "grad accum", "checkpointing", "tokens",
            "time", "GPU-hours", "cost (USD)", "memory per GPU", "tokens/s", "MFU")
    rows = []
    for c in choices:
        p, lay = c.plan, c.plan["layout"]
        cells = (c.label, lay["gpus"], lay["nodes"], lay["zero"], lay["offload"], lay["micro_batch"],
                 lay["grad_accum"], lay["checkpointing"], f"{fmt_num(p['time']['tokens'])} ({p['time']['tokens_source']})",
                 fmt_seconds(p["time"]["hours"] * 3600), fmt_num(p["time"]["gpu_hours"]),
                 f"{p['cost']['usd']:,.2f}" if p["cost"]["usd"] >= 100 else fmt_num(p["cost"]["usd"], 3), fmt_bytes(p["memory"]["per_gpu"]["total_bytes"]),
                 fmt_num(p["throughput"]["tokens_per_s"]), f"{p['throughput']['mfu']:.1%}")
        rows.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in cells) + "</tr>")
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _launch_html(choice: _summary.LayoutChoice, folder: str) -> list[str]:
    e = html.escape
    lay = choice.plan["layout"]
    note = []
    if lay["tp"] > 1 or lay["pp"] > 1:
        note = [_empty(f"This layout uses tensor/pipeline parallelism (tp {lay['tp']}, pp {lay['pp']}); the "
                       "trainplan runner trains data-parallel layouts only, so launch it with a Megatron-DeepSpeed "
                       "style trainer and take the batch and ZeRO settings from ds_config.json.")]
    return [f"<h3>Launch the {e(choice.label)} layout</h3>", *note,
            f"<p>The two files below are written to <code>{e(folder)}/</code> beside this page; from there run:</p>",
            f"<pre>{e(choice.launch_command)}</pre>", "<h3>spec.json</h3>", pre_json(choice.spec),
            "<h3>ds_config.json</h3>", pre_json(choice.ds_config)]


def _write_launch(out_dir: Path, choice: _summary.LayoutChoice) -> str:
    """Write spec.json, ds_config.json and cmd.txt of ``choice`` to ``out_dir/recommended``."""
    folder = out_dir / "recommended"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(choice.spec, indent=2, sort_keys=True) + "\n")
    (folder / "ds_config.json").write_text(json.dumps(choice.ds_config, indent=2, sort_keys=True) + "\n")
    (folder / "cmd.txt").write_text(choice.launch_command + "\n")
    return folder.name


def _summary_section(page: Page, info: _summary.SummaryInfo) -> None:
    from trainplan.reports._table import kv_table

    parts = page.section(*SECTIONS[0])
    page.write_data("summary", info)
    counts = ", ".join(f"{n} {c}" for c, n in info.counts.items()) or "no trials"
    parts.append(f"<p>Study <b>{html.escape(info.study_name)}</b>: {html.escape(counts)}.</p>")
    if info.target is not None:  # a scale-up target: the summary is about it; the best trial gets its own section
        parts.append(_summary.target_decision_html(info.target))
        parts = page.section("best", "Best trial of the study (the swept model)")
    if info.best_number is None:
        parts.append(_empty(info.message))
        return
    params = {k: fmt_num(v) if isinstance(v, float) else v for k, v in info.best_params.items()}
    parts += [f"<h3>Best trial: #{info.best_number}</h3>", kv_table(params),
              kv_table({k: fmt_num(v, 6) if k != "peak_mem_bytes" else fmt_bytes(v) for k, v in info.best_metrics.items()})]
    if info.best_command:
        parts += ["<p>Rerun it by hand (from the repository root):</p>", f"<pre>{html.escape(info.best_command)}</pre>"]
    if info.choices:
        parts += ["<h3>Recommended layouts on the target hardware</h3>", _choices_html(info.choices),
                  *_launch_html(info.choices[0], _write_launch(page.out_dir, info.choices[0]))]
    else:
        parts.append(_empty(f"No recommendation: {info.message}"))


def _scaling_section(page: Page, parts: list[str], target: Target | None, study: StudyRecord | None) -> None:
    if target is None:
        parts.append(_empty("No planner views: no target to plan for (see the decision summary)."))
    else:
        gpu_info = _scaling.get_gpu_scaling_info(target)
        parts.append(page.figure("memory-vs-gpus", _scaling.get_memory_plot(gpu_info), gpu_info))
        parts.append(page.figure("time-cost-vs-gpus", _scaling.get_time_cost_plot(gpu_info), gpu_info))
        mb_info = _scaling.get_microbatch_info(target)
        parts.append(page.figure("throughput-vs-microbatch", _scaling.get_microbatch_plot(mb_info), mb_info))
    if study is not None:
        compute = _scaling.get_compute_info(study, target)
        parts.append(page.figure("loss-vs-compute", _scaling.get_compute_plot(compute), compute)
                     if compute.rows else _empty(f"Loss against compute: {compute.message}."))


def _estimates_section(page: Page, record: StudyRecord, out: Path) -> None:
    parts = page.section(*SECTIONS[1])
    est = _summary.get_estimate_info(record)
    parts.append(page.figure("estimate-vs-measured", _summary.get_estimate_plot(est), est)
                 if est.rows else _empty("No trial recorded both an estimate and a measurement."))
    if (out / "calibration.json").is_file():  # written by `trainplan calibrate RUN_DIR -o RUN_DIR/calibration.json`
        from trainplan.reports._calibration import calibration_section

        calibration_section(page, parts, out / "calibration.json")


def _curves_section(page: Page, record: StudyRecord, top_k: int | None) -> None:
    parts = page.section(*SECTIONS[2])
    curves = _curves.get_curves_info(record, top_k)
    if not curves.series:
        parts.append(_empty("No trial logged a learning curve yet."))
        return
    fid = "learning-curves"
    options = "".join(f'<option value="{k}">{html.escape(v)}</option>' for k, v in _curves.X_AXES.items())
    parts.append(f'<div class="controls"><label>x axis <select data-curves-for="fig-{fid}">{options}</select>'
                 "</label> (the dropdown on the figure filters the top-K trials)</div>")
    parts.append(page.figure(fid, _curves.get_curves_plot(curves), curves))
    page.scripts.append(_curves.CURVES_JS)


def _diagnostics_section(page: Page, study: optuna.Study, record: StudyRecord) -> None:
    parts = page.section(*SECTIONS[3])
    history = _diagnostics.get_history_info(record)
    if history.numbers:
        parts.append(page.figure("history", _diagnostics.get_history_plot(history), history))
        imp = _diagnostics.get_importance_info(study)
        parts.append(page.figure("importances", _diagnostics.get_importance_plot(imp), imp)
                     if imp.importances else _empty(f"Parameter importances: {imp.message}."))
        scatter = _diagnostics.get_scatter_info(record)
        if scatter.params:
            parts.append(page.figure("parallel-coordinates", _diagnostics.get_parallel_plot(scatter), scatter))
            parts.append(page.figure("slices", _diagnostics.get_slice_plot(scatter), scatter))
        pareto = _diagnostics.get_pareto_info(record)
        if pareto is not None:
            parts.append(page.figure("pareto-front", _diagnostics.get_pareto_plot(pareto), pareto))
    else:
        parts.append(_empty("No completed trial yet: history, importances, parallel coordinates and slices need one."))
    timeline = _diagnostics.get_timeline_info(record)
    if timeline.numbers:
        parts.append(page.figure("timeline", _diagnostics.get_timeline_plot(timeline), timeline))


def _tables_sections(page: Page, record: StudyRecord, out: Path) -> None:
    """The trial table and the environment, each with its data file."""
    table = _table.get_table_info(record)
    page.write_data("trials", table)
    page.section(*SECTIONS[5]).append(_table.table_html(table, out))
    env = _table.get_environment_info(record)
    page.write_data("environment", env)
    page.section(*SECTIONS[6]).append(_table.environment_html(env))


def build_report(study: optuna.Study, out_dir: str | Path, *, gpu: str | None = None, tokens: float | None = None,
                 top_k: int | None = None, generated: str | None = None, scale: Path | None = None) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/report_data/*`` for ``study``; return the page path.

    Args:
        gpu: target GPU catalog name (default: the sweep's ``hardware.gpu``).
        tokens: token budget of the full run (default: the sweep's ``target.tokens``, else compute-optimal).
        top_k: learning curves shown when the page opens (all when None; a dropdown changes it).
        generated: text for "generated at" (default: the end time of the study's last trial).
        scale: ``trainplan scale``'s ``scale.json`` of a scale-up target (default: ``out_dir/target/scale.json``
            when present); the decision summary is then about that target.
    """
    from trainplan.reports._scaleup import add_scaleup_section, ladder_info
    from trainplan.reports._target import SCALE_DECISION_FILE, read_scale_decision

    out = Path(out_dir)
    record = read_study(study)
    resolved = resolve_target(record, gpu=gpu, tokens=tokens)
    ends = [t.end for t in record.trials if t.end]
    stamp = generated or (f"data up to {max(ends).isoformat(timespec='seconds')}" if ends else "no finished trials")
    page = Page(title=f"trainplan report: {record.name}",
                subtitle=f"{len(record.trials)} trials; {stamp}", out_dir=out)
    scale_path = Path(scale) if scale is not None else out / SCALE_DECISION_FILE
    decision = read_scale_decision(scale_path)
    if scale is not None and decision is None:
        raise UsageError(str(scale_path), "no such file (write it with `trainplan scale --out`)")
    _summary_section(page, _summary.get_summary_info(
        record, resolved, _summary.target_decision(decision, scale_path.parent) if decision else None))
    _estimates_section(page, record, out)
    _curves_section(page, record, top_k)
    _diagnostics_section(page, study, record)
    _scaling_section(page, page.section(*SECTIONS[4]), resolved if isinstance(resolved, Target) else None, record)
    if (ladder := ladder_info(study, decision)) is not None:  # a ladder study: the fit across its sizes
        add_scaleup_section(page, page.section("scaleup", "Scale-up across the ladder"), ladder)
    _tables_sections(page, record, out)
    return page.write()


def build_plan_report(plan_result: Plan, recommendations: Recommendation | None, out_path: str | Path) -> Path:
    """A planner-only page for ``trainplan plan ... --report PATH``.

    Args:
        plan_result: the planner's ``Plan``.
        recommendations: ``recommend(...)``'s result, or None.
        out_path: the HTML file to write; figure data goes to ``report_data/`` beside it.
    """
    from trainplan.planner import Hyperparams

    out_path = Path(out_path)
    p = plan_result
    target = Target(model=p.model, layout=p.layout, hyperparams=Hyperparams(), gpu=p.gpu,
                    tokens=p.tokens if p.tokens_source == "--tokens" else None, spec={"model": p.model.name})
    d = p.to_dict()
    page = Page(title=f"trainplan plan: {p.model.name} on {p.layout.gpus} x {p.gpu.key}",
                subtitle=f"trainplan {d['trainplan_version']}; planner estimates, not measurements",
                out_dir=out_path.parent)
    parts = page.section("plan", "Plan")
    page.write_data("plan", d)
    verdict = "fits" if p.fits else "does NOT fit"
    parts.append(f"<p>The layout {verdict}: {html.escape(fmt_bytes(d['memory']['per_gpu']['total_bytes']))} per GPU "
                 f"of {html.escape(fmt_bytes(d['memory']['gpu_capacity_bytes']))}.</p>")
    parts.append(_choices_html([_summary.layout_choice("planned", p, target)]))
    breakdown = _scaling.get_breakdown_info(p)
    parts.append(page.figure("memory-breakdown", _scaling.get_breakdown_plot(breakdown), breakdown))
    parts.append("<h3>Plan (JSON)</h3>" + pre_json(d))
    ranked = recommendations.ranked if recommendations is not None else []
    parts = page.section("recommend", "Recommended layouts")
    if ranked:
        choices = [_summary.layout_choice(f"#{i + 1}", r, target) for i, r in enumerate(ranked[:10])]
        page.write_data("recommendations", {"rows": [c.plan for c in choices]})
        parts += [_choices_html(choices), *_launch_html(choices[0], _write_launch(page.out_dir, choices[0]))]
    else:
        parts.append(_empty("No recommendation was requested (pass --recommend) or none fits."))
    _scaling_section(page, page.section("scaling", "Scaling trade-offs"), target, None)
    return page.write(out_path.name)

