"""Quick one-off commands: ``alignpro rewrite``, ``alignpro answer``, ``alignpro score``."""

from __future__ import annotations

import json
from dataclasses import dataclass

from alignpro.backends.base import PlainAnswerSettings
from alignpro.config import check_at_least, parse_config, setting
from alignpro.errors import ConfigError
from alignpro.specs import model_spec_help, reward_spec_help


def _need_text(value: str, name: str) -> None:
    if not value or not value.strip():
        raise ConfigError(f"'{name}' must be a non-empty text")


@dataclass
class RewriteConfig:
    """Rewrite one prompt with a prompter ρ."""

    text: str = setting("", "the prompt to rewrite")
    prompter: str = setting("smollm2", "prompter model spec: " + model_spec_help("prompter"))
    template: str = setting("rewrite-default", "rewrite template: builtin name or YAML file")
    k: int = setting(1, "number of rewrites to sample")
    seed: int = setting(0, "random seed")
    json: bool = setting(False, "print JSON instead of text")

    def __post_init__(self) -> None:
        _need_text(self.text, "text")
        check_at_least(self, 1, "k")


@dataclass
class AnswerConfig(PlainAnswerSettings):
    """Answer one prompt with a target π_F, optionally through a prompter ρ first (eq 3)."""

    text: str = setting("", "the prompt to answer")
    target: str = setting("smollm2", "target model spec: " + model_spec_help("target"))
    prompter: str = setting("", "optional prompter spec (" + model_spec_help("prompter") + "); when set, the prompt "
                                "is rewritten first")
    template: str = setting("rewrite-default", "rewrite template for the prompter")
    seed: int = setting(0, "random seed")
    json: bool = setting(False, "print JSON instead of text")

    def __post_init__(self) -> None:
        _need_text(self.text, "text")
        self.gen = self.answer_config()


@dataclass
class ScoreConfig:
    """Score one (original prompt, answer) pair with a reward model."""

    reward: str = setting("builtin", "reward spec: " + reward_spec_help())
    prompt: str = setting("", "the ORIGINAL prompt x")
    answer: str = setting("", "the answer y")
    instruction_id_list: str = setting("", "ifeval: the prompt's IFEval instruction ids, comma-separated "
                                           "(e.g. punctuation:no_comma,startend:end_checker)")
    kwargs: str = setting("", "ifeval: IFEval's kwargs, a JSON list with one object per id "
                              "(e.g. '[{}, {\"end_phrase\": \"Bye.\"}]'; '' = no kwargs)")
    json: bool = setting(False, "print JSON instead of text")

    def __post_init__(self) -> None:
        _need_text(self.prompt, "prompt")

    def record(self):
        """The prompt as a record, with the instructions given on the command line (IFEval's schema)."""
        import json as _json

        from alignpro.data import Instruction, PromptRecord

        ids = [i.strip() for i in self.instruction_id_list.split(",") if i.strip()]
        try:
            kwargs = _json.loads(self.kwargs) if self.kwargs.strip() else [{}] * len(ids)
        except ValueError as exc:
            raise ConfigError(f"setting 'kwargs' is not valid JSON ({exc}); give a JSON list of objects, one per "
                              "instruction id") from None
        if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
            raise ConfigError(f"setting 'kwargs' must be a JSON list of {len(ids)} object(s), one per id in "
                              f"instruction_id_list, got {self.kwargs!r}")
        return PromptRecord(id="cli", text=self.prompt.strip(),
                            instructions=tuple(Instruction.from_kwargs(i, k) for i, k in zip(ids, kwargs)))


def main(command: str, argv: list[str]) -> int:
    from alignpro.specs import make_prompter, make_reward, make_target

    if command == "rewrite":
        cfg = parse_config(RewriteConfig, argv, prog="alignpro rewrite", positional=("text",))
        (rs,) = make_prompter(cfg.prompter, cfg.template).rewrite([cfg.text], cfg.k, seed=cfg.seed)
        if cfg.json:
            print(json.dumps({"prompt": cfg.text, "rewrites": [
                {"text": r.text, "raw": r.raw, "logprob": r.logprob, "parsed": r.parsed} for r in rs.rewrites]}))
        else:
            for r in rs.rewrites:
                print(r.text)
        return 0
    if command == "answer":
        cfg = parse_config(AnswerConfig, argv, prog="alignpro answer", positional=("text",))
        prompt = cfg.text
        if cfg.prompter:
            (rs,) = make_prompter(cfg.prompter, cfg.template).rewrite([cfg.text], 1, seed=cfg.seed)
            prompt = rs.rewrites[0].text
        ((ans,),) = make_target(cfg.target, cfg.gen).answer([prompt], n=1, seed=cfg.seed)
        if cfg.json:
            print(json.dumps({"prompt": cfg.text, "rewrite": prompt if cfg.prompter else None, "answer": ans.text}))
        else:
            if cfg.prompter:
                print(f"[rewrite] {prompt}\n")
            print(ans.text)
        return 0
    if command == "score":
        cfg = parse_config(ScoreConfig, argv, prog="alignpro score")
        record = cfg.record()
        (value,) = make_reward(cfg.reward, [record]).score([record.text], [cfg.answer])
        print(json.dumps({"reward": value}) if cfg.json else f"{value:.6f}")
        return 0
    raise ConfigError(f"unknown quick command '{command}'")
