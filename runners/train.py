"""Training entry of one trial, started on every rank by the ``deepspeed`` launcher::

    deepspeed --num_gpus 1 --master_port 29512 --module trainplan.runners.train --spec TRIAL/spec.json

It reads ``spec.json`` and ``ds_config.json`` from the trial folder; rank 0 appends to
``metrics.jsonl`` and writes ``result.json``. Exit codes (passed through by the launcher):
0 completed, 1 crashed, 3 diverged, 4 oom, 143 terminated (SIGTERM/SIGINT: the current step
finishes, the metrics are flushed, the result is written).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from trainplan.runners._result import EXIT_CODES, build_result, is_oom_message, planner_estimate, write_json
from trainplan.runners._spec import TrialSpec

__all__ = ["main"]

_stop = False


def _request_stop(signum: int, frame: Any) -> None:
    # Only set a flag: the loop checks it between steps, so no collective is cut in half.
    global _stop
    _stop = True


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or is_oom_message(str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainplan.runners.train")
    parser.add_argument("--spec", required=True, help="the trial's spec.json")
    args, _ = parser.parse_known_args(argv)  # the launcher appends --local_rank=N
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    spec_path = Path(args.spec)
    trial_dir = spec_path.parent
    rank = int(os.environ.get("RANK", "0"))
    began = time.perf_counter()
    metrics = None
    if rank == 0:  # a rerun by hand (cmd.txt) starts a fresh record; the earlier one is kept as .N
        from trainplan.runners._folders import rotate_trial_files

        rotate_trial_files(trial_dir, ("metrics.jsonl", "result.json"))
        metrics = open(trial_dir / "metrics.jsonl", "w")

    def emit(record: dict[str, Any]) -> None:
        assert metrics is not None
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()  # the parent tails this file while the trial runs

    spec: TrialSpec | None = None
    records: list[dict[str, Any]] = []

    def finish(status: str, reason: str, records: list[dict[str, Any]], startup_s: float | None = None,
               optimizer: dict[str, Any] | None = None, **extra: Any) -> int:
        if rank == 0:
            result = build_result(records, status=status, reason=reason, exit_code=EXIT_CODES[status],
                                  estimate=planner_estimate(spec) if spec is not None else None,
                                  spec_path=str(spec_path), **extra)
            # Seconds from this process's start to the first step: imports, data, model, engine.
            result["startup_s"] = startup_s
            result["optimizer"] = optimizer
            write_json(trial_dir / "result.json", result)
        return EXIT_CODES[status]

    try:
        spec = TrialSpec.from_json(spec_path)
        config_path = trial_dir / "ds_config.json"
        ds_config = json.loads(config_path.read_text()) if config_path.is_file() else spec.ds_config()
        spec = spec.with_ds_config(ds_config)  # every optimizer setting from the file the engine uses
        from trainplan.runners._loop import train

        def tracked(record: dict[str, Any]) -> None:
            records.append(record)
            emit(record)

        outcome = train(spec, ds_config, stop_requested=lambda: _stop, emit=tracked)
        startup = round(outcome.loop_started - began, 3)
        code = finish(outcome.status, outcome.reason, outcome.records, diverged_at_step=outcome.diverged_at_step,
                      startup_s=startup, optimizer=outcome.optimizer)
    except BaseException as exc:  # classified and recorded, then the traceback goes to stderr
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        status = "oom" if _is_oom(exc) else "crashed"
        tail = traceback.format_exc()[-4000:]
        code = finish(status, f"{type(exc).__name__}: {exc}"[:2000], records, stderr_tail=tail)
        traceback.print_exc()
    finally:
        if metrics is not None:
            metrics.close()
    _shutdown()
    return code


def _shutdown() -> None:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # leaving anyway; a failed teardown must not mask the trial's status
        pass


if __name__ == "__main__":
    sys.exit(main())
