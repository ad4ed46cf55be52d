"""A Hugging Face sequence-classification reward model (like the paper's weqweasdas/RM-Gemma-2B).

The (x, y) pair is rendered with the reward model's OWN tokenizer and chat template as a user turn x and an
assistant turn y (plain ``user: ...`` / ``assistant: ...`` lines for a tokenizer without a template); the reward
is the logit of label 0 (single-logit RMs) or of ``label_index``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from alignpro.backends.chat import ensure_pad_token, render_chat, user_turn
from alignpro.errors import AlignProError


class HFReward:
    def __init__(self, path: str, *, device: str | None = None, batch_size: int = 8, label_index: int = 0,
                 max_length: int = 2048) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name = f"hf:{path}"
        self.r_max = None  # a learned RM's logit is unbounded
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path)
        except (OSError, ValueError) as exc:  # missing files, or a folder that holds no tokenizer/model
            raise AlignProError(f"could not load a sequence-classification reward model from '{path}': {exc}") from None
        self.model.to(self.device).eval().requires_grad_(False)
        ensure_pad_token(self.tokenizer, self.model.config)
        n_labels = self.model.config.num_labels
        if not 0 <= label_index < n_labels:
            raise AlignProError(f"label_index {label_index} is out of range for a reward model with {n_labels} labels")
        self.label_index, self.batch_size, self.max_length = label_index, batch_size, max_length

    def render(self, prompt: str, answer: str) -> str:
        """(x, y) as a finished conversation: user turn x, assistant turn y (:func:`render_chat`)."""
        return render_chat(self.tokenizer, user_turn(prompt) + [{"role": "assistant", "content": answer}],
                           add_generation_prompt=False)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        if len(prompts) != len(answers):
            raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        texts = [self.render(p, a) for p, a in zip(prompts, answers)]
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length, add_special_tokens=False).to(self.device)
            logits = self.model(**enc).logits  # (B, num_labels)
            out.extend(logits[:, self.label_index].float().tolist())
        return out
