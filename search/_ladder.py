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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError, close_matches

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from trainplan.search._sweep import LadderSize, ParamSpec, SweepSpec

__all__ = ["LadderPoint", "ScaleDecision", "default_ladder_path", "ladder_points", "ladder_size", "parse_ladder",
           "resolve_ladder_paths", "scale_target", "write_target"]

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

    import optuna

    from trainplan.planner import count_parameters, load_model
    from trainplan.search._records import trial_config

    counts: dict[str, Any] = {}
    points = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        config = trial_config(t)
        if not isinstance(config.get("model"), str) or not t.values or not math.isfinite(t.values[0]):
            continue
        model = config["model"]
        if model not in counts:
            counts[model] = count_parameters(load_model(model))
        try:  # a config the search did not write (another tool's study, an edit) is no ladder point
            layout = config["layout"]
            seqs = int(layout["micro_batch"]) * int(layout["grad_accum"]) * int(layout["gpus"])
            point = LadderPoint(
                trial=t.number, size=str(t.params.get("size", Path(model).stem)), model=model,
                n_params=counts[model].non_embedding, n_total=counts[model].total,
                tokens=int(config["steps"]) * seqs * int(layout["seq_len"]),
                lr=float(config["hyperparams"]["lr"]), batch_tokens=seqs * int(layout["seq_len"]),
                seq_len=int(layout["seq_len"]), loss=float(t.values[0]),
            )
        except (KeyError, TypeError, ValueError):
            continue
        points.append(point)
    return points


# The target run ----------------------------------------------------------------------------------
WARMUP_CAP_STEPS = 2000
"""Warm-up cap: DeepSeek LLM warms up for 2000 steps (arXiv:2401.02954, Sec. 2.3) at any scale."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleDecision:
    """The target run: hyperparameters from the fit, the layout from the planner, the files to run."""

    fit: Any
    """The planner's :class:`~trainplan.planner._hyperfit.FitResult` (laws, intervals, notes)."""
    priors: list[Any]
    """Published laws at the target (:class:`~trainplan.planner._hyperlaws.HyperSuggestion`)."""
    plan: Any
    """The chosen layout's :class:`~trainplan.planner.Plan` (time, cost, memory: estimates)."""
    recommendation: Any
    global_batch: int
    """Sequences per optimizer step (the fitted batch in tokens / seq_len, rounded; see ``rounding``)."""
    rounding: str
    seq_len: int
    steps: int
    warmup_steps: int
    tokens: float
    data: Any | None
    """:class:`~trainplan.planner._scaling.DataConstrainedPrediction` when ``--dataset-tokens`` is given."""
    predicted_loss: dict[str, float]
    """Final eval loss: value, low, high (data-constrained when the data repeats)."""
    spec: Any
    """The target's :class:`~trainplan.runners.TrialSpec`."""
    hyper_source: str = "fit"
    """Where the spec's LR and batch come from: ``fit``, ``step_law`` or ``deepseek``."""
    hyper_note: str = ""
    """Why, when not the fit."""
    alternatives: list[Any] = field(default_factory=list)
    """With ``--dataset-tokens``: models 0.25-4x the target's size at the same compute, each with its
    epochs and data-constrained loss (:func:`~trainplan.planner._scaling.same_compute_sizes`)."""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        hp = self.spec.hyperparams
        return {
            "kind": "scale-up", "mode": self.fit.mode,
            "notes": list(self.fit.notes) + ([self.hyper_note] if self.hyper_note else []),
            "target": {"model": self.spec.model, "non_embedding_params": self.fit.target_n, "tokens": self.tokens,
                       "seq_len": self.seq_len, "global_batch": self.global_batch, "batch_rounding": self.rounding,
                       "steps": self.steps, "warmup_steps": self.warmup_steps, "lr": hp.lr,
                       "hyperparams_from": self.hyper_source,
                       "predicted_loss": self.predicted_loss, "predicted_loss_tokens": self.fit.loss_tokens},
            "fit": self.fit.to_dict(),
            "priors": [s.to_dict(self.seq_len) for s in self.priors],
            "data": asdict(self.data) if self.data is not None else None,
            "same_compute": [asdict(a) for a in self.alternatives],
            "layout": self.plan.to_dict(),
            "recommendation": {"optimize": self.recommendation.optimize, "evaluated": self.recommendation.evaluated,
                               "feasible": self.recommendation.feasible, "min_gpus": self.recommendation.min_gpus},
        }


def _round_batch(sequences: float) -> tuple[int, str]:
    """Whole sequences that many GPU counts divide: the nearest multiple of the largest power of two
    at most 1/16 of the batch (so within ~3%; 3008 -> 3072 = 3 x 1024, which dp up to 1024 divides)."""
    step = 2 ** max(0, math.floor(math.log2(max(sequences, 1) / 16)))
    gb = max(step, step * round(sequences / step))
    return gb, f"nearest multiple of {step} sequences"


FAR = 10.0
"""Beyond this factor outside the swept N or tokens, ``auto`` writes the Step Law prior into the
target's spec instead of the fit's extrapolation (both are printed)."""
HYPER_SOURCES = ("auto", "fit", "step_law", "deepseek")


def _hyper_source(fit: Any, asked: str) -> tuple[str, str]:
    if asked not in HYPER_SOURCES:
        raise UsageError("--hyperparams-from", f"{asked!r} is not one of {', '.join(HYPER_SOURCES)}")
    d_lo, d_hi = fit.fitted_tokens
    d_far = max(fit.target_tokens / d_hi, d_lo / fit.target_tokens, 1.0)
    if asked != "auto":
        return asked, "" if asked == "fit" else f"the spec's LR and batch are the {asked} prior's (--hyperparams-from)"
    if fit.extrapolation <= FAR and d_far <= FAR:
        return "fit", ""
    return "step_law", (f"the spec's LR and batch are the Step Law prior's: the target is {fit.extrapolation:.3g}x beyond "
                        f"the swept N and {d_far:.3g}x beyond the swept tokens (more than {FAR:g}x), where the fit's "
                        "extrapolation is not trusted; --hyperparams-from fit writes the fit's instead")


def scale_target(points: list[LadderPoint], model_ref: str, *, tokens: float | None = None, gpu: str = "h100-sxm",
                 max_gpus: int = 64, budget: float | None = None, dataset_tokens: float | None = None,
                 seq_len: int | None = None, tolerance: float = 0.02, warmup_fraction: float = 0.01,
                 data: str = "stdlib", optimize: str = "time", price: float | None = None,
                 seed: int = 0, hyper_source: str = "auto") -> ScaleDecision:
    """Fit the ladder's ``points``, predict the target's hyperparameters and loss, and plan its layout."""
    from trainplan.planner import Hyperparams, Layout, chinchilla, count_parameters, load_gpu, load_model, recommend
    from trainplan.planner._hyperfit import Point, fit_ladder
    from trainplan.planner._hyperlaws import suggest_hyperparams
    from trainplan.runners import launchable_space
    from trainplan.planner._scaling import data_constrained, same_compute_sizes
    from trainplan.runners import TrialSpec

    model = load_model(model_ref)
    card = load_gpu(gpu)
    counts = count_parameters(model)
    seq_len = seq_len or min(2048, model.max_position_embeddings)
    tokens = tokens or chinchilla(counts.active).compute_optimal_tokens
    fit = fit_ladder([Point(size=p.size, n_params=p.n_params, tokens=p.tokens, lr=p.lr,
                            batch_tokens=p.batch_tokens, loss=p.loss) for p in points],
                     counts.non_embedding, tokens, tolerance=tolerance, seed=seed)
    priors = suggest_hyperparams(n_layer=model.num_layers, d_model=model.hidden_size, seq_len=seq_len,
                                 non_embedding_params=counts.non_embedding, tokens=tokens)
    source, note = _hyper_source(fit, hyper_source)
    if source == "fit":
        lr, batch_tokens = fit.lr.value, fit.batch_tokens.value
    else:
        chosen = next(p for p in priors if p.law == source)
        lr, batch_tokens = chosen.lr, chosen.batch_tokens
    global_batch, rounding = _round_batch(batch_tokens / seq_len)
    steps = math.ceil(tokens / (global_batch * seq_len))
    warmup = max(1, min(round(warmup_fraction * steps), WARMUP_CAP_STEPS, steps))
    loss = fit.loss.to_dict()
    dc, alternatives = None, []
    if dataset_tokens is not None:
        dc = data_constrained(counts.active, tokens, dataset_tokens)
        alternatives = same_compute_sizes(counts.active, tokens, dataset_tokens)
        if dc.epochs > 1 and fit.loss_tokens == tokens:  # the law's repetition penalty, in its own nats, added
            penalty = dc.predicted_loss - dc.predicted_loss_unconstrained
            loss = {k: v + penalty for k, v in loss.items()}
    base = Layout(gpus=1, seq_len=seq_len, precision="bf16", micro_batch=1)
    # The target is launched by the runner: data parallel, checkpointing none or full.
    rec = recommend(model, card, base, global_batch=global_batch, tokens=tokens, optimize=optimize,
                    space=launchable_space(max_gpus=max_gpus), price=price)
    ranked = [p for p in rec.ranked if budget is None or p.cost_usd <= budget]
    if not rec.ranked:
        raise UsageError("--max-gpus", f"no data-parallel layout of {model.name} with global batch {global_batch} fits "
                                       f"{card.name} memory on up to {max_gpus} GPUs; raise --max-gpus")
    if not ranked:
        cheapest = min(p.cost_usd for p in rec.ranked)
        raise UsageError("--budget", f"no layout up to {max_gpus} GPUs costs <= ${budget:,.0f}; the cheapest "
                                     f"costs ${cheapest:,.0f} (lower --tokens or raise --budget)")
    best = ranked[0]
    hp = Hyperparams(lr=lr, warmup_steps=warmup, total_steps=steps, schedule="cosine", weight_decay=0.1)
    spec = TrialSpec(model=model_ref, data=data, steps=steps, layout=best.layout, hyperparams=hp, gpu=card.key,
                     eval_every=max(1, steps // 20), log_every=10).validate()
    return ScaleDecision(
        fit=fit, priors=priors, hyper_source=source, hyper_note=note,
        plan=best, recommendation=rec, global_batch=global_batch, rounding=rounding, seq_len=seq_len, steps=steps,
        warmup_steps=warmup, tokens=tokens, data=dc, predicted_loss=loss, spec=spec, alternatives=alternatives,
    )


def write_target(decision: ScaleDecision, out_dir: Path) -> list[Path]:
    """Write the target's ``spec.json``, ``ds_config.json``, ``cmd.txt`` and ``scale.json`` into ``out_dir``."""
    import json
    import shlex

    from trainplan.runners._launch import build_command

    out_dir.mkdir(parents=True, exist_ok=True)
    spec = decision.spec
    spec_path = spec.to_json(out_dir / "spec.json")
    (out_dir / "ds_config.json").write_text(json.dumps(spec.ds_config(), indent=2) + "\n")
    lay = spec.layout
    several = lay.nodes > 1  # several hosts: the launcher reads them from a hostfile the user writes
    cmd = build_command(spec_path, gpus=lay.gpus_per_node if several else lay.gpus, master_port=29500,
                        hostfile="hostfile" if several else None, nodes=lay.nodes)
    (out_dir / "cmd.txt").write_text(shlex.join(cmd) + "\n")
    (out_dir / "scale.json").write_text(json.dumps(decision.to_dict(), indent=2, default=str) + "\n")
    return [out_dir / n for n in ("spec.json", "ds_config.json", "cmd.txt", "scale.json")]
