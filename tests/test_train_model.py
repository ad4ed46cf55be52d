"""Tier 2: two training steps on the REAL embedded SmolLM2-135M for each role × algorithm.

Asserts the policy's parameters moved, the reference's did not, and every logged number is finite. Tiny
settings (2 prompts × K=2, 8-token responses, a one-line rewrite template) keep each run to seconds; the target
π_F is the real model; the reward is the deterministic fake (the builtin one is tested elsewhere).
"""

import json
import math

import pytest
import torch

from alignpro.backends.base import GenerationConfig
from alignpro.backends.fake import FakeReward
from alignpro.config import build_config
from alignpro.train.config import TrainConfig
from alignpro.train.loop import train

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def smollm2_weights(smollm2_path):
    from safetensors.torch import load_file

    return load_file(str(smollm2_path / "model.safetensors"))


@pytest.fixture(scope="module")
def smollm2_target():
    from alignpro.specs import make_target

    return make_target("smollm2", GenerationConfig(max_new_tokens=8), batch_size=8)


@pytest.fixture(scope="module")
def short_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("tpl") / "short.yaml"
    path.write_text('system: "Rewrite the prompt to be clearer. Output only the rewrite."\nuser: "{prompt}"\n')
    return str(path)


def _changed(module, weights):
    """Names of the LM tensors that differ from the original SmolLM2 weights."""
    params = dict(module.named_parameters())
    return [n for n, w in weights.items() if n in params and not torch.equal(params[n].detach().cpu(), w)]


@pytest.mark.parametrize("role,algo", [(r, a) for r in ("prompter", "oracle") for a in ("ppo", "rloo", "grpo")])
def test_two_steps_on_smollm2_move_the_policy_not_the_reference(role, algo, tmp_path, smollm2_weights,
                                                                smollm2_target, short_template):
    torch.set_num_threads(1)
    cfg = build_config(TrainConfig, dict(
        role=role, algo=algo, steps=2, out=str(tmp_path / "run"), prompter="smollm2", target="smollm2",
        reward="fake", template=short_template, batch_size=2, k=2, m=1, max_new_tokens=8, answer_max_new_tokens=8,
        epochs=1, num_minibatches=2 if algo == "ppo" else 1, lr=1e-5, save_every=2, keep_checkpoints=1,
        progress=False))
    result = train(cfg, target=smollm2_target if role == "prompter" else None, reward=FakeReward())

    assert _changed(result.policy.lm, smollm2_weights), "the policy did not move"
    assert not _changed(result.reference.frozen_lm, smollm2_weights), "the reference moved"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, (int, float))), r
        assert {"reward_mean", "reward_std", "kl", "kl_k3", "entropy", "policy_loss", "clip_frac",
                "tokens_per_s", "seconds"} <= set(r)
        assert ("value_loss" in r) == (algo == "ppo") and ("kl_loss" in r) == (algo == "grpo")
        assert r["reward_n"] == 4
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # step 1 samples from π_ref itself
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "COMPLETE").is_file()
