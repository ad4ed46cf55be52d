"""Monte-Carlo estimates, with standard errors, of the quantities in Theorem 1 (eq 11) for real LLMs.

For a prompter ρ, a reference prompter ρ_sft, a frozen target π_F and a reward r on a set of prompts x, this module
estimates, per prompt and then as mean ± standard error across prompts:

- ``KL(ρ(·|x)‖ρ_sft(·|x))`` (the regulariser of eq 9), from K rewrites x′ ~ ρ scored under both prompters;
- ``KL(π_F(·|x)‖π_F(·|x′))`` for x′ ~ ρ_sft, from S answers y ~ π_F(·|x) scored under both prompts (one model,
  two conditionings), turned into an upper estimate of ``d_TV`` by Pinsker: eq (11)'s term2;
- ``KL(π*(·|x)‖π_F(·|x))`` for π* ∝ π_F exp(r/β) (eq 4), by self-normalised importance weighting of the same S
  answers: eq (11)'s term1 via Pinsker (and a direct importance estimate of d_TV beside it);
- ``KL(ρ*(·|x)‖ρ_sft(·|x))`` for ρ* ∝ ρ_sft exp(R̂/λ) (eq 10) represented on the K rewrites x′ ~ ρ_sft:
  eq (11)'s term3.

The distributions are the models' own: everything is sampled at temperature 1 with no top-p/top-k truncation, so
the log-probs we compute are those of the actual sampling distribution. A sampled sequence's probability includes
its stop event: ``log π(stop | prompt, a)`` (mass on the end-of-sequence tokens) is added when the sample ended
before ``max_new_tokens``. What each estimate is and is not is spelled out in docs/theory.md ("Estimates for real
LLMs"). The pure functions of arrays come first; the model passes (``sequence_logprobs``, ``estimate_theorem1``)
after them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from alignpro.backends.chat import user_turn
from alignpro.errors import AlignProError
from alignpro.method import candidate_log_prior, kl_to_prior, optimal_prompter_weights
from alignpro.metrics import standard_error
from alignpro.train.kl import KLEstimator

__all__ = [
    "KLEstimator", "Estimate", "ImportanceEstimate", "QUANTITIES", "Theorem1Estimates",
    "kl_from_logprobs", "pinsker_tv_upper", "importance_tv", "importance_kl_optimal_policy", "term1_pinsker_upper",
    "term2_pinsker_upper", "term3_candidates", "response_token_logprobs", "sequence_logprobs",
    "model_sampling", "prompter_kl", "estimate_theorem1",
]


# ---------------------------------------------------------------------------------------------------------------
# Pure functions of arrays
# ---------------------------------------------------------------------------------------------------------------

def _k1(d: np.ndarray) -> np.ndarray:
    return d


def _k2(d: np.ndarray) -> np.ndarray:
    return 0.5 * d ** 2


def _k3(d: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.expm1(-d) - (-d)  # (r − 1) − log r with log r = −d


#: KLEstimator → elementwise function of d = log p_policy − log p_ref (sequence level, no clamping).
_SEQUENCE_KL = {KLEstimator.K1: _k1, KLEstimator.K2: _k2, KLEstimator.K3: _k3}


def kl_from_logprobs(logp_policy: np.ndarray, logp_ref: np.ndarray,
                     estimator: KLEstimator = KLEstimator.K1) -> np.ndarray:
    """``KL(p‖q) ≈ mean_s f(log p(z_s) − log q(z_s))`` over samples ``z_s ~ p`` (the last axis). (..., S) → (...).

    Used for eq (9)'s ``KL(ρ‖ρ_sft)`` (z = a rewrite, p = ρ, q = ρ_sft) and for term2's ``KL(π_F(·|x)‖π_F(·|x′))``
    (z = an answer, p = π_F(·|x), q = π_F(·|x′)). Inputs are whole-sequence log-probs. Schulman's estimators:
    k1 (f(d) = d: unbiased, can be negative), k2 (½d²: biased, ≥ 0), k3 (e^{−d} − 1 + d: unbiased, ≥ 0; at the
    sequence level it overflows to inf once q/p exceeds e^709 and has a heavy tail well before).
    """
    d = np.asarray(logp_policy, float) - np.asarray(logp_ref, float)  # (..., S)
    return _SEQUENCE_KL[KLEstimator(estimator)](d).mean(axis=-1)


def pinsker_tv_upper(kl: np.ndarray | float) -> np.ndarray:
    """Pinsker: ``d_TV(p, q) ≤ min(1, sqrt(KL(p‖q)/2))``. A KL estimate below 0 (k1 can give one) counts as 0."""
    return np.minimum(1.0, np.sqrt(np.maximum(np.asarray(kl, float), 0.0) / 2.0))


def importance_tv(logp_p: np.ndarray, logp_q: np.ndarray) -> np.ndarray:
    """``d_TV(p, q) = 1 − E_{z~p} min(1, q(z)/p(z)) ≈ 1 − mean_s min(1, e^{log q(z_s) − log p(z_s)})``, z_s ~ p.

    (..., S) → (...) along the last axis. Unbiased when q ≪ p (true of softmax LMs), with no Pinsker step; each
    term lies in [0, 1], so the estimate does too and its variance is at most 1/(4S). (The other importance form,
    ½ E_p |1 − q/p|, is unbiased too but heavy-tailed: it needs rare samples with huge q/p to see q's mass.)
    """
    log_ratio = np.asarray(logp_q, float) - np.asarray(logp_p, float)  # (..., S) log q/p
    return 1.0 - np.exp(np.minimum(log_ratio, 0.0)).mean(axis=-1)


@dataclass(frozen=True)
class ImportanceEstimate:
    """π* ∝ π_F exp(r/β) (eq 4) seen through S samples y_s ~ π_F(·|x); every field is (...) per prompt."""

    kl: np.ndarray  #: KL(π*‖π_F) ≈ Σ_s w_s log(S·w_s) ∈ [0, log S]
    tv: np.ndarray  #: d_TV(π*, π_F) ≈ ½ Σ_s |w_s − 1/S| (direct, no Pinsker)
    reward_pi_star: np.ndarray  #: E_{π*} r ≈ Σ_s w_s r_s
    reward_pi_F: np.ndarray  #: E_{π_F} r ≈ mean_s r_s


def importance_kl_optimal_policy(rewards: np.ndarray, beta: float) -> ImportanceEstimate:
    """Eq (4)'s π* ∝ π_F exp(r/β) by self-normalised importance weights on ``rewards`` (..., S) of y_s ~ π_F.

    With ``w = softmax(r/β)`` over the S samples (π*/π_F ≈ S·w):
    ``KL(π*‖π_F) ≈ Σ w r/β − log mean exp(r/β) = Σ w log(S w)``, computed from ``log w = r/β − logsumexp(r/β)``
    so that no exponential overflows for any β > 0. The estimate is KL(w‖uniform) on the samples, so it lies in
    [0, log S]: it is biased low when π* puts its mass on answers π_F rarely samples (small β, small S).
    """
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    r = np.asarray(rewards, float)  # (..., S)
    s = r.shape[-1]
    z = r / beta
    shifted = z - z.max(axis=-1, keepdims=True)  # (..., S) ≤ 0, exact 0 at the best sample(s)
    log_w = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # (..., S) log softmax
    w = np.exp(log_w)
    return ImportanceEstimate(kl=np.maximum((w * (log_w + math.log(s))).sum(axis=-1), 0.0),
                              tv=0.5 * np.abs(w - 1.0 / s).sum(axis=-1),
                              reward_pi_star=(w * r).sum(axis=-1), reward_pi_F=r.mean(axis=-1))


def term1_pinsker_upper(kl_pi_star: np.ndarray, r_max: float) -> np.ndarray:
    """Eq (11)'s term1 per prompt, upper estimate: ``r_max·d_TV(π*, π_F) ≤ r_max·min(1, sqrt(KL(π*‖π_F)/2))``."""
    return r_max * pinsker_tv_upper(kl_pi_star)


def term2_pinsker_upper(kl_answers: np.ndarray, r_max: float) -> np.ndarray:
    """Eq (11)'s term2 per prompt, upper estimate: ``r_max·E_{x′~ρ_sft} min(1, sqrt(KL(π_F(·|x)‖π_F(·|x′))/2))``.

    ``kl_answers`` (..., K): one KL estimate per rewrite x′_k ~ ρ_sft(·|x) → (...).
    """
    return r_max * pinsker_tv_upper(kl_answers).mean(axis=-1)


def term3_candidates(r_hat: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Eq (10)'s ρ* on K rewrites x′_k ~ ρ_sft(·|x): ``w = softmax(R̂/λ)`` and ``KL(ρ*‖ρ_sft) = KL(w‖uniform)``.

    ``r_hat`` (..., K) → (weights (..., K), KL (...)). The KL lies in [0, log K]; eq (11)'s term3 is ``−λ·KL``.
    """
    r_hat = np.asarray(r_hat, float)
    log_prior = candidate_log_prior(r_hat.shape[-1], 0.0)  # (K,) uniform: the K samples represent ρ_sft
    weights = optimal_prompter_weights(r_hat, log_prior, lam)
    return weights, np.maximum(kl_to_prior(weights, log_prior), 0.0)


@dataclass(frozen=True)
class Estimate:
    """Mean ± standard error of per-prompt values across n prompts (s.e. 0 when n < 2, as everywhere)."""

    mean: float
    stderr: float
    n: int

    @classmethod
    def from_values(cls, values: np.ndarray) -> "Estimate":
        v = np.asarray(values, float).ravel()
        n = int(v.size)
        if n == 0:
            raise ValueError("no values to estimate from")
        return cls(float(v.mean()), standard_error(v), n)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "stderr": self.stderr, "n": self.n}


#: name → what it estimates (printed by the CLI and written to the JSON). Order is the report's order.
QUANTITIES: dict[str, str] = {
    "kl_prompter": "KL(ρ‖ρ_sft) nats, eq (9)'s regulariser: K rewrites x′ ~ ρ scored under ρ and ρ_sft",
    "kl_answers": "E_{x′~ρ_sft} KL(π_F(·|x)‖π_F(·|x′)) nats: S answers y ~ π_F(·|x) scored under x and x′",
    "tv_answers_upper": "E_{x′~ρ_sft} min(1, sqrt(KL/2)): Pinsker upper estimate of E d_TV(π_F(·|x), π_F(·|x′))",
    "tv_answers": "E_{x′~ρ_sft} d_TV(π_F(·|x), π_F(·|x′)) directly: 1 − mean min(1, π_F(y|x′)/π_F(y|x)), no Pinsker",
    "kl_pi_star": "KL(π*‖π_F) nats, π* ∝ π_F e^{r/β} (eq 4): self-normalised importance weights, ≤ log S",
    "tv_pi_star": "d_TV(π*, π_F) from the same weights, ½Σ|w − 1/S| (direct, not Pinsker)",
    "reward_pi_F": "E_{y~π_F(·|x)} r(x, y)",
    "reward_pi_star": "E_{y~π*(·|x)} r(x, y) ≈ Σ w r (importance weights)",
    "delta1": "E Δ1 = E_{π*} r − E_{π_F} r (eq 7), the part of the gap that term1 bounds",
    "kl_rho_star": "KL(ρ*‖ρ_sft) nats, ρ* ∝ e^{R̂/λ} on the K rewrites x′ ~ ρ_sft (eq 10), ≤ log K",
    "term1_upper": "r_max·min(1, sqrt(KL(π*‖π_F)/2)): Pinsker upper estimate of eq (11)'s term1",
    "term2_upper": "r_max·E_{x′} min(1, sqrt(KL/2)): Pinsker upper estimate of eq (11)'s term2",
    "term3": "−λ·KL(ρ*‖ρ_sft): eq (11)'s term3 on the K rewrites",
    "bound_upper": "term1_upper + term2_upper + term3: Pinsker upper estimate of eq (11)'s right side, NOT the bound",
    "term1_direct": "r_max·d_TV(π*, π_F) from the importance weights (tv_pi_star): eq (11)'s term1, no Pinsker",
    "term2_direct": "r_max·tv_answers: eq (11)'s term2, no Pinsker",
    "bound_direct": "term1_direct + term2_direct + term3: estimate of eq (11)'s right side (biased; see docs)",
}


# ---------------------------------------------------------------------------------------------------------------
# Teacher-forced log-probs under a causal LM
# ---------------------------------------------------------------------------------------------------------------

def response_token_logprobs(lm, prompt_messages_list: Sequence[list[dict[str, str]]],
                            response_token_ids_list: Sequence[Sequence[int]],
                            ended: Sequence[bool] | None = None) -> list[np.ndarray]:
    """Per-token ``log π(a_t | prompt, a_<t)`` of each response under ``lm`` (an ``HFCausalLM``) by teacher forcing.

    Each prompt is rendered with ``lm.chat_prompt`` (ready for the assistant's turn) and tokenised as
    ``HFCausalLM.sample`` does; the response token ids are appended. Rows are batched by length
    (``lm.batch_size``), left-padded, and passed through :func:`alignpro.train.policy.response_forward` (the one
    teacher-forced pass: the attention mask and the position ids ``generate`` uses), so the values match the
    log-probs ``sample`` returns for the same tokens. Where ``ended[i]`` is true the row gets one
    more entry: ``log Σ_{e ∈ stop tokens} π(e | prompt, a)``, the probability that the sample stopped there.
    Returns N arrays of shape (T_i,) or (T_i + 1,).
    """
    import torch

    from alignpro.train.losses import logprobs_from_logits
    from alignpro.train.policy import response_forward

    n = len(prompt_messages_list)
    if len(response_token_ids_list) != n:
        raise ValueError(f"{n} prompts but {len(response_token_ids_list)} responses")
    ended = [False] * n if ended is None else list(ended)
    tok = lm.tokenizer
    prompt_ids = [tok(lm.chat_prompt(m), add_special_tokens=False)["input_ids"] for m in prompt_messages_list]
    responses = [list(map(int, r)) for r in response_token_ids_list]
    stop_ids = torch.tensor(sorted(lm.stop_ids()), device=lm.device)  # where HFCausalLM.sample stops
    order = sorted(range(n), key=lambda i: len(prompt_ids[i]) + len(responses[i]))
    out: list[np.ndarray] = [np.zeros(0)] * n
    for start in range(0, n, lm.batch_size):
        idx = order[start:start + lm.batch_size]
        seqs = [prompt_ids[i] + responses[i] for i in idx]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(idx), length), tok.pad_token_id, dtype=torch.long)  # (B, L) left-padded
        mask = torch.zeros((len(idx), length), dtype=torch.long)  # (B, L) 1 on real tokens
        for row, s in enumerate(seqs):
            ids[row, length - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[row, length - len(s):] = 1
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        t_max = max(len(responses[i]) for i in idx)  # every row's response ends in the last column
        with torch.no_grad():
            logits, _ = response_forward(lm.model, ids, mask, t_max, share_prefix=False,
                                         after_last=True)  # (B, T+1, V)
            token_logp = logprobs_from_logits(logits[:, :-1], ids[:, length - t_max:])  # (B, T)
            stop_logp = torch.logsumexp(torch.log_softmax(logits[:, -1].float(), dim=-1)[:, stop_ids], dim=-1)  # (B,)
        for row, i in enumerate(idx):
            t = len(responses[i])
            values = token_logp[row, t_max - t:]  # (T_i,) this row's response tokens
            if ended[i]:
                values = torch.cat([values, stop_logp[row].reshape(1)])  # the stop event after the last token
            out[i] = values.double().cpu().numpy()
    return out


def sequence_logprobs(lm, prompt_messages_list: Sequence[list[dict[str, str]]],
                      response_token_ids_list: Sequence[Sequence[int]],
                      ended: Sequence[bool] | None = None) -> np.ndarray:
    """``log π(response | prompt)`` summed over tokens (plus the stop event where ``ended``), shape (N,).

    See :func:`response_token_logprobs` for the batching and what the stop event is.
    """
    rows = response_token_logprobs(lm, prompt_messages_list, response_token_ids_list, ended)
    return np.asarray([float(r.sum()) for r in rows], dtype=float)


# ---------------------------------------------------------------------------------------------------------------
# The estimate on a prompt set
# ---------------------------------------------------------------------------------------------------------------

def model_sampling(max_new_tokens: int):
    """Temperature 1, no top-p/top-k: samples come from the model itself, so their log-probs are exact."""
    from alignpro.backends.base import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, do_sample=True)


@dataclass
class Theorem1Estimates:
    """Per-prompt estimates of Theorem 1's quantities (N prompts, K rewrites, S answers)."""

    prompts: list[str]  #: (N,) original prompts x
    rewrites: list[list[str]]  #: (N, K) parsed rewrites x′ ~ ρ_sft(·|x) (x itself where none could be parsed)
    parsed: np.ndarray  #: (N, K) whether a rewrite could be parsed out of ρ_sft's output
    kl_prompter: np.ndarray  #: (N,) KL(ρ‖ρ_sft)(x) over K rewrites x′ ~ ρ
    kl_answers: np.ndarray  #: (N, K) KL(π_F(·|x)‖π_F(·|x′_k)) over S answers y ~ π_F(·|x)
    tv_answers: np.ndarray  #: (N, K) d_TV(π_F(·|x), π_F(·|x′_k)) by importance_tv on the same answers
    importance: ImportanceEstimate  #: (N,) fields: π* (eq 4) through the S answers y ~ π_F(·|x)
    r_hat: np.ndarray  #: (N, K) R̂(x, x′_k): mean r(x, y) over S answers y ~ π_F(·|x′_k)
    rho_star: np.ndarray  #: (N, K) eq (10)'s ρ* weights on the K rewrites
    kl_rho_star: np.ndarray  #: (N,) KL(ρ*‖ρ_sft) = KL(weights‖uniform)
    r_max: float
    lam: float
    beta: float
    rewards_outside: int = 0  #: sampled rewards outside [0, r_max] (Theorem 1 assumes r ∈ [0, r_max])
    settings: dict[str, Any] = field(default_factory=dict)

    def per_prompt(self) -> dict[str, np.ndarray]:
        """Each quantity of :data:`QUANTITIES`, (N,) per prompt."""
        term1 = term1_pinsker_upper(self.importance.kl, self.r_max)
        term2 = term2_pinsker_upper(self.kl_answers, self.r_max)
        term3 = -self.lam * self.kl_rho_star
        term1_direct = self.r_max * self.importance.tv
        term2_direct = self.r_max * self.tv_answers.mean(axis=-1)
        return {
            "kl_prompter": self.kl_prompter,
            "kl_answers": self.kl_answers.mean(axis=-1),
            "tv_answers_upper": pinsker_tv_upper(self.kl_answers).mean(axis=-1),
            "tv_answers": self.tv_answers.mean(axis=-1),
            "kl_pi_star": self.importance.kl,
            "tv_pi_star": self.importance.tv,
            "reward_pi_F": self.importance.reward_pi_F,
            "reward_pi_star": self.importance.reward_pi_star,
            "delta1": self.importance.reward_pi_star - self.importance.reward_pi_F,
            "kl_rho_star": self.kl_rho_star,
            "term1_upper": term1,
            "term2_upper": term2,
            "term3": term3,
            "bound_upper": term1 + term2 + term3,
            "term1_direct": term1_direct,
            "term2_direct": term2_direct,
            "bound_direct": term1_direct + term2_direct + term3,
        }

    def summary(self) -> dict[str, Estimate]:
        """Mean ± standard error across the N prompts of each quantity."""
        return {name: Estimate.from_values(values) for name, values in self.per_prompt().items()}

    def to_dict(self) -> dict[str, Any]:
        per = self.per_prompt()
        return {
            "settings": self.settings, "r_max": self.r_max, "lam": self.lam, "beta": self.beta,
            "n_prompts": len(self.prompts), "rewards_outside_range": self.rewards_outside,
            "parsed_rewrites": int(self.parsed.sum()), "rewrites_total": int(self.parsed.size),
            "estimates": {name: {**est.to_dict(), "meaning": QUANTITIES[name]}
                          for name, est in self.summary().items()},
            "per_prompt": [{"prompt": x, "rewrites": self.rewrites[i], "r_hat": self.r_hat[i].tolist(),
                            "rho_star": self.rho_star[i].tolist(), "kl_answers_k": self.kl_answers[i].tolist(),
                            "tv_answers_k": self.tv_answers[i].tolist(), "parsed": self.parsed[i].tolist(),
                            **{name: float(v[i]) for name, v in per.items()}}
                           for i, x in enumerate(self.prompts)],
        }


def _sample_rewrites(lm, template, prompts: list[str], k: int, gen, seed: int):
    """K rewrites per prompt from ``lm``: (conversations (N·K,), token ids (N·K,), ended (N·K,), texts (N·K,))."""
    convs = [template.messages(x) for x in prompts for _ in range(k)]
    g = lm.sample(convs, gen, seed=seed)
    ended = [len(ids) < gen.max_new_tokens for ids in g.token_ids]  # sample() cuts at the first stop token
    return convs, g.token_ids, ended, g.texts


def prompter_kl(prompts: Sequence[str], prompter_lm, reference_lm, template, *, k: int, gen, seed: int = 0,
                estimator: KLEstimator = KLEstimator.K1) -> tuple[np.ndarray, list[str]]:
    """Eq (9)'s ``KL(ρ(·|x)‖ρ_sft(·|x))`` per prompt: K rewrites a ~ ρ(·|x) (the prompter's raw outputs, sampled
    with ``gen``), each scored by teacher forcing under ρ and ρ_sft over the same templated rewrite request.

    Returns (KL (N,), the N·K raw outputs). ``gen`` must sample from the model itself (temperature 1, no top-p or
    top-k) for the estimate to be of the KL between the models. One model in both roles gives exactly 0.
    """
    if reference_lm is not prompter_lm and prompter_lm.tokenizer.get_vocab() != reference_lm.tokenizer.get_vocab():
        raise AlignProError(f"the prompter '{prompter_lm.path}' and the reference '{reference_lm.path}' use different "
                            "tokenizers: KL(ρ‖ρ_sft) is computed token by token and needs one vocabulary")
    prompts = list(prompts)
    convs, ids, ended, raw = _sample_rewrites(prompter_lm, template, prompts, k, gen, seed)
    logp_policy = sequence_logprobs(prompter_lm, convs, ids, ended).reshape(len(prompts), k)  # (N, K) log ρ(a|x)
    logp_ref = (logp_policy if reference_lm is prompter_lm
                else sequence_logprobs(reference_lm, convs, ids, ended).reshape(len(prompts), k))  # log ρ_sft(a|x)
    return kl_from_logprobs(logp_policy, logp_ref, estimator), raw


def estimate_theorem1(prompts: Sequence[str], *, prompter_lm, reference_lm, target_lm, reward, template,
                      k: int, samples: int, lam: float, beta: float, r_max: float, max_new_tokens: int,
                      seed: int = 0, estimator: KLEstimator = KLEstimator.K1) -> Theorem1Estimates:
    """Sample and score everything Theorem 1's estimates need; see the module docstring for the estimators.

    ``prompter_lm`` (ρ), ``reference_lm`` (ρ_sft) and ``target_lm`` (π_F) are ``HFCausalLM`` instances (the same
    object may play several roles); ``reward`` is a :class:`RewardModel`; ``template`` a ``RewriteTemplate``.
    """
    prompts = list(prompts)
    n = len(prompts)
    gen = model_sampling(max_new_tokens)

    # ---- (1) KL(ρ‖ρ_sft): rewrites x′ ~ ρ, their token sequences scored under ρ and ρ_sft ------------------
    kl_prompter, raw = prompter_kl(prompts, prompter_lm, reference_lm, template, k=k, gen=gen, seed=seed,
                                   estimator=estimator)  # (N,), (N·K,)

    # ---- (2) rewrites x′ ~ ρ_sft (those of stage 1 when ρ is ρ_sft) ------------------------------------------
    if reference_lm is not prompter_lm:
        _, _, _, raw = _sample_rewrites(reference_lm, template, prompts, k, gen, seed + 1)
    parsed_pairs = [template.parse(raw[i * k + j], x) for i, x in enumerate(prompts) for j in range(k)]
    rewrites = [[parsed_pairs[i * k + j][0] for j in range(k)] for i in range(n)]  # (N, K)
    parsed = np.asarray([ok for _, ok in parsed_pairs], dtype=bool).reshape(n, k)

    # ---- (3) answers y ~ π_F(·|x), scored under x and under each x′_k; rewards r(x, y) ----------------------
    g = target_lm.sample([user_turn(x) for x in prompts for _ in range(samples)], gen, seed=seed + 2)
    y_ended = [len(t) < max_new_tokens for t in g.token_ids]
    logp_x = sequence_logprobs(target_lm, [user_turn(x) for x in prompts for _ in range(samples)], g.token_ids,
                               y_ended).reshape(n, 1, samples)  # (N, 1, S) log π_F(y|x)
    xprime_rows = [(i, j, s) for i in range(n) for j in range(k) for s in range(samples)
                   if rewrites[i][j] != prompts[i]]  # x′ = x gives KL = 0 exactly: no need to score it again
    logp_xprime = np.broadcast_to(logp_x, (n, k, samples)).copy()  # (N, K, S) log π_F(y|x′_k)
    if xprime_rows:
        scored = sequence_logprobs(target_lm, [user_turn(rewrites[i][j]) for i, j, _ in xprime_rows],
                                   [g.token_ids[i * samples + s] for i, _, s in xprime_rows],
                                   [y_ended[i * samples + s] for i, _, s in xprime_rows])
        for (i, j, s), value in zip(xprime_rows, scored):
            logp_xprime[i, j, s] = value
    kl_answers = kl_from_logprobs(logp_x, logp_xprime, estimator)  # (N, K)
    tv_answers = importance_tv(logp_x, logp_xprime)  # (N, K)
    r_x = np.asarray(reward.score([x for x in prompts for _ in range(samples)], g.texts),
                     dtype=float).reshape(n, samples)  # (N, S) r(x, y), y ~ π_F(·|x)
    importance = importance_kl_optimal_policy(r_x, beta)

    # ---- (4) R̂(x, x′_k) from answers y ~ π_F(·|x′_k) scored against the ORIGINAL x; ρ* and its KL ------------
    g2 = target_lm.sample([user_turn(rewrites[i][j]) for i in range(n) for j in range(k) for _ in range(samples)],
                          gen, seed=seed + 3)
    r_xprime = np.asarray(reward.score([x for x in prompts for _ in range(k * samples)], g2.texts),
                          dtype=float).reshape(n, k, samples)  # (N, K, S)
    r_hat = r_xprime.mean(axis=-1)  # (N, K)
    rho_star, kl_rho_star = term3_candidates(r_hat, lam)

    all_r = np.concatenate([r_x.ravel(), r_xprime.ravel()])
    outside = int(((all_r < 0) | (all_r > r_max)).sum())
    return Theorem1Estimates(prompts, rewrites, parsed, kl_prompter, kl_answers, tv_answers, importance, r_hat,
                             rho_star, kl_rho_star, float(r_max), float(lam), float(beta), outside)
