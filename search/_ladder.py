"""Ladder sweeps: several model sizes in one study, and the plain points ``trainplan scale`` fits.

A sweep file names its sizes under ``ladder`` (``search/data/default_ladder.yaml``)::

    ladder:
      - {name: w64, model: ladder-llama-w64.json}
      - {name: w128, model: ladder-llama-w128.json, tokens: 262144}

The study gets a fixed ``size`` dimension (one categorical choice per size). A ladder runs on the
grid sampler, so every size gets the same LR/batch grid (its own search, size by size) and no size
is favoured because bigger models reach lower losses; for the same reason it runs unpruned (the
pruners compare trials across the whole study, so a small size would be pruned against a big one).

:func:`ladder_points` reads a finished study back as plain values (size, parameters, tokens, lr,
batch, loss): the planner's fits take those, never the study (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError, close_matches

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from trainplan.search._sweep import LadderSize, ParamSpec, SweepSpec

__all__ = ["LadderPoint", "default_ladder_path", "ladder_points", "ladder_size", "parse_ladder",
           "resolve_ladder_paths"]

_LADDER_SAMPLERS = ("grid", "random")


def default_ladder_path() -> Path:
    """The packaged default ladder sweep (4 widths of the built-in Llama on the built-in corpus)."""
    from importlib import resources

    return Path(str(resources.files("trainplan.search").joinpath("data", "default_ladder.yaml")))


def resolve_ladder_paths(entries: list[Any], root: Path) -> list[Any]:
    """Ladder models given as paths relative to the sweep file become absolute (if they exist)."""
    out = []
    for entry in entries:
        if isinstance(entry, Mapping) and isinstance(entry.get("model"), str):
            candidate = root / entry["model"]
            if not Path(entry["model"]).is_absolute() and candidate.is_file():
                entry = {**entry, "model": str(candidate.resolve())}
        out.append(entry)
    return out


def parse_ladder(raw: Mapping[str, Any]) -> tuple[tuple[LadderSize, ...], ParamSpec]:
    """Validate ``raw["ladder"]`` (and what a ladder needs of the sampler and pruner); returns the
    sizes and the study's ``size`` dimension."""
    from trainplan.planner import load_model
    from trainplan.search._sweep import LadderSize, ParamSpec

    entries = raw["ladder"]
    if not isinstance(entries, list) or len(entries) < 1:
        raise UsageError("ladder", "must be a list of sizes, each {name, model, tokens (optional)}")
    sizes = []
    for i, entry in enumerate(entries):
        key = f"ladder[{i}]"
        if not isinstance(entry, Mapping):
            raise UsageError(key, "must be a mapping {name, model, tokens (optional)}")
        for k in entry:
            if k not in ("name", "model", "tokens"):
                raise UsageError(f"{key}.{k}", "unknown key; allowed: name, model, tokens" + close_matches(str(k), ("name", "model", "tokens")))
        if not entry.get("name") or not isinstance(entry["name"], str):
            raise UsageError(f"{key}.name", "must be a non-empty string")
        if not isinstance(entry.get("model"), str):
            raise UsageError(f"{key}.model", "must be a preset name or a config.json path")
        try:
            load_model(entry["model"])
        except UsageError as exc:
            raise UsageError(f"{key}.model", exc.message) from None
        tokens = entry.get("tokens")
        if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1):
            raise UsageError(f"{key}.tokens", f"must be a positive integer, got {tokens!r}")
        sizes.append(LadderSize(name=entry["name"], model=entry["model"], tokens=tokens))
    names = [s.name for s in sizes]
    if len(set(names)) != len(names):
        raise UsageError("ladder", f"size names must be distinct, got {', '.join(names)}")
    if "size" in (raw.get("space") or {}):
        raise UsageError("space.size", "the ladder sets the size dimension; remove it from space")
    sampler = (raw.get("sampler") or {}).get("type", "tpe")
    if sampler not in _LADDER_SAMPLERS:
        raise UsageError("sampler.type", f"a ladder needs {' or '.join(_LADDER_SAMPLERS)} (every size searched alike), "
                                         f"got {sampler!r}")
    pruner = (raw.get("pruner") or {}).get("type")
    if pruner != "none":
        raise UsageError("pruner.type", "a ladder needs none: the pruners compare trials across sizes, "
                                        f"so a small size would be pruned against a big one (got {pruner!r})")
    return tuple(sizes), ParamSpec(name="size", choices=tuple(names))


def ladder_size(sweep: SweepSpec, name: Any) -> LadderSize:
    """The ladder entry called ``name``."""
    for size in sweep.ladder:
        if size.name == name:
            return size
    raise UsageError("space.size", f"{name!r} is not a size of this ladder"
                     + close_matches(str(name), [s.name for s in sweep.ladder]))


@dataclass(frozen=True, slots=True, kw_only=True)
class LadderPoint:
    """One completed trial as plain values (what the planner's fits take)."""

    trial: int
    """Optuna trial number."""
    size: str
    """Ladder size name (the model's name for a single-size study)."""
    model: str
    """The trial's model (preset or config path)."""
    n_params: int
    """Non-embedding parameters (exact, from the planner's count): the N of the fits."""
    n_total: int
    """All parameters."""
    tokens: int
    """Training tokens of the trial."""
    lr: float
    """Peak learning rate."""
    batch_tokens: int
    """Global batch in tokens (sequences x sequence length)."""
    seq_len: int
    """Sequence length."""
    loss: float
    """Final eval loss (measured)."""


def ladder_points(study: optuna.Study) -> list[LadderPoint]:
    """The completed trials of ``study`` as plain points; failed, pruned and infeasible trials are
    left out (their loss is not a final loss)."""
    import math

    import optuna

    from trainplan.planner import count_parameters, load_model

    counts: dict[str, Any] = {}
    points = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        config = t.user_attrs.get("config") or {}
        if not config.get("model") or not t.values or not math.isfinite(t.values[0]):
            continue
        model = config["model"]
        if model not in counts:
            counts[model] = count_parameters(load_model(model))
        layout = config["layout"]
        seqs = layout["micro_batch"] * layout["grad_accum"] * layout["gpus"]
        points.append(LadderPoint(
            trial=t.number, size=str(t.params.get("size", Path(model).stem)), model=model,
            n_params=counts[model].non_embedding, n_total=counts[model].total,
            tokens=int(config["steps"]) * seqs * int(layout["seq_len"]),
            lr=float(config["hyperparams"]["lr"]), batch_tokens=seqs * int(layout["seq_len"]),
            seq_len=int(layout["seq_len"]), loss=float(t.values[0]),
        ))
    return points
