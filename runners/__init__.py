"""One real training trial: a Hugging Face model trained by a DeepSpeed engine, started by the
``deepspeed`` launcher, streaming ``metrics.jsonl`` and ending in a classified ``result.json``.

The contract (files, record keys, this API) is docs/protocol.md, "Trial protocol". Importing this
package is light: torch, transformers and deepspeed load only inside the training entry
(:mod:`trainplan.runners.train`).
"""

from __future__ import annotations

from trainplan.runners._launch import TrialHandle, build_command, launch_trial, prepare_trial, run_trial
from trainplan.runners._opcache import ops_compiled
from trainplan.runners._ports import free_port
from trainplan.runners._procgroup import adopt_orphans
from trainplan.runners._result import METRIC_KEYS, STATUSES, build_result, read_metrics
from trainplan.runners._spec import (
    DEFAULT_DATA, DEFAULT_HYPERPARAMS, DEFAULT_LAYOUT, RUNNER_CHECKPOINTING, TrialSpec, launchable_space,
)

__all__ = [
    "DEFAULT_DATA",
    "DEFAULT_HYPERPARAMS",
    "DEFAULT_LAYOUT",
    "METRIC_KEYS",
    "RUNNER_CHECKPOINTING",
    "STATUSES",
    "TrialHandle",
    "TrialSpec",
    "adopt_orphans",
    "build_command",
    "build_result",
    "free_port",
    "launch_trial",
    "launchable_space",
    "ops_compiled",
    "prepare_trial",
    "read_metrics",
    "run_trial",
]
