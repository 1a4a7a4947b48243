"""The recommender (planner/_recommend.py): which layouts it enumerates and how it ranks them."""

from __future__ import annotations

import pytest

from trainplan.errors import UsageError
from trainplan.planner import Layout, LayoutSpace, load_gpu, load_model, plan, recommend
from trainplan.planner._recommend import candidate_layouts

SMALL = LayoutSpace(max_gpus=4, zero=(0, 1), offload=("none", "cpu"), tp=(1, 2), pp=(1,), micro_batch=(1, 2, 4),
                    checkpointing=("none",))


def test_candidates_counted_by_hand():
    gpt2 = load_model("gpt2")
    layouts = list(candidate_layouts(gpt2, Layout(seq_len=1024), 16, SMALL))
    # (gpus, tp): (1,1) (2,1) (2,2) (4,1) (4,2) -- (1,2) cannot split one GPU; each reaches 16
    # sequences with micro-batch 1, 2 and 4; ZeRO-0 cannot offload, so 3 (zero, offload) pairs.
    assert len(layouts) == 5 * 3 * 3 == 45
    assert all(layout.global_batch == 16 and layout.problems(gpt2) == [] for layout in layouts)
    four = [lay for lay in layouts if (lay.gpus, lay.tp, lay.micro_batch, lay.zero, lay.offload) == (4, 1, 2, 1, "cpu")]
    assert len(four) == 1 and four[0].grad_accum == 2  # 16 / (2 x 4)


def test_candidates_obey_the_layout_rules_for_the_model():
    gpt2 = load_model("gpt2")  # 12 heads: tp 8 cannot split them; 12 layers: pp 16 cannot
    space = LayoutSpace(max_gpus=16, tp=(1, 8), pp=(1, 2, 16), micro_batch=(1, 2))
    layouts = list(candidate_layouts(gpt2, Layout(seq_len=1024), 32, space))
    assert layouts and all(lay.tp == 1 and lay.pp in (1, 2) for lay in layouts)
    assert all(lay.zero <= 1 for lay in layouts if lay.pp > 1)  # DeepSpeed pipelines take ZeRO 0-1
    assert all(lay.grad_accum >= lay.pp for lay in layouts)  # enough micro-batches to fill the pipe


@pytest.mark.parametrize("optimize", ["time", "cost", "gpus"])
def test_ranking_and_counts(optimize):
    rec = recommend(load_model("gpt2"), load_gpu("a100-80gb"), Layout(seq_len=1024), global_batch=16,
                    tokens=1e9, optimize=optimize, space=SMALL)
    assert rec.evaluated == 45 and rec.feasible == len(rec.ranked) == 45  # gpt2 fits everywhere
    assert rec.rejected_reasons == {"does not fit in GPU memory": 0}
    assert rec.min_gpus == 1
    key = {"time": lambda p: (p.hours, p.cost_usd, p.layout.gpus),
           "cost": lambda p: (p.cost_usd, p.hours, p.layout.gpus),
           "gpus": lambda p: (p.layout.gpus, p.hours, p.cost_usd)}[optimize]
    assert [key(p) for p in rec.ranked] == sorted(key(p) for p in rec.ranked)


def test_ranked_plans_are_what_plan_makes_of_the_layouts_that_fit():
    # recommend asks for the memory first and plans the rest only where it fits: the plans it keeps
    # must be exactly plan()'s, and the layouts it drops exactly those plan() says do not fit.
    model, gpu = load_model("mixtral-8x7b"), load_gpu("a100-80gb")  # MoE, GQA: some fit, most do not
    space = LayoutSpace(max_gpus=16, tp=(1, 2, 4), pp=(1, 2), micro_batch=(1, 4),
                        checkpointing=("none", "selective-op", "full"))
    base = Layout(seq_len=2048, framework="deepspeed")
    rec = recommend(model, gpu, base, global_batch=64, tokens=1e11, optimize="cost", space=space, price=2.0)
    plans = [plan(model, lay, gpu, tokens=1e11, price=2.0) for lay in candidate_layouts(model, base, 64, space)]
    fitting = [p for p in plans if p.fits]
    assert 0 < len(fitting) < len(plans) == rec.evaluated and rec.feasible == len(fitting)
    by_layout = {p.layout: p.to_dict() for p in fitting}
    assert sorted(by_layout, key=repr) == sorted((p.layout for p in rec.ranked), key=repr)
    assert all(p.to_dict() == by_layout[p.layout] for p in rec.ranked)


def test_bad_objective_and_gpu_cap_name_their_flags():
    model, gpu = load_model("gpt2"), load_gpu("a100-80gb")
    with pytest.raises(UsageError) as err:
        recommend(model, gpu, Layout(), global_batch=8, optimize="speed")
    assert err.value.key == "--optimize"
    with pytest.raises(UsageError) as err:
        recommend(model, gpu, Layout(), global_batch=8, space=LayoutSpace(max_gpus=0))
    assert err.value.key == "--max-gpus"


def test_gpu_counts_are_powers_of_two_in_a_node_then_whole_nodes():
    assert LayoutSpace(max_gpus=40).gpu_counts(8) == [1, 2, 4, 8, 16, 24, 32, 40]
    assert LayoutSpace(max_gpus=4).gpu_counts(8) == [1, 2, 4]


def test_recommend_with_a_calibration_ranks_by_calibrated_time_and_drops_what_it_cannot_predict():
    import random

    from tests.planner.test_calibration import _grid, _measure
    from trainplan.planner import fit

    cal = fit([_measure(p, random.Random(4), 0.01) for p in _grid()[:12]])  # one ZeRO-3 trial on 2 ranks
    model = load_model("trainplan-tiny")
    space = LayoutSpace(max_gpus=2, zero=(0, 3), offload=("none",), tp=(1, 2), pp=(1,), micro_batch=(4, 8),
                        checkpointing=("none", "full"))
    rec = recommend(model, cal.profile(), Layout(seq_len=128, precision="fp32"), global_batch=16, space=space,
                    calibration=cal)
    assert rec.ranked and rec.calibrated and len(rec.calibrated) == len(rec.ranked)
    assert all(p.layout.tp == 1 and p.layout.checkpointing == "none" for p in rec.ranked)
    assert not any(p.layout.zero == 3 and p.layout.dp > 1 for p in rec.ranked)
    reasons = " ".join(rec.rejected_reasons)
    assert "tp 2 not among the trials' [1]" in reasons and "ZeRO-3 across ranks not calibrated" in reasons
    assert rec.evaluated == rec.feasible + sum(rec.rejected_reasons.values())
    for p, c in zip(rec.ranked, rec.calibrated):  # the ranked plans carry the calibrated figures
        assert p.perf.tokens_per_s == c.tokens_per_s.value and p.perf.step_time_s == c.step_time_s.value
    hours = [p.hours for p in rec.ranked]
    assert hours == sorted(hours)
    assert rec.top_dicts(1)[0]["calibrated"]["tokens_per_s"]["uncalibrated"] != rec.ranked[0].perf.tokens_per_s
