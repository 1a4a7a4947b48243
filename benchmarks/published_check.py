"""Print the planner's estimate beside every published measurement in
tests/planner/data/published_measurements.json, with the relative error and the tolerance the
test holds it to. Run: ``.venv/bin/python benchmarks/published_check.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.planner.test_published import DATA, TOLERANCE, predicted  # noqa: E402


def main() -> None:
    print(f"{'measurement':44} {'quantity':22} {'published':>11} {'planner':>11} {'error':>8} {'tol':>5}")
    worst = 0.0
    for rec in DATA:
        est = predicted(json.loads(json.dumps(rec)))
        err = est / rec["value"] - 1
        worst = max(worst, abs(err))
        flag = "" if abs(err) <= TOLERANCE[rec["quantity"]] else "  OUT"
        print(f"{rec['id']:44} {rec['quantity']:22} {rec['value']:11.4g} {est:11.4g} {err:+8.1%} "
              f"{TOLERANCE[rec['quantity']]:5.0%}{flag}")
    print(f"{len(DATA)} measurements; largest error {worst:.1%}")


if __name__ == "__main__":
    main()
