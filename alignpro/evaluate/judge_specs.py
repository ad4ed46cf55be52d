"""The judges of `alignpro evaluate`, as written in its settings: ``reward`` | ``llm:<model spec>`` |
``openai:<model>@<base_url>``, parsed once into a :class:`JudgeSpec`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from alignpro.backends.registry import LOCAL_LM_KINDS
from alignpro.errors import AlignProError, ConfigError
from alignpro.specs import parse_model_spec

JUDGE_FORMS = ("reward", "llm:<model spec>", "openai:<model>@<base_url>")


@dataclass(frozen=True)
class JudgeSpec:
    kind: str  #: "reward" | "llm" | "openai"
    model: str = ""  #: the model spec (llm) or the API model name (openai)
    base_url: str = ""  #: openai only

    def __str__(self) -> str:
        return {"reward": "reward", "llm": f"llm:{self.model}", "openai": f"openai:{self.model}@{self.base_url}"}[
            self.kind]


def parse_judge_spec(spec: str) -> JudgeSpec:
    s = str(spec).strip()
    if s == "reward":
        return JudgeSpec("reward")
    if s.startswith("llm:") and s[4:].strip():
        model = s[4:].strip()
        try:
            kind = parse_model_spec(model).kind
        except AlignProError as exc:
            raise ConfigError(f"judge '{s}': {exc}") from None
        if kind not in LOCAL_LM_KINDS:
            raise ConfigError(f"judge '{s}': a local LLM judge needs a chat model (smollm2 or hf:<id or path>); "
                              "for an API use openai:<model>@<base_url>")
        return JudgeSpec("llm", model)
    if s.startswith("openai:"):
        model, at, url = s[7:].partition("@")
        if at and model.strip() and re.match(r"^https?://\S+$", url.strip()):
            return JudgeSpec("openai", model.strip(), url.strip().rstrip("/"))
    raise ConfigError(f"invalid judge '{s}'; valid forms: {', '.join(JUDGE_FORMS)} "
                      "(e.g. openai:gpt-4o@https://api.openai.com/v1)")


