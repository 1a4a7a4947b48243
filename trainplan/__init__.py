"""trainplan: plan, tune and report transformer training runs.

The packages under this namespace:

- ``trainplan.planner``: analytic estimates (parameters, FLOPs, memory, time, cost, layouts).
- ``trainplan.runners``: one real training trial launched by the ``deepspeed`` launcher.
- ``trainplan.search``: Optuna studies over runner trials.
- ``trainplan.reports``: one self-contained HTML page for the decision.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
