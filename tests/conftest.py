"""Session-wide test settings."""

from __future__ import annotations

import os

from trainplan.runners._opcache import clear_stale_build_locks, extensions_dir

# Every DeepSpeed process the tests start (runner trials and the planner's engine probes) shares
# this environment's one JIT-build cache, so the ops are compiled once per environment.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))
clear_stale_build_locks()
