"""Analytic estimates for training a transformer: parameters, FLOPs, memory, time, cost, layouts.

Pure Python and instant: nothing here imports torch, transformers or deepspeed. Every number is an
estimate; ``trainplan run`` measures.
"""

from __future__ import annotations

from trainplan.planner._calibration import Calibrated, Calibration, fit, load_calibration, merge_repeats
from trainplan.planner._catalog import GPUSpec, gpu_catalog, load_gpu, model_presets
from trainplan.planner._device import device_profile
from trainplan.planner._dsconfig import (
    ALLREDUCE_BUCKET_SIZE, PLAN_WARMUP_FRACTION, REDUCE_BUCKET_SIZE, SCHEDULES, Hyperparams, deepspeed_config,
    hyperparams_from_deepspeed_config, plan_deepspeed_config,
)
from trainplan.planner._flops import FlopCounts, flops
from trainplan.planner._layout import (
    ATTENTION, CHECKPOINTING, FRAMEWORKS, LOSSES, OFFLOADS, OPTIMIZERS, PRECISIONS, ZERO_STAGES, Layout,
)
from trainplan.planner._memory import MemoryEstimate, estimate_memory
from trainplan.planner._model import SUPPORTED_FAMILIES, ModelSpec, from_hf_config, load_model
from trainplan.planner._params import ParamCounts, count_parameters
from trainplan.planner._perf import Perf, default_efficiency, estimate_perf
from trainplan.planner._plan import FIT_MARGIN, Plan, plan
from trainplan.planner._recommend import OBJECTIVES, LayoutSpace, Recommendation, recommend
from trainplan.planner._scaling import ScalingPrediction, chinchilla

__all__ = [
    "ALLREDUCE_BUCKET_SIZE", "ATTENTION", "CHECKPOINTING", "FIT_MARGIN", "FRAMEWORKS", "LOSSES", "OBJECTIVES",
    "OFFLOADS", "OPTIMIZERS", "PLAN_WARMUP_FRACTION", "PRECISIONS", "REDUCE_BUCKET_SIZE", "SCHEDULES",
    "SUPPORTED_FAMILIES", "ZERO_STAGES",
    "Calibrated", "Calibration", "device_profile", "fit", "merge_repeats", "load_calibration",
    "FlopCounts", "GPUSpec", "Hyperparams", "Layout", "LayoutSpace", "MemoryEstimate", "ModelSpec",
    "ParamCounts", "Perf", "Plan", "Recommendation", "ScalingPrediction",
    "chinchilla", "count_parameters", "deepspeed_config", "default_efficiency", "estimate_memory",
    "estimate_perf", "flops", "from_hf_config", "gpu_catalog", "hyperparams_from_deepspeed_config",
    "load_gpu", "load_model", "model_presets", "plan", "plan_deepspeed_config", "recommend",
]
