"""Calibration (planner/_calibration.py): fitting recovers known constants from synthetic points the
planner itself makes, with noise; refusals name what would help; files round-trip and are checked."""

from __future__ import annotations

import json
import math
import random

import pytest

from trainplan.errors import UsageError
from trainplan.planner import Calibration, fit, load_calibration, load_model, plan
from trainplan.planner._calibration import _features, _kernel_model, _plan_point, merge_repeats
from trainplan.planner._layout import Layout

DEVICE = {"kind": "cpu", "name": "Test CPU", "count": 1, "cores": 2, "memory_bytes": 24 * 2**30,
          "peak_flops": {"fp32": 1.0e11}, "peak_source": "test"}
STACK = {"torch": "2.13.0", "deepspeed": "0.19.0", "transformers": "4.99.0"}
TINY = dict(load_model("trainplan-tiny").hf_config)
TRUE = {"e_max": 0.6, "t_el": 2e-8, "t_mb": 0.004, "share": 40.0, "t_z3": 0.002, "t_z3g": 0.006, "c0": 150e6, "k": 1.3,
        "share_z3": 0.0, "t_p": 2e-8, "t_z12": 0.006}


def _grid() -> list[dict]:
    grid = []
    for width, mb, seq, zero, gpus in [(128, 16, 128, 0, 1), (128, 4, 128, 0, 1), (128, 32, 128, 1, 1),
                                        (64, 16, 256, 2, 1), (256, 8, 128, 0, 1), (256, 16, 64, 3, 1),
                                        (128, 8, 256, 0, 2), (128, 16, 128, 2, 2), (64, 2, 128, 0, 1),
                                        (256, 32, 256, 1, 2), (128, 64, 64, 0, 1), (64, 8, 64, 3, 2),
                                        (128, 8, 128, 3, 1), (128, 4, 128, 3, 2), (256, 2, 64, 0, 2),
                                        (64, 32, 128, 0, 1), (256, 4, 256, 0, 1)]:
        model = {**TINY, "hidden_size": width, "intermediate_size": int(width * 2.75)}
        layout = {"gpus": gpus, "zero": zero, "micro_batch": mb, "seq_len": seq, "precision": "fp32"}
        grid.append({"id": f"w{width}-mb{mb}-s{seq}-z{zero}-r{gpus}", "model": model, "layout": layout,
                     "device": {**DEVICE, "count": gpus}, "stack": STACK})
    return grid


def _measure(point: dict, rng: random.Random, noise: float) -> dict:
    """What a trial would measure if the true constants were TRUE (with multiplicative noise)."""
    p = _plan_point(point, point["device"])
    f = _features(p)
    step = (f["flops_term"] / TRUE["e_max"] + f["elem_term"] * TRUE["t_el"] + f["micro_batches"] * TRUE["t_mb"]
            + TRUE["share"] * f["comm_s"] + TRUE["share_z3"] * f["comm_zero3_s"]
            + TRUE["t_z3"] * f["zero3_layers"] + TRUE["t_z3g"] * f["zero3_gather_layers"]
                + TRUE["t_p"] * f["param_term"] + TRUE["t_z12"] * f["zero12_layers"])
    mem = TRUE["c0"] + TRUE["k"] * f["allocated"]
    return {**point, "tokens_per_s": p.layout.tokens_per_step / step * math.exp(rng.gauss(0, noise)),
            "peak_mem_bytes": int(mem * math.exp(rng.gauss(0, noise)))}


def test_fit_recovers_known_constants_from_noisy_synthetic_points() -> None:
    rng = random.Random(1)
    cal = fit([_measure(p, rng, 0.02) for p in _grid()])
    s, m = cal.speed, cal.memory
    assert s["e_max"].value == pytest.approx(TRUE["e_max"], rel=0.08)
    assert s["t_micro_batch_s"].value == pytest.approx(TRUE["t_mb"], rel=0.15)
    assert s["t_element_s"].value == pytest.approx(TRUE["t_el"], rel=0.25)
    assert s["comm_factor"].value == pytest.approx(TRUE["share"], rel=0.25)
    assert s["t_zero3_layer_s"].value == pytest.approx(TRUE["t_z3"], rel=0.25)
    assert s["t_zero3_gather_s"].value == pytest.approx(TRUE["t_z3g"], rel=0.25)
    assert s["t_param_s"].value == pytest.approx(TRUE["t_p"], rel=0.25)
    # ZeRO-1/2's own cost is a few % of these steps (5 of 17 points), so 2% noise leaves it looser
    assert s["t_zero12_layer_s"].value == pytest.approx(TRUE["t_z12"], rel=0.5)
    assert m["overhead_bytes"].value == pytest.approx(TRUE["c0"], rel=0.1)
    assert m["share"].value == pytest.approx(TRUE["k"], rel=0.1)
    for c in (*s.values(), *m.values()):
        assert c.low <= c.value <= c.high or (not c.identified and c is s["comm_factor_zero3"])  # 2 ZeRO-3 x 2 ranks
    assert s["e_max"].low <= TRUE["e_max"] <= s["e_max"].high
    assert 0.005 < cal.residual["tokens_per_s"] < 0.05
    assert len(cal.trials) == 17 and not cal.notes


def test_noise_free_fit_is_exact_and_predictions_carry_intervals() -> None:
    cal = fit([_measure(p, random.Random(0), 0.0) for p in _grid()])
    held = _measure({**_grid()[0], "layout": {**_grid()[0]["layout"], "micro_batch": 12}}, random.Random(0), 0.0)
    pl = _plan_point(held, DEVICE)
    out = cal.apply(pl)
    assert out.tokens_per_s.value == pytest.approx(held["tokens_per_s"], rel=1e-6)
    assert out.memory_bytes.value == pytest.approx(held["peak_mem_bytes"], rel=1e-6)
    assert out.tokens_per_s.low <= out.tokens_per_s.value <= out.tokens_per_s.high
    assert out.tokens_per_s.uncalibrated == pl.perf.tokens_per_s and out.outside_data == []


def test_prediction_outside_the_data_says_so() -> None:
    cal = fit([_measure(p, random.Random(0), 0.01) for p in _grid()])
    big = plan(load_model("trainplan-tiny"), _plan_point(_grid()[0], DEVICE).layout.with_(micro_batch=512, gpus=4),
               cal.profile(4), tokens=1e6)
    reasons = cal.apply(big).outside_data
    assert any("work per micro-batch" in r for r in reasons) and any("4 ranks" in r for r in reasons)


def test_too_few_or_too_alike_trials_are_refused_naming_the_measurement() -> None:
    pts = [_measure(p, random.Random(0), 0.01) for p in _grid()]
    with pytest.raises(UsageError, match="at least 5 layouts: run 2 more"):
        fit(pts[:3])
    alike = [{**pts[0], "id": str(i), "layout": {**pts[0]["layout"], "seq_len": 128 + i}} for i in range(6)]
    with pytest.raises(UsageError, match="run one more micro-batch size"):
        fit(alike)
    # six trials of one layout are one layout measured six times, not six layouts
    with pytest.raises(UsageError, match="6 usable trial.* of 1 different layout.*run 4 more"):
        fit([{**pts[0], "id": str(i)} for i in range(6)])


def test_repeats_of_a_layout_are_one_point_their_median() -> None:
    pts = [_measure(p, random.Random(0), 0.0) for p in _grid()]
    # the first layout three times (one slow spell), the second twice: as a search's LR trials would
    slow = [{**pts[0], "id": "a-slow", "tokens_per_s": pts[0]["tokens_per_s"] * 0.5}]
    again = [{**pts[0], "id": "a-2", "tokens_per_s": pts[0]["tokens_per_s"] * 1.02, "peak_mem_bytes": pts[0]["peak_mem_bytes"] + 10},
             {**pts[1], "id": "b-2"}]
    merged = merge_repeats(pts + slow + again)
    assert len(merged) == len(pts)
    first = merged[0]
    assert first["id"] == pts[0]["id"] and first["repeats"]["ids"] == [pts[0]["id"], "a-slow", "a-2"]
    assert first["tokens_per_s"] == pytest.approx(pts[0]["tokens_per_s"] * 1.0)  # the median: the slow spell left out
    assert first["peak_mem_bytes"] == pts[0]["peak_mem_bytes"]
    assert "repeats" not in merged[2]  # a layout run once is passed as it was
    cal = fit(pts + slow + again)
    base = fit(pts)
    assert len(cal.trials) == len(pts) and cal.trials[0]["repeats"] == [pts[0]["id"], "a-slow", "a-2"]
    # the same fit as without the repeats: noise-free points, the median equal to the first
    assert cal.speed["e_max"].value == pytest.approx(base.speed["e_max"].value, rel=1e-9)
    assert cal.residual == pytest.approx(base.residual)


def test_single_rank_trials_leave_communication_uncalibrated_and_refuse_several_ranks() -> None:
    pts = [_measure(p, random.Random(0), 0.01) for p in _grid() if p["layout"]["gpus"] == 1]
    cal = fit(pts)
    assert cal.uncalibrated() == ["comm_factor", "comm_factor_zero3", "t_zero3_gather_s"]
    assert "--gpus 2" in cal.notes[0]
    two = _plan_point({**_grid()[6], "layout": {**_grid()[6]["layout"]}}, DEVICE)
    with pytest.raises(UsageError, match="communication not calibrated.*run 2 trials with --gpus 2"):
        cal.apply(two)
    assert any("communication not calibrated" in r for r in cal.apply(two, strict=False).outside_data)


def test_zero3_across_ranks_needs_its_own_trials() -> None:
    """ZeRO-3's per-layer gathers cost what the bandwidth term of ZeRO-0-2 cannot tell: without 2
    ZeRO-3 trials on several ranks such a layout is refused, naming the run; with them it is predicted."""
    pts = [_measure(p, random.Random(0), 0.0) for p in _grid()]
    z3_multi = [i for i, p in enumerate(pts) if p["layout"]["zero"] == 3 and p["layout"]["gpus"] > 1]
    held = pts[z3_multi[0]]
    without = fit([p for i, p in enumerate(pts) if i not in z3_multi])
    assert "t_zero3_gather_s" in without.uncalibrated() and "t_zero3_layer_s" not in without.uncalibrated()
    with pytest.raises(UsageError, match="ZeRO-3 across ranks not calibrated.*--zero 3 --gpus 2"):
        without.apply(_plan_point(held, DEVICE))
    lenient = without.apply(_plan_point(held, DEVICE), strict=False).tokens_per_s.value
    assert lenient > held["tokens_per_s"] * 1.2  # the bandwidth term alone predicts it far too fast
    loo = fit(pts[:z3_multi[0]] + pts[z3_multi[0] + 1:])  # one ZeRO-3 multi-rank trial left: still refused
    assert "t_zero3_gather_s" in loo.uncalibrated()
    full = fit(pts)
    assert full.apply(_plan_point(held, DEVICE)).tokens_per_s.value == pytest.approx(held["tokens_per_s"], rel=1e-6)


def test_mixed_devices_or_stacks_are_refused() -> None:
    pts = [_measure(p, random.Random(0), 0.01) for p in _grid()]
    pts[1] = {**pts[1], "device": {**DEVICE, "name": "Other CPU"}}
    with pytest.raises(UsageError, match="2 different devices"):
        fit(pts)


def test_file_round_trip_and_refusals(tmp_path) -> None:
    cal = fit([_measure(p, random.Random(0), 0.01) for p in _grid()[:8] if p["layout"]["gpus"] == 1] +
              [_measure(p, random.Random(0), 0.01) for p in _grid()[8:] if p["layout"]["gpus"] == 1])
    path = cal.save(tmp_path / "cal.json")
    back = load_calibration(path)
    assert back.speed["e_max"] == cal.speed["e_max"] and back.uncalibrated() == cal.uncalibrated()
    assert isinstance(back, Calibration)
    back.check(device=DEVICE, stack=STACK)
    with pytest.raises(UsageError, match="not the CPU Other"):
        back.check(device={**DEVICE, "name": "Other"})
    with pytest.raises(UsageError, match="deepspeed 0.19.0, this environment has deepspeed 0.18.2"):
        back.check(stack={**STACK, "deepspeed": "0.18.2"})
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(UsageError, match="version 99"):
        load_calibration(path)


def _kernel_samples(km) -> dict:
    lin = [[t, i, o, km.linear_s(t, i, o)] for t in (128, 512, 2048) for i, o in ((64, 64), (64, 176), (256, 704),
                                                                                    (704, 256), (128, 256))]
    att = [[b, h, s, 32, km.sdpa_s(b, h, s, 32)] for b, h, s in ((4, 2, 64), (16, 2, 128), (4, 4, 256), (64, 4, 32))]
    return {"threads": 1, "linear": lin, "sdpa": att}


def test_fit_with_cpu_kernel_timings_recovers_the_scale_and_refuses_what_they_do_not_time() -> None:
    """With kernel timings (planner/_cpu.py), the compute term is the step's products at the timed
    rates, per rank count; the fit recovers the scale on it, and a layout the products do not
    describe (checkpointing) or a rank count not timed is refused rather than mixed with FLOPs/peak."""
    from trainplan.planner._cpu import KernelModel

    one = KernelModel(linear=(1 / 60e9, 1 / 8e9, 2e-5), sdpa=(3e-10, 2e-8, 1e-4), threads=1, misfit=0.0)
    two = KernelModel(linear=(1 / 45e9, 1 / 5e9, 2e-5), sdpa=(4e-10, 3e-8, 1e-4), threads=1, misfit=0.0)
    kernels = {"1": _kernel_samples(one), "2": _kernel_samples(two)}
    rng = random.Random(3)
    pts = [_measure({**p, "device": {**p["device"], "kernels": kernels}}, rng, 0.02) for p in _grid()]
    # _measure used FLOPs/peak: redo the step with the kernel term, as a CPU with these kernels would
    for p in pts:
        pl = _plan_point(p, p["device"])
        f = _features(pl, _kernel_model(p["device"], pl.layout.gpus))
        assert f["kernels"] == 1.0
        step = (f["flops_term"] / 0.9 + TRUE["t_mb"] * f["micro_batches"] + TRUE["share"] * f["comm_s"]
                + TRUE["share_z3"] * f["comm_zero3_s"]
                + TRUE["t_z3"] * f["zero3_layers"] + TRUE["t_z3g"] * f["zero3_gather_layers"]
                + TRUE["t_p"] * f["param_term"] + TRUE["t_z12"] * f["zero12_layers"])
        p["tokens_per_s"] = pl.layout.tokens_per_step / step * math.exp(rng.gauss(0, 0.02))
    cal = fit(pts)
    assert cal.ranges["kernels"] and cal.speed["e_max"].value == pytest.approx(0.9, rel=0.08)
    held = _plan_point(pts[0], pts[0]["device"])
    # the fixed costs per micro-batch and per parameter trade off against each other under 2% noise;
    # their sum for a trial is what the fit pins down
    fixed = _features(held, _kernel_model(pts[0]["device"], 1))["param_term"]
    got = cal.speed["t_micro_batch_s"].value + cal.speed["t_param_s"].value * fixed
    assert got == pytest.approx(TRUE["t_mb"] + TRUE["t_p"] * fixed, rel=0.3)
    assert cal.apply(held).tokens_per_s.value == pytest.approx(pts[0]["tokens_per_s"], rel=0.1)
    with pytest.raises(UsageError, match="kernel timings do not describe this layout"):
        cal.apply(plan(load_model("trainplan-tiny"), held.layout.with_(checkpointing="full"), cal.profile(1),
                       tokens=1e6))
    with pytest.raises(UsageError, match="kernel timings do not describe this layout"):
        cal.apply(plan(load_model("trainplan-tiny"), held.layout.with_(gpus=4), cal.profile(4), tokens=1e6))
    # without timings for one of the trials' rank counts, the fit falls back to FLOPs / peak for all
    mixed = [{**p, "device": {**p["device"], "kernels": {"1": kernels["1"]}}} for p in pts]
    back = fit(mixed)
    assert not back.ranges["kernels"] and "kernels" not in back.device


def test_zero3_bandwidth_factor_needs_three_zero3_multi_rank_trials_of_different_bytes() -> None:
    """ZeRO-3's own communication factor is fitted only when 3+ ZeRO-3 trials on several ranks, whose
    bytes per layer differ, tell it from the per-layer terms; with 2 it stays 0 (not identified)."""
    true = {**TRUE, "share_z3": 10.0}
    extra = []
    for width, mb, seq in ((256, 4, 64), (256, 8, 128)):
        model = {**TINY, "hidden_size": width, "intermediate_size": int(width * 2.75)}
        layout = {"gpus": 2, "zero": 3, "micro_batch": mb, "seq_len": seq, "precision": "fp32"}
        extra.append({"id": f"w{width}-mb{mb}-s{seq}-z3-r2", "model": model, "layout": layout,
                      "device": {**DEVICE, "count": 2}, "stack": STACK})
    import tests.planner.test_calibration as me

    saved, me.TRUE = me.TRUE, true  # _measure reads the module's TRUE
    try:
        rng = random.Random(5)
        pts = [_measure(p, rng, 0.0) for p in _grid() + extra]
    finally:
        me.TRUE = saved
    cal = fit(pts)
    assert cal.speed["comm_factor_zero3"].identified
    assert cal.speed["comm_factor_zero3"].value == pytest.approx(10.0, rel=1e-3)
    two = fit(pts[:-1])  # 3 ZeRO-3 multi-rank trials (widths 64, 128, 256): fitted
    assert two.speed["comm_factor_zero3"].identified
    assert not fit(pts[:-2]).speed["comm_factor_zero3"].identified  # the grid's 2 only


@pytest.mark.parametrize("zero, buffers", [(0, 0), (1, 1), (2, 2), (3, 1)])
def test_cpu_resident_memory_counts_only_the_bucket_pages_a_step_writes(zero: int, buffers: int) -> None:
    # DeepSpeed's gradient buckets are torch.empty of reduce_bucket_size (5e8) elements: a GPU's
    # allocator counts them whole, a CPU's resident set only the rank's gradients written into them
    # (ZeRO-1: one ipg bucket, ZeRO-2: two under overlap_comm, ZeRO-3: its reduce bucket). Counting
    # them whole put the CPU's ZeRO-1/2 trials at 2-4 GiB against 170-254 MiB measured.
    from trainplan.planner._memory import estimate_memory, local_parameters
    from trainplan.planner._params import count_parameters

    model = load_model("trainplan-tiny")
    layout = Layout(gpus=1, zero=zero, micro_batch=8, seq_len=128, precision="fp32")
    n, _ = local_parameters(count_parameters(model), layout)
    whole = estimate_memory(model, layout)
    touched = estimate_memory(model, layout, first_touch=True)
    assert whole.allocated - touched.allocated == buffers * (500_000_000 - n) * 4
    assert touched.allocated < 100 * 2**20  # the tiny model's whole training state, not GiB


def test_cpu_peak_memory_is_allocated_bytes_unless_a_trial_measured_its_resident_set() -> None:
    # With the preloaded counter (device.peak_memory "allocated") a CPU trial measures what a GPU's
    # max_memory_allocated does, DeepSpeed's unwritten buckets whole; trials that measured their
    # resident set (the fallback, and every trial before the counter) are compared with first touch.
    from trainplan.planner._calibration import expected_peak_bytes
    from trainplan.planner._device import device_key, device_label
    from trainplan.planner._memory import estimate_memory

    point = {**_grid()[0], "layout": {**_grid()[0]["layout"], "zero": 2}}
    allocated = {**DEVICE, "peak_memory": "allocated"}
    p = _plan_point(point, allocated)
    assert expected_peak_bytes(p) == p.memory.allocated > 2e9  # the 5e8-element ipg buckets, whole
    for resident in (DEVICE, {**DEVICE, "peak_memory": "resident"}):
        q = _plan_point(point, resident)
        assert expected_peak_bytes(q) == estimate_memory(q.model, q.layout, params=q.params,
                                                         first_touch=True).allocated < 2e8
    assert device_key(allocated) != device_key(DEVICE) == device_key({**DEVICE, "peak_memory": "resident"})
    assert "allocated peak memory" in device_label(allocated)
    # One calibration never mixes the two measures: refused like another device.
    pts = [_measure(q, random.Random(0), 0.01) for q in _grid()]
    pts[1] = {**pts[1], "device": allocated}
    with pytest.raises(UsageError, match="2 different devices.*resident peak memory"):
        fit(pts)
