"""Calibration: the planner's free constants fitted to the user's own measured trials.

The analytic planner (``_perf``, ``_memory``) assumes a compute efficiency, an overlap of
communication and no memory overhead beyond what it counts. A :class:`Calibration` replaces those
assumptions, for one device and one software stack, with constants fitted to measured points
(plain dicts: model config, layout, measured tokens/s and peak memory; see :func:`fit`). The
runner and the search supply the points; nothing here reads a trial folder or a study. Pure Python.

Step time (per optimizer step, one rank), linear in nine constants::

    t = F / (P * e_max) + T d L * t_el + m * t_mb + s * C + s3 * C3 + m * L * (z3 * t_z3 + z3r * (n - 1) * t_z3g)
        + N_r * t_p + m * L * z12 * t_z12

F the hardware FLOPs one rank runs per step (``_flops``), T d L the elements of the activations
one rank's step touches (tokens x width x layers, times the recompute share): the norms, the
activation function, residual adds and rotary embeddings are memory-bound kernels whose time
follows the bytes, not the FLOPs (Ivanov et al. 2021, "Data Movement Is All You Need", Sec. 3:
they take a large share of a transformer step with a tiny share of its FLOPs); fitted when the
trials' ratio of those elements to FLOPs spans 1.5x or more (several widths). The same regressor
is also what narrow matmuls reaching a lower share of peak would add (F / d grows as T d L): the
fit cannot tell the two apart, and on the CPU trials time per token grew ~2x per width doubling,
not the ~4x of the FLOPs. P the rank's measured matmul peak,
m the micro-batches per step, C the planner's data-parallel communication time before overlap
(``_perf``). Read as an efficiency, ``e(w) = e_max * w / (w + w_half)`` with ``w`` the FLOPs of one
micro-batch on one rank and ``w_half = t_mb * P * e_max``: a fixed cost per micro-batch (kernel
launches, Python, the optimizer hooks) that small micro-batches cannot hide. ``s`` scales it to the
communication time really exposed (the overlap and the real bandwidth together).

On the CPU, when the trials' points carry kernel timings of this machine (``device["kernels"]``,
runners/_cpubench.py, attached by ``trainplan calibrate`` and benchmarks/calibration.py), F / P is
replaced by the step's linear-layer and attention products timed by cost models fitted to those
timings (planner/_cpu.py): the rate of each product's own shape, timed beside as many busy
neighbours as the trial had ranks, instead of one efficiency curve in the work per micro-batch.
``1 / e_max`` is then a scale on that time (1 when the products run in the step as fast as alone).

ZeRO-3 pays per layer and micro-batch, whatever the width: DeepSpeed's stage-3 engine hooks every
submodule to gather its parameters before forward and backward and release them after
(deepspeed/runtime/zero/parameter_offload.py, partitioned_param_coordinator.py; Rajbhandari et al.
2020, "ZeRO", Sec. 5.3/7), Python work that a bandwidth model misses (``t_z3``, z3 = 1 under ZeRO-3),
and across n ranks each of those gathers and the gradient reduce-scatters is a collective whose
latency, not its bytes, dominates for small layers (``t_z3g`` per extra rank of the ring, z3r = 1
under ZeRO-3 with n > 1 data-parallel ranks). Measured on the CPU (gloo, benchmarks/results/
calibration.md): ZeRO-3 on 2 ranks of the width-64 model ran 2.7x slower (CPU-seconds) than the
planner's bandwidth model says, and the one ZeRO-3 2-rank trial was predicted 3.4x too fast from
ZeRO-0-2 trials (the 242% worst leave-one-out error before these terms); fitted, t_z3 is ~27 ms
per layer and micro-batch on one thread and t_z3g ~0 (the hooks' CPU work, not the gathers' wait,
is what CPU timing sees). C3 is the planner's communication time of a ZeRO-3 layout (C is 0 there),
with its own factor s3, fitted only from 3 or more ZeRO-3 trials on several ranks whose bytes per
layer differ by 1.5x or more, else 0: ZeRO-3's collectives are many and per layer, and on 2 CPU
ranks their cost barely grew with their bytes (a ZeRO-3 2-rank step took 132, 126 and 167 ms more
than its timed kernels and fixed cost at widths 64, 128 and 256, whose bytes differ 14x), while
ZeRO-0-2's one bucketed all-reduce a step grew with them (47-75 ms at width 128, 198 ms at 256):
one factor for both missed the ZeRO-3 2-rank trials by 33-38% (benchmarks/results/calibration.md).
N_r is the parameters the rank's optimizer updates each step (all of them under ZeRO-0, its
1/dp share under ZeRO-1-3; Rajbhandari et al. 2020, Sec. 5.1): the optimizer step, the gradient
norm for clipping and the copy back to the low-precision weights read and write every such
parameter once a step, whatever the micro-batch, so their time follows N_r, not the FLOPs (on the
H100, benchmarks/results/gpu_trials: without this term one fixed cost per micro-batch had to
carry it, and the 1.5B model's ~50 ms predicted the 125M model 30% too slow). Fitted when the
trials' N_r per FLOP spans 1.5x or more, else 0 (the other terms absorb it).
ZeRO-1/2 pays per layer and micro-batch too (``t_z12``, z12 = 1 under ZeRO-1 or 2, on any number of
ranks): DeepSpeed's stage-1/2 optimizer hooks each parameter's gradient to copy it into its flat
reduce bucket during backward, and its step walks the flat partitions and copies the updated values
back to the model's tensors (deepspeed/runtime/zero/stage_1_and_2.py), Python work per parameter
tensor that a bandwidth model and the ZeRO-0 trials do not see. Measured on the CPU (18 configurations
x 3 repeats, benchmarks/results/calibration.md): ZeRO-1/2 steps ran 3-10% slower than the same
model's ZeRO-0 steps predicted, at widths 64-256 alike (the bytes differ 15x, the tensors do not).
Fitted when 2 or more trials ran ZeRO-1/2 and 2 or more ZeRO-0, else 0 (no such cost).
L is the model's layers; the trials at hand all have 4, so the per-layer
scaling is an assumption (a ZeRO-3 plan of other depth is flagged as outside the data).

Peak memory: ``measured = c0 + c_z + k * A``, c_z an extra constant of the ZeRO-1/2 or ZeRO-3
engine path (none at stage 0; ~60 MB more at stages 1-3 on this CPU), A the planner's allocated
bytes as the measurement sees them (:func:`expected_peak_bytes`): a constant overhead plus a share.

Both fits weight each trial by 1/measured^2 (relative error). Intervals are 90% percentile
intervals from a pairs bootstrap over the trials (seeded, so a file is reproducible); a
prediction interval adds the trials' residual scatter to the bootstrap spread of the prediction.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainplan.errors import UsageError
from trainplan.planner._calcheck import check_calibration
from trainplan.planner._catalog import GPUSpec
from trainplan.planner._cpu import KernelModel, fit_kernels, kernel_seconds
from trainplan.planner._device import device_key, device_label, device_profile, measures_resident
from trainplan.planner._interval import Interval
from trainplan.planner._layout import Layout
from trainplan.planner._lsq import nonneg_rel_lsq as _wls
from trainplan.planner._memory import estimate_memory, local_parameters
from trainplan.planner._model import ModelSpec, from_hf_config
from trainplan.planner._plan import Plan, plan

__all__ = ["FORMAT_VERSION", "Calibrated", "Calibration", "Constant", "Figure", "fit", "load_calibration",
           "merge_repeats"]

FORMAT_VERSION = 5
"""Version of the calibration file; a file of another version is refused."""
MIN_SPREAD = 1.5
"""A regressor must span at least this ratio (max/min) across the trials to be identified."""
BOOTSTRAP = 300
"""Bootstrap resamples for the intervals."""
Z90 = 1.645
"""Two-sided 90% normal quantile, for the prediction intervals."""


SPEED_TERMS = ("flops_term", "elem_term", "micro_batches", "comm_s", "comm_zero3_s", "zero3_layers",
               "zero3_gather_layers", "param_term", "zero12_layers")
"""The step-time regressors, in the order of the coefficients (module docstring)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Constant(Interval):
    """One fitted constant with its 90% interval (NaN ends: not identified by the trials)."""

    unit: str
    doc: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure(Interval):
    """One calibrated prediction with its 90% prediction interval and the uncalibrated estimate."""

    uncalibrated: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibrated:
    """A plan's calibrated figures (what :meth:`Calibration.apply` returns)."""

    tokens_per_s: Figure
    step_time_s: Figure
    memory_bytes: Figure
    """Peak memory per rank as the trials measure it (docs/protocol.md), vs the plan's allocated bytes."""
    efficiency: float
    """Calibrated compute efficiency at this layout's work per micro-batch."""
    outside_data: list[str]
    """Why this prediction lies outside the trials' range (empty when inside)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Points -> the planner's features ---------------------------------------------------------------
def _model(point: Mapping[str, Any]) -> ModelSpec:
    return from_hf_config(dict(point["model"]), name=str(point.get("model_name", "calibration")))


def _layout(point: Mapping[str, Any]) -> Layout:
    return Layout(**dict(point["layout"]))


def expected_peak_bytes(p: Plan) -> float:
    """The planner's bytes as the trial's peak-memory measurement sees them (docs/protocol.md).

    On a GPU ``max_memory_allocated``, and on the CPU the preloaded counter's peak allocated bytes
    (runners/_mempeak.py): both :attr:`MemoryEstimate.allocated`. CPU trials measured by their
    resident set (``peak_memory: resident``, the fallback and every trial before the counter) hold
    only pages written to (first touch): DeepSpeed's gradient reduce buckets are ``torch.empty`` of
    ``reduce_bucket_size`` elements of which a step writes at most the rank's gradients, so only that
    part is counted there (``estimate_memory(first_touch=True)``).
    """
    if measures_resident(p.gpu.key):
        return float(estimate_memory(p.model, p.layout, params=p.params, first_touch=True).allocated)
    return float(p.memory.allocated)


def _kernel_model(device: Mapping[str, Any], ranks: int) -> KernelModel | None:
    """The CPU kernel cost models of ``device`` for a trial of ``ranks`` ranks (its ``kernels``
    samples timed beside ``ranks - 1`` busy neighbours), or None (a GPU, no samples for that
    many ranks, or trials calibrated without them)."""
    samples = (device.get("kernels") or {}).get(str(ranks)) if device.get("kind") == "cpu" else None
    return fit_kernels(samples) if isinstance(samples, Mapping) else None


def _features(p: Plan, km: KernelModel | None = None) -> dict[str, float]:
    """The regressors of one plan: see the module docstring. With CPU kernel models ``km``, the
    compute term is the step's products timed by them (planner/_cpu.py) instead of FLOPs / peak;
    ``kernels`` says which (1.0: the kernel models; NaN: they do not describe this layout)."""
    lay = p.layout
    peak = p.gpu.peak_flops(lay.precision)
    flops_rank = p.flops.hardware_per_step / lay.gpus
    kernel_s = kernel_seconds(p.model, lay, km) if km is not None else None
    layers = float(lay.grad_accum * p.model.num_layers) if lay.zero == 3 else 0.0
    fl = p.flops
    updated = local_parameters(p.params, lay)[0] / (lay.dp if lay.zero >= 1 else 1)
    elems = (fl.tokens_per_step / lay.gpus * p.model.hidden_size * p.model.num_layers
             * fl.hardware_per_token / fl.model_per_token)
    return {
        "flops_term": kernel_s if kernel_s is not None else flops_rank / peak,  # seconds at efficiency 1
        "kernels": 1.0 if kernel_s is not None else (math.nan if km is not None else 0.0),
        "elem_term": elems,
        "elem_per_flop": elems / flops_rank,
        "micro_batches": float(lay.grad_accum),
        "comm_s": p.perf.dp_comm_s if lay.zero < 3 else 0.0,
        "comm_zero3_s": p.perf.dp_comm_s if lay.zero == 3 else 0.0,
        "zero3_layers": layers,  # micro-batches x layers under ZeRO-3
        "zero3_gather_layers": layers * (lay.dp - 1),  # ... x extra ranks of each gather's ring
        "param_term": updated,  # parameters this rank's optimizer steps
        "zero12_layers": float(lay.grad_accum * p.model.num_layers) if lay.zero in (1, 2) else 0.0,
        "param_per_flop": updated / flops_rank,
        "work": flops_rank / lay.grad_accum,  # FLOPs per micro-batch per rank
        "peak": peak,
        "allocated": expected_peak_bytes(p),
    }


def _plan_point(point: Mapping[str, Any], device: Mapping[str, Any]) -> Plan:
    layout = _layout(point)
    threads = point.get("device", {}).get("threads_per_rank")
    return plan(_model(point), layout, device_profile(device, layout.gpus, threads), tokens=float(layout.tokens_per_step))


def _interval(samples: list[float], value: float) -> tuple[float, float]:
    s = sorted(samples)
    if not s:
        return value, value
    return s[int(0.05 * (len(s) - 1))], s[int(math.ceil(0.95 * (len(s) - 1)))]


def _rel_sd(pred: list[float], meas: list[float], params: int) -> float:
    res = [math.log(m / p) for p, m in zip(pred, meas) if p > 0 and m > 0]
    dof = max(1, len(res) - params)
    return math.sqrt(sum(r * r for r in res) / dof)


def _spread(values: Sequence[float]) -> float:
    pos = [v for v in values if v > 0]
    return max(pos) / min(pos) if pos else 1.0


# The calibration ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """Fitted constants for one device and software stack, and the trials they came from."""

    device: dict[str, Any]
    """The device the trials recorded (result.json ``device``)."""
    stack: dict[str, str | None]
    """Versions of torch, deepspeed, transformers the trials ran with."""
    trials: list[dict[str, Any]]
    """Each layout used: id (and ``repeats``, the ids of the trials merged into it, when it ran more than
    once: :func:`merge_repeats`), layout, measured and fitted tokens/s and peak memory."""
    speed: dict[str, Constant]
    """``e_max``, ``t_element_s``, ``w_half_flops``, ``t_micro_batch_s``, ``comm_factor``, ``comm_factor_zero3``,
    ``t_zero3_layer_s``, ``t_zero3_gather_s``, ``t_param_s``, ``t_zero12_layer_s`` (see module docstring)."""
    memory: dict[str, Constant]
    """``overhead_bytes`` (c0) and ``share`` (k)."""
    residual: dict[str, float]
    """Relative (log) residual standard deviation of the fits: ``tokens_per_s``, ``memory``."""
    ranges: dict[str, Any]
    """What the trials spanned: work per micro-batch, allocated bytes, ranks, ZeRO stages, precisions."""
    notes: list[str] = field(default_factory=list)
    """What could not be calibrated, and why."""
    timing: str = "wall"
    """How the trials' tokens/s were timed: ``wall`` (the clock) or ``cpu`` (contention-free, from
    rank 0's CPU-seconds; runners/_points.py): the calibrated tokens/s are of the same kind."""
    boot: dict[str, list[list[float]]] = field(default_factory=dict)
    """Bootstrap coefficient samples (``speed``: [1/e_max, t_el, t_mb, s, s_z3, t_z3, t_z3g, t_p, t_z12]; ``memory``:
    [c0, c_z12, c_z3, k]), for prediction intervals."""
    version: int = FORMAT_VERSION

    def trial_count(self) -> str:
        """``"12 trials"``, or ``"18 trials of 8 layouts"`` when repeats were merged (:func:`merge_repeats`)."""
        n = sum(len(t.get("repeats", [t["id"]])) for t in self.trials)
        return f"{n} trials" + (f" of {len(self.trials)} layouts" if n > len(self.trials) else "")

    # Prediction -----------------------------------------------------------------------------
    def _mem_coefs(self) -> list[float]:
        m = self.memory
        return [m["overhead_bytes"].value, m["overhead_zero12_bytes"].value, m["overhead_zero3_bytes"].value,
                m["share"].value]

    def _speed_coefs(self) -> list[float]:
        sp = self.speed
        return [1 / sp["e_max"].value, sp["t_element_s"].value, sp["t_micro_batch_s"].value, sp["comm_factor"].value,
                sp["comm_factor_zero3"].value,
                sp["t_zero3_layer_s"].value, sp["t_zero3_gather_s"].value, sp["t_param_s"].value,
                sp["t_zero12_layer_s"].value]

    def predict(self, p: Plan) -> Calibrated:
        """Calibrated tokens/s, step time and peak memory of ``p`` (planned on this device's profile).

        Lenient: a term the trials did not identify keeps its default (communication all exposed,
        no ZeRO-3 cost) and ``outside_data`` says so; :meth:`apply` refuses such a layout instead."""
        f = _features(p, _kernel_model(self.device, p.layout.gpus))
        x = [f[k] for k in SPEED_TERMS]

        def step(c: Sequence[float]) -> float:
            return sum(a * b for a, b in zip(c, x))

        t = step(self._speed_coefs())
        tb = [math.log(step(c) / t) for c in self.boot.get("speed", []) if step(c) > 0]
        sd = math.sqrt(self.residual["tokens_per_s"] ** 2 + (statistics.pstdev(tb) if len(tb) > 1 else 0.0) ** 2)
        tps = p.layout.tokens_per_step / t
        xm = _mem_row(p.layout.zero, f["allocated"])
        mem = sum(a * b for a, b in zip(self._mem_coefs(), xm))
        mb = [math.log(v / mem) for c in self.boot.get("memory", []) if (v := sum(a * b for a, b in zip(c, xm))) > 0]
        msd = math.sqrt(self.residual["memory"] ** 2 + (statistics.pstdev(mb) if len(mb) > 1 else 0.0) ** 2)
        eff = f["flops_term"] / max(sum(a * b for a, b in zip(self._speed_coefs()[:3], x[:3])), 1e-30)
        return Calibrated(
            tokens_per_s=Figure(value=tps, low=tps * math.exp(-Z90 * sd), high=tps * math.exp(Z90 * sd),
                                uncalibrated=p.perf.tokens_per_s),
            step_time_s=Figure(value=t, low=t * math.exp(-Z90 * sd), high=t * math.exp(Z90 * sd),
                               uncalibrated=p.perf.step_time_s),
            memory_bytes=Figure(value=mem, low=mem * math.exp(-Z90 * msd), high=mem * math.exp(Z90 * msd),
                                uncalibrated=f["allocated"]),
            efficiency=eff, outside_data=self.outside(p),
        )

    def outside(self, p: Plan) -> list[str]:
        """Reasons ``p`` lies outside what the trials spanned (empty when inside)."""
        f, r, lay = _features(p, _kernel_model(self.device, p.layout.gpus)), self.ranges, p.layout
        out = []
        lo, hi = r["work_flops"]
        if not lo / 1.05 <= f["work"] <= hi * 1.05:
            out.append(f"work per micro-batch {f['work']:.3g} FLOPs outside the trials' {lo:.3g}-{hi:.3g}")
        lo, hi = r["allocated_bytes"]
        if not lo / 1.05 <= f["allocated"] <= hi * 1.05:
            out.append(f"allocated memory {f['allocated'] / 2**20:.0f} MiB outside the trials' "
                       f"{lo / 2**20:.0f}-{hi / 2**20:.0f} MiB")
        if lay.gpus > max(r["ranks"]):
            out.append(f"{lay.gpus} ranks; the trials ran at most {max(r['ranks'])}")
        if lay.zero not in r["zero"]:
            out.append(f"ZeRO-{lay.zero} not among the trials' stages {r['zero']}")
        elif lay.dp > 1 and lay.zero < 3 and not set(r.get("zero_across_ranks", [])) & {0, 1, 2}:
            # stages 0-2 share the bandwidth term; ZeRO-3's own terms are checked by refusal()
            out.append(f"ZeRO-{lay.zero} across {lay.dp} ranks; the trials ran ZeRO-0-2 on one rank only")
        if lay.zero in (1, 2) and lay.zero in r["zero"] and "t_zero12_layer_s" in self.uncalibrated():
            out.append("ZeRO-1/2's own cost not calibrated (2 ZeRO-1/2 and 2 ZeRO-0 trials tell it apart)")
        if lay.zero == 3 and "layers" in r and not min(r["layers"]) <= p.model.num_layers <= max(r["layers"]):
            out.append(f"{p.model.num_layers} layers; ZeRO-3's per-layer cost was measured at {r['layers']} layers")
        if lay.precision not in r["precision"]:
            out.append(f"{lay.precision} not among the trials' precisions {r['precision']}")
        out += self.refusal(p)
        return out

    def uncalibrated(self) -> list[str]:
        """Constants the trials could not identify (kept at the planner's assumption)."""
        return [k for k, c in self.speed.items() if not c.identified]

    def refusal(self, p: Plan) -> list[str]:
        """Why the calibration cannot predict ``p``'s tokens/s: a term its step time needs that the
        trials did not identify, with the run that would identify it (empty when it can)."""
        lay, miss, out = p.layout, self.uncalibrated(), []
        seen = self.ranges.get("paths", {})
        for name, value in (("tp", lay.tp), ("pp", lay.pp), ("offload", lay.offload),
                            ("checkpointing", lay.checkpointing)):
            if name in seen and value not in seen[name]:  # a code path the step-time model has no term for
                out.append(f"{name} {value} not among the trials' {seen[name]}: run a trial with it")
        if self.ranges.get("kernels") and _features(p, _kernel_model(self.device, p.layout.gpus))["kernels"] != 1.0:
            out.append(f"the CPU kernel timings do not describe this layout (MoE, tp/pp/cp, checkpointing, "
                       f"offload, or {lay.gpus} ranks, which they were not timed beside): calibrate without them")
        if lay.dp > 1 and lay.zero < 3 and "comm_factor" in miss:
            out.append("communication not calibrated (fewer than 2 trials ran on more than one rank): "
                       "run 2 trials with --gpus 2")
        if lay.zero == 3 and lay.dp == 1 and "t_zero3_layer_s" in miss:
            out.append("ZeRO-3 on one rank not calibrated: run a trial with --zero 3 --gpus 1 "
                       "(and another ZeRO-3 trial)")
        if lay.zero == 3 and lay.dp > 1 and "t_zero3_gather_s" in miss:
            out.append(f"ZeRO-3 across ranks not calibrated (its per-layer gathers): run 2 trials with "
                       f"--zero 3 --gpus {lay.dp}")
        return out

    # Checks -----------------------------------------------------------------------------------
    def check(self, *, device: Mapping[str, Any] | None = None, stack: Mapping[str, str | None] | None = None,
              key: str = "--calibration") -> None:
        """Refuse (UsageError naming ``key``) another device or software stack."""
        if device is not None and device_key(device) != device_key(self.device):
            raise UsageError(key, f"calibrated on {device_label(self.device)}, not {device_label(device)}; "
                                  "calibrate on this device (trainplan calibrate RUN_DIR...)")
        for name, want in (stack or {}).items():
            have = self.stack.get(name)
            if want is not None and have is not None and want != have:
                raise UsageError(key, f"calibrated with {name} {have}, this environment has {name} {want}; "
                                      "recalibrate with trials run on this stack")

    def profile(self, ranks: int = 1) -> GPUSpec:
        """The device profile (a :class:`GPUSpec`) the calibration applies to, with the threads per
        rank the trials of ``ranks`` ranks ran (on the CPU; else the runner's default)."""
        threads = self.ranges.get("threads_per_rank", {}).get(str(ranks))
        return device_profile(self.device, ranks, threads)

    def apply(self, p: Plan, *, strict: bool = True, key: str = "--calibration") -> Calibrated:
        """Calibrated figures of a plan; refused unless ``p`` was planned on this device's profile,
        and (``strict``) when its tokens/s needs a term the trials did not identify (:meth:`refusal`).
        ``strict=False`` (screening, which needs only the memory) predicts anyway and flags it."""
        if p.gpu.key != self.profile().key:
            raise UsageError(key, f"calibrated on {device_label(self.device)}, "
                                  f"not {p.gpu.name} ({p.gpu.key}); plan on the calibrated device")
        if strict and (why := self.refusal(p)):
            raise UsageError(key, f"cannot calibrate this layout's tokens/s: {'; '.join(why)}")
        return self.predict(p)

    # Files ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _plain({"format": "trainplan-calibration", **asdict(self)})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, key: str = "--calibration") -> Calibration:
        if d.get("format") != "trainplan-calibration":
            raise UsageError(key, "not a trainplan calibration file (no \"format\": \"trainplan-calibration\")")
        if d.get("version") != FORMAT_VERSION:
            raise UsageError(key, f"calibration file version {d.get('version')!r}, this trainplan reads version "
                                  f"{FORMAT_VERSION}; recalibrate (trainplan calibrate)")
        try:
            def consts(group: Mapping[str, Any]) -> dict[str, Constant]:
                return {k: Constant(**{f: (math.nan if v[f] is None else v[f]) if f in ("low", "high", "value")
                                       else v[f] for f in ("value", "low", "high", "unit", "doc")})
                        for k, v in group.items()}

            cal = cls(device=dict(d["device"]), stack=dict(d["stack"]), trials=list(d["trials"]),
                      speed=consts(d["speed"]), memory=consts(d["memory"]), residual=dict(d["residual"]),
                      ranges=dict(d["ranges"]), notes=list(d.get("notes", [])), boot=dict(d.get("boot", {})),
                      timing=str(d.get("timing", "wall")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # dict("cpu"), [].items()...
            raise UsageError(key, f"malformed calibration file: missing or wrong {exc}") from None
        check_calibration(cal, key)  # what the keys hold (planner/_calcheck.py)
        return cal

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def _plain(value: Any) -> Any:
    """JSON has no NaN: an unidentified constant's interval is written as null."""
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_calibration(path: str | Path, *, key: str = "--calibration") -> Calibration:
    """Read a calibration file; bad files are UsageErrors naming ``key``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # ValueError: JSON errors and non-UTF-8 bytes alike
        raise UsageError(key, f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(key, f"{path} must hold one JSON object")
    return Calibration.from_dict(data, key=key)


# Fitting ------------------------------------------------------------------------------------------
def _same(points: Sequence[Mapping[str, Any]], what: str, ident: Any, label: Any, key: str) -> None:
    seen: dict[str, str] = {}
    for p in points:
        seen.setdefault(ident(p[what]), label(p[what]))
    if len(seen) > 1:
        raise UsageError(key, f"the trials ran on {len(seen)} different {what}s ({'; '.join(seen.values())}); "
                              "calibrate each separately")


def merge_repeats(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One point per layout: points that ran the same model config and layout (a search's trials that
    differ only in learning rate, or a benchmark's repeats) measured one layout several times, so
    they enter the fit as one point, the median of their tokens/s and of their peak memory (the
    first one's other fields and id); ``repeats`` keeps each one's id, tokens/s and peak memory.

    Why: the fit's pairs bootstrap and its too-few / too-alike checks count points as independent
    layouts, so repeats counted apart would narrow the intervals with pseudo-replicates and let
    3 layouts run twice pass the 5-layout minimum; the median also keeps one slow spell of a
    shared machine from pulling the fit (the least-squares centre is otherwise the same for equal
    repeat counts). Order: first seen. A point alone is returned as it was, without ``repeats``."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for p in points:
        groups.setdefault(json.dumps([p["model"], p["layout"]], sort_keys=True, default=str), []).append(p)
    out = []
    for ps in groups.values():
        if len(ps) == 1:
            out.append(dict(ps[0]))
            continue
        tps, mem = [float(q["tokens_per_s"]) for q in ps], [float(q["peak_mem_bytes"]) for q in ps]
        out.append({**ps[0], "tokens_per_s": statistics.median(tps), "peak_mem_bytes": int(statistics.median(mem)),
                    "repeats": {"ids": [q.get("id") for q in ps], "tokens_per_s": tps, "peak_mem_bytes": mem}})
    return out


def fit(points: Sequence[Mapping[str, Any]], *, key: str = "RUN_DIR", seed: int = 0) -> Calibration:
    """Fit a :class:`Calibration` from measured points.

    Each point is a plain dict: ``id``, ``model`` (HF config fields), ``layout`` (Layout fields),
    ``tokens_per_s`` and ``peak_mem_bytes`` (measured), ``device`` and ``stack`` (as the trial
    recorded them). Points of the same model and layout are one layout measured several times
    (:func:`merge_repeats`). Too few or too alike layouts are refused, naming the measurement that
    would help.
    """
    usable = [p for p in points if p.get("tokens_per_s") and p.get("peak_mem_bytes") and p.get("device")]
    _same(usable, "device", device_key, device_label, key)
    _same(usable, "stack", lambda s: json.dumps(s, sort_keys=True),
          lambda s: ", ".join(f"{k} {v}" for k, v in s.items()), key)
    timings = {p.get("timing", "wall") for p in usable}
    if len(timings) > 1:
        raise UsageError(key, f"the points mix timings {sorted(timings)}; calibrate one kind at a time")
    pts = merge_repeats(usable)
    if len(pts) < 5:
        raise UsageError(key, f"{len(usable)} usable trial(s) (completed, with tokens/s, peak memory and a recorded "
                              f"device) of {len(pts)} different layout(s); a calibration needs at least 5 layouts: run "
                              f"{5 - len(pts)} more at other micro-batch sizes or sequence lengths")
    device = dict(pts[0]["device"])
    plans = [_plan_point(p, device) for p in pts]
    feats = [_features(p, _kernel_model(device, p.layout.gpus)) for p in plans]
    kernels = all(f["kernels"] == 1.0 for f in feats)
    if not kernels:  # one kind of compute time for all trials: FLOPs / peak
        device.pop("kernels", None)
        feats = [_features(p) for p in plans]
    step = [pl.layout.tokens_per_step / float(p["tokens_per_s"]) for p, pl in zip(pts, plans)]
    mem = [float(p["peak_mem_bytes"]) for p in pts]

    work = [f["work"] for f in feats]
    if _spread(work) < MIN_SPREAD:
        raise UsageError(key, f"every trial does about the same work per micro-batch ({min(work):.3g}-{max(work):.3g} "
                              "FLOPs), so the compute efficiency cannot be told from the fixed cost per micro-batch: "
                              "run one more micro-batch size (or sequence length) at least 2x larger or smaller")
    alloc = [f["allocated"] for f in feats]
    if _spread(alloc) < MIN_SPREAD:
        raise UsageError(key, f"every trial's estimated memory is about the same ({min(alloc) / 2**20:.0f}-"
                              f"{max(alloc) / 2**20:.0f} MiB), so the memory overhead cannot be told from its share: "
                              "run one more micro-batch size or model width")
    fitted, notes = _identified(plans, feats, kernels)

    def speed_fit(idx: Sequence[int]) -> list[float] | None:
        c = _wls([[feats[i][k] for k in fitted] for i in idx], [step[i] for i in idx])
        if c is None or c[0] <= 0:
            return None
        full = dict(zip(fitted, c))
        return [full[k] if k in full else _DEFAULT_COEF[k] for k in SPEED_TERMS]

    zeros = [pl.layout.zero for pl in plans]

    def mem_fit(idx: Sequence[int]) -> list[float] | None:
        c = _wls([_mem_row(zeros[i], alloc[i]) for i in idx], [mem[i] for i in idx])
        return None if c is None or c[3] <= 0 else c

    all_idx = list(range(len(pts)))
    sc, mc = speed_fit(all_idx), mem_fit(all_idx)
    if sc is None or mc is None:
        what = "step time does not grow with the FLOPs per step" if sc is None else \
            "peak memory does not grow with the estimated bytes"
        raise UsageError(key, f"across these trials {what}, so no non-negative constants fit: the measurements are "
                              "dominated by noise (on a machine shared with other work, try --timing cpu)")
    rng = random.Random(seed)
    sboot, mboot = [], []
    for _ in range(BOOTSTRAP):
        idx = [rng.randrange(len(pts)) for _ in pts]
        if len({work[i] for i in idx}) < 2:
            continue
        # a resample without a term's trials cannot fit it: it says nothing of that term's spread
        if all(any(feats[i][k] > 0 for i in idx) for k in fitted) and (s := speed_fit(idx)) is not None:
            sboot.append(s)
        if len({alloc[i] for i in idx}) >= 2 and (m := mem_fit(idx)) is not None:
            mboot.append(m)

    peak_ref = statistics.median(f["peak"] for f in feats)

    def const(samples: list[float], value: float, unit: str, doc: str, fitted: bool = True) -> Constant:
        lo, hi = _interval(samples, value) if fitted else (math.nan, math.nan)
        return Constant(value=value, low=lo, high=hi, unit=unit, doc=doc)

    e_max = 1 / sc[0]
    speed = {
        "e_max": const([1 / s[0] for s in sboot], e_max, "share of timed kernels" if kernels else "share of peak",
                       "speed of the step's products relative to the same products timed alone (CPU kernel timings)"
                       if kernels else "compute efficiency of the dense matmuls reached by large micro-batches (share "
                       "of the measured matmul peak)"),
        "t_element_s": const([s[1] for s in sboot], sc[1], "s",
                             "time per activation element (token x width x layer) of the memory-bound kernels",
                             "elem_term" in fitted),
        "t_micro_batch_s": const([s[2] for s in sboot], sc[2], "s", "fixed time per micro-batch per rank"),
        "w_half_flops": const([s[2] * peak_ref / s[0] for s in sboot], sc[2] * peak_ref * e_max, "FLOPs",
                              "work per micro-batch at which the efficiency is half of e_max (at the median peak)"),
        "comm_factor": const([s[3] for s in sboot], sc[3], "x planner",
                             "exposed communication time / the planner's data-parallel communication time at the "
                             "assumed bandwidth (absorbs both the overlap and the real bandwidth)", "comm_s" in fitted),
        "comm_factor_zero3": const([s[4] for s in sboot], sc[4], "x planner",
                                   "the same for ZeRO-3's gathers and reduce-scatters; fitted from 3 or more ZeRO-3 trials on "
                                   "several ranks whose bytes per layer differ, else 0 (its per-layer terms carry it)", "comm_zero3_s" in fitted),
        "t_zero3_layer_s": const([s[5] for s in sboot], sc[5], "s",
                                 "ZeRO-3's fixed time per layer per micro-batch (its gather/release hooks), on any "
                                 "number of ranks", "zero3_layers" in fitted),
        "t_zero3_gather_s": const([s[6] for s in sboot], sc[6], "s",
                                  "ZeRO-3's further time per layer per micro-batch per extra rank (the latency of "
                                  "its per-layer collectives)", "zero3_gather_layers" in fitted),
        "t_param_s": const([s[7] for s in sboot], sc[7], "s",
                           "time per parameter the rank's optimizer updates, once a step (the optimizer step, the "
                           "gradient norm, the copy to the low-precision weights)", "param_term" in fitted),
        "t_zero12_layer_s": const([s[8] for s in sboot], sc[8], "s",
                                  "ZeRO-1/2's fixed time per layer per micro-batch (its per-parameter gradient hooks "
                                  "and flat-partition copies), on any number of ranks", "zero12_layers" in fitted),
    }
    memory = {
        "overhead_bytes": const([m[0] for m in mboot], mc[0], "bytes", "constant memory beyond the planner's terms"),
        "overhead_zero12_bytes": const([m[1] for m in mboot], mc[1], "bytes",
                                       "more constant memory under ZeRO-1/2 (DeepSpeed's partitioning optimizer)",
                                       any(z in (1, 2) for z in zeros)),
        "overhead_zero3_bytes": const([m[2] for m in mboot], mc[2], "bytes",
                                      "more constant memory under ZeRO-3 (parameter partitioning and its hooks)",
                                      3 in zeros),
        "share": const([m[3] for m in mboot], mc[3], "x allocated", "measured / estimated allocated bytes, at the margin"),
    }
    x = [[f[k] for k in SPEED_TERMS] for f in feats]
    t_fit = [sum(a * b for a, b in zip(sc, xi)) for xi in x]
    m_fit = [sum(c * v for c, v in zip(mc, _mem_row(z, a))) for z, a in zip(zeros, alloc)]
    trials = [{"id": p.get("id"), **({"repeats": p["repeats"]["ids"]} if "repeats" in p else {}),
               "layout": dict(p["layout"]), "hidden_size": pl.model.hidden_size,
               "tokens_per_s": float(p["tokens_per_s"]), "tokens_per_s_fit": pl.layout.tokens_per_step / t,
               "tokens_per_s_uncalibrated": pl.perf.tokens_per_s,
               "peak_mem_bytes": m, "peak_mem_fit": mf, "peak_mem_uncalibrated": a}
              for p, pl, t, m, mf, a in zip(pts, plans, t_fit, mem, m_fit, alloc)]
    return Calibration(
        device=device, stack=dict(pts[0]["stack"]), trials=trials, speed=speed, memory=memory,
        residual={"tokens_per_s": _rel_sd(t_fit, step, len(fitted)),
                  "memory": _rel_sd(m_fit, mem, 2 + len({min(z, 2) for z in zeros if z}))},
        ranges={"work_flops": [min(work), max(work)], "allocated_bytes": [min(alloc), max(alloc)],
                "ranks": sorted({pl.layout.gpus for pl in plans}), "zero": sorted({pl.layout.zero for pl in plans}),
                "zero_across_ranks": sorted({pl.layout.zero for pl in plans if pl.layout.dp > 1}),
                "layers": sorted({pl.model.num_layers for pl in plans}),
                "paths": {k: sorted({getattr(pl.layout, k) for pl in plans})
                          for k in ("tp", "pp", "offload", "checkpointing")},
                "threads_per_rank": {str(p["layout"].get("gpus", 1)): p["device"].get("threads_per_rank")
                                     for p in pts if p["device"].get("threads_per_rank")},
                "precision": sorted({pl.layout.precision for pl in plans}), "kernels": kernels},
        notes=notes, boot={"speed": sboot, "memory": mboot}, timing=timings.pop(),
    )


def _mem_row(zero: int, allocated: float) -> list[float]:
    """Memory regressors: a constant, the extra constants of the ZeRO-1/2 and ZeRO-3 engine paths,
    and the planner's bytes (see the module docstring)."""
    return [1.0, float(zero in (1, 2)), float(zero == 3), allocated]


_DEFAULT_COEF = {"elem_term": 0.0, "comm_s": 1.0, "comm_zero3_s": 0.0, "zero3_layers": 0.0, "zero3_gather_layers": 0.0,
                 "param_term": 0.0, "zero12_layers": 0.0}
"""A term the trials cannot identify: all of the planner's communication time counted as exposed,
no ZeRO-3 or ZeRO-1/2 cost (the uncalibrated planner's view); :meth:`Calibration.apply` refuses layouts that need it.
ZeRO-3's bandwidth term is 0 unless identified: its per-layer terms then carry its communication
(see the module docstring)."""


def _identified(plans: Sequence[Plan], feats: Sequence[Mapping[str, float]],
                kernels: bool = False) -> tuple[list[str], list[str]]:
    """The step-time terms the trials identify, and notes on those they do not (with the run that
    would help). Each term needs 2 trials that exercise it (one could be fitted exactly, with
    nothing left to check it); ZeRO-3's rank term needs its one-rank term told apart, or absorbs it.
    With CPU kernel timings (``kernels``) the memory-bound term is left out: each timed product's
    own memory term grows with tokens x width as it does, and the two cannot be told apart."""
    multi = sum(f["comm_s"] > 0 for f in feats)
    z3_comm = [f["comm_zero3_s"] / f["zero3_gather_layers"] for f in feats if f["zero3_gather_layers"] > 0]
    z3_one = sum(pl.layout.zero == 3 and pl.layout.dp == 1 for pl in plans)
    z3_multi = sum(f["zero3_gather_layers"] > 0 for f in feats)
    fitted, notes = ["flops_term", "micro_batches"], []
    if kernels:
        pass
    elif _spread([f["elem_per_flop"] for f in feats]) >= MIN_SPREAD:
        fitted.insert(1, "elem_term")
    else:
        notes.append("memory-bound kernels not calibrated apart from the matmuls: the trials' activation elements per "
                     "FLOP span less than 1.5x (run one more model width, 2x wider or narrower)")
    if _spread([f["param_per_flop"] for f in feats]) >= MIN_SPREAD:
        fitted.append("param_term")
    else:
        notes.append("the optimizer's time per parameter not calibrated apart from the FLOPs: the trials' parameters "
                     "per FLOP span less than 1.5x (run one more micro-batch size or model size)")
    z12 = sum(pl.layout.zero in (1, 2) for pl in plans)
    z0 = sum(pl.layout.zero == 0 for pl in plans)
    if z12 >= 2 and z0 >= 2:
        fitted.append("zero12_layers")
    elif z12:
        notes.append(f"ZeRO-1/2's own cost not calibrated: {z12} ZeRO-1/2 trial(s), {z0} ZeRO-0 (2 of each tell it apart "
                     "from the cost every step pays); ZeRO-1/2 layouts are predicted without it")
    if multi >= 2:
        fitted.append("comm_s")
    else:
        notes.append("communication not calibrated: fewer than 2 trials ran ZeRO-0-2 on more than one rank (run 2 "
                     "trials with --gpus 2); such layouts are refused")
    if len(z3_comm) >= 3 and _spread(z3_comm) >= MIN_SPREAD:  # bytes per layer must vary to be told from t_z3g
        fitted.append("comm_zero3_s")
    if z3_one >= 1 and z3_one + z3_multi >= 2:
        fitted.append("zero3_layers")
    elif z3_one + z3_multi:
        notes.append(f"ZeRO-3 on one rank not calibrated: {z3_one} ZeRO-3 trial(s) on one rank, {z3_multi} on "
                     "several (run a trial with --zero 3 --gpus 1, and 2 ZeRO-3 trials in all)")
    if z3_multi >= 2:
        fitted.append("zero3_gather_layers")
    elif z3_multi or z3_one:
        notes.append(f"ZeRO-3 across ranks not calibrated: {z3_multi} ZeRO-3 trial(s) on several ranks (run 2 "
                     "with --zero 3 --gpus 2); such layouts are refused")
    return fitted, notes
