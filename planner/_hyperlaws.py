"""Published hyperparameter scaling laws: a suggested peak learning rate and global batch.

These are *priors*: each paper fitted its constants on its own data, tokenizer, optimizer and
schedule, and the values transfer only approximately. ``trainplan scale`` fits the same forms
from the user's own ladder sweep (:mod:`trainplan.planner._hyperfit`) and shows the priors beside
the fit.

- DeepSeek LLM (Bi et al. 2024, arXiv:2401.02954, Sec. 3.1, eq. 1):
  eta_opt = 0.3118 C^-0.1250, B_opt = 0.2920 C^0.3271 (tokens), with the compute C = M D and
  M = 72 n_layer d^2 + 12 n_layer d l_seq the non-embedding FLOPs per token (Sec. 3.2, eq. 2).
- Step Law (Li et al. 2025, arXiv:2503.04715, Sec. 3): eta = 1.79 N^-0.713 D^0.307,
  B = 0.58 D^0.571 (tokens), N non-embedding parameters, D training tokens.

Pure Python, no imports beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HyperSuggestion", "deepseek", "deepseek_flops_per_token", "step_law", "suggest_hyperparams"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HyperSuggestion:
    """One law's suggestion for a model and token budget (a prediction from published constants)."""

    law: str
    """Short name: ``deepseek`` or ``step_law``."""
    source: str
    """Paper and equation the constants come from."""
    lr: float
    """Suggested peak learning rate."""
    batch_tokens: float
    """Suggested global batch in tokens."""
    inputs: dict[str, float]
    """The quantities the law was evaluated at (compute, non-embedding parameters, tokens)."""

    def batch_sequences(self, seq_len: int) -> int:
        """The batch in whole sequences of ``seq_len`` tokens (at least 1)."""
        return max(1, round(self.batch_tokens / seq_len))

    def to_dict(self, seq_len: int | None = None) -> dict[str, object]:
        out: dict[str, object] = {"law": self.law, "source": self.source, "lr": self.lr,
                                  "batch_tokens": self.batch_tokens, "inputs": dict(self.inputs)}
        if seq_len:
            out["batch_sequences"] = self.batch_sequences(seq_len)
        return out


DEEPSEEK_SOURCE = "DeepSeek LLM, Bi et al. 2024 (arXiv:2401.02954, Sec. 3.1 eq. 1; M from Sec. 3.2 eq. 2)"
STEP_LAW_SOURCE = "Step Law, Li et al. 2025 (arXiv:2503.04715, Sec. 3)"

# DeepSeek LLM, eq. 1: eta_opt = 0.3118 C^-0.1250, B_opt = 0.2920 C^0.3271.
DEEPSEEK_LR = (0.3118, -0.1250)
DEEPSEEK_BATCH = (0.2920, 0.3271)
# Step Law: eta = 1.79 N^-0.713 D^0.307, B = 0.58 D^0.571.
STEP_LR = (1.79, -0.713, 0.307)
STEP_BATCH = (0.58, 0.571)


def deepseek_flops_per_token(n_layer: int, d_model: int, seq_len: int) -> float:
    """M = 72 n_layer d^2 + 12 n_layer d l_seq: non-embedding FLOPs per token, attention included
    (DeepSeek LLM, arXiv:2401.02954, Sec. 3.2, eq. 2)."""
    return 72.0 * n_layer * d_model**2 + 12.0 * n_layer * d_model * seq_len


def deepseek(compute: float) -> HyperSuggestion:
    """DeepSeek LLM's optimal learning rate and batch (tokens) at compute ``C = M D`` FLOPs."""
    if compute <= 0:
        raise ValueError(f"compute must be positive, got {compute}")
    return HyperSuggestion(
        law="deepseek", source=DEEPSEEK_SOURCE,
        lr=DEEPSEEK_LR[0] * compute ** DEEPSEEK_LR[1],
        batch_tokens=DEEPSEEK_BATCH[0] * compute ** DEEPSEEK_BATCH[1],
        inputs={"compute": compute},
    )


def step_law(non_embedding_params: float, tokens: float) -> HyperSuggestion:
    """Step Law's optimal learning rate and batch (tokens) for N non-embedding parameters and D tokens."""
    if non_embedding_params <= 0 or tokens <= 0:
        raise ValueError("non-embedding parameters and tokens must be positive")
    return HyperSuggestion(
        law="step_law", source=STEP_LAW_SOURCE,
        lr=STEP_LR[0] * non_embedding_params ** STEP_LR[1] * tokens ** STEP_LR[2],
        batch_tokens=STEP_BATCH[0] * tokens ** STEP_BATCH[1],
        inputs={"non_embedding_params": non_embedding_params, "tokens": tokens},
    )


def suggest_hyperparams(*, n_layer: int, d_model: int, seq_len: int, non_embedding_params: float,
                        tokens: float) -> list[HyperSuggestion]:
    """Both laws for one model and token budget, DeepSeek first."""
    m = deepseek_flops_per_token(n_layer, d_model, seq_len)
    ds = deepseek(m * tokens)
    ds = HyperSuggestion(law=ds.law, source=ds.source, lr=ds.lr, batch_tokens=ds.batch_tokens,
                         inputs={"compute": m * tokens, "flops_per_token_M": m, "tokens": tokens})
    return [ds, step_law(non_embedding_params, tokens)]
