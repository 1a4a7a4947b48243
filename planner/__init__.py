"""Analytic estimates for training a transformer: parameters, FLOPs, memory, time, cost, layouts.

Pure Python and instant: nothing here imports torch, transformers or deepspeed.
"""

from __future__ import annotations

from trainplan.planner._catalog import GPUSpec, gpu_catalog, load_gpu, model_presets
from trainplan.planner._dsconfig import SCHEDULES, Hyperparams, deepspeed_config
from trainplan.planner._layout import Layout
from trainplan.planner._model import SUPPORTED_FAMILIES, ModelSpec, from_hf_config, load_model

__all__ = [
    "GPUSpec",
    "Hyperparams",
    "Layout",
    "ModelSpec",
    "SCHEDULES",
    "SUPPORTED_FAMILIES",
    "deepspeed_config",
    "from_hf_config",
    "gpu_catalog",
    "load_gpu",
    "load_model",
    "model_presets",
]
