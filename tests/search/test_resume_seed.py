"""A resumed study's seeded sampler proposes new configurations, not the first run's again."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainplan.search import load_sweep, open_study, suggest


def _session(sweep, run_dir: Path, n: int) -> list[tuple]:
    study = open_study(sweep, run_dir)  # a fresh Study object, as a rerun of the command makes
    proposed = []
    for _ in range(n):
        trial = study.ask()
        values = suggest(trial, sweep)
        study.tell(trial, float(sum(v for v in values.values() if isinstance(v, (int, float)))))
        proposed.append(tuple(sorted(values.items())))
    return proposed


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_study_proposes_no_duplicate(tmp_path: Path, sampler: str) -> None:
    sweep = load_sweep(None, {"sampler.type": sampler, "sampler.seed": 0})
    first = _session(sweep, tmp_path, 3)
    second = _session(sweep, tmp_path, 3)  # the same command again
    third = _session(sweep, tmp_path, 2)
    everything = first + second + third
    assert len(set(everything)) == len(everything), everything
    # Still reproducible: the same history gives the same proposals.
    again = _session(sweep, tmp_path / "again", 3)
    assert again == first
