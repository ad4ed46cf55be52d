"""Prompt templates kept as files: the prompter's rewrite instruction (and, later, the judge's prompt).

A rewrite template is a YAML file with keys:

- ``system``: the system prompt for ρ_sft;
- ``user``: the user turn, with ``{prompt}`` where the original prompt goes;
- ``examples``: optional few-shot pairs ``[{prompt: ..., rewrite: ...}]`` shown as earlier turns;
- ``strip_prefixes``: optional labels the model may put before its rewrite ("Rewritten prompt:");
- ``compose``: how x′ is built from the parsed output and x: ``"{rewrite}"`` (default: the output IS x′) or, e.g.,
  ``"{rewrite} {prompt}"`` (the LM writes a framing and x follows verbatim, so the intent is kept by construction);
- ``max_chars``: optional cap on the parsed output's length (longer → not a rewrite);
- ``max_new_tokens``: optional budget of the prompter's output when no generation config is given (0 = the
  default :data:`alignpro.specs.DEFAULT_REWRITE_CONFIG`'s).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

from alignpro.errors import AlignProError

DEFAULT_REWRITE_TEMPLATE = "rewrite-default"


@dataclass(frozen=True)
class RewriteTemplate:
    """The instruction that turns a chat LM into ρ_sft, and the parser that extracts x′ from its output."""

    system: str
    user: str = "{prompt}"
    examples: tuple[tuple[str, str], ...] = ()
    strip_prefixes: tuple[str, ...] = ()
    max_chars_ratio: float = 6.0  #: a "rewrite" longer than this × the prompt is an answer, not a prompt
    compose: str = "{rewrite}"  #: x′ from the parsed output and the original prompt
    max_chars: int = 0  #: cap on the parsed output's length (0 = only ``max_chars_ratio``)
    max_new_tokens: int = 0  #: the prompter's output budget under this template (0 = the default config's)
    source: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        """The template's content, every field that shapes x′ (the messages, the parser, ``compose``, the caps and
        the output budget), as canonical JSON: the key of cached rewrites, so an edited template is never served
        another's x′. ``source`` (where it was read from) and ``extra`` are not content."""
        import json

        return json.dumps({f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("source", "extra")},
                          sort_keys=True, ensure_ascii=False)

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """The chat conversation asking for a rewrite of ``prompt``."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        for ex_prompt, ex_rewrite in self.examples:
            msgs.append({"role": "user", "content": self.user.format(prompt=ex_prompt)})
            msgs.append({"role": "assistant", "content": ex_rewrite})
        msgs.append({"role": "user", "content": self.user.format(prompt=prompt)})
        return msgs

    def parse(self, raw: str, prompt: str) -> tuple[str, bool]:
        """Extract the rewrite x′ from the prompter's raw output; ``(prompt, False)`` when none can be found."""
        text = raw.strip()
        for prefix in self.strip_prefixes:
            m = re.match(re.escape(prefix) + r"\s*", text, flags=re.IGNORECASE)
            if m:
                text = text[m.end():]
        text = text.split("\n\n")[0].strip()  # the first paragraph; later ones are commentary or an answer
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
            text = text[1:-1].strip()
        if "{prompt}" in self.compose:
            text = text.split("\n")[0].strip()  # a framing is one line
            if prompt.strip() and prompt.strip().lower() in text.lower():  # the model repeated x itself
                text = text[:text.lower().index(prompt.strip().lower())].strip()
        if not text or len(text) > self.max_chars_ratio * max(len(prompt), 40) or (
                self.max_chars and len(text) > self.max_chars):
            return prompt, False
        return self.compose_rewrite(text, prompt), True

    def compose_rewrite(self, rewrite: str, prompt: str) -> str:
        """x′ from a parsed output and the original prompt (the template's ``compose``)."""
        return self.compose.format(rewrite=rewrite, prompt=prompt).strip()


def read_template_yaml(name_or_path: str, kind: str) -> tuple[dict, str]:
    """The mapping in a template file: a YAML path, or a builtin ``alignpro/templates/<name>.yaml`` whose name
    starts with ``kind`` ("rewrite", "judge"). Returns (data, source label)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text, source = path.read_text(), str(path)
    else:
        builtin = resources.files("alignpro.templates") / f"{name_or_path}.yaml"
        if not builtin.is_file():
            names = sorted(p.name[:-5] for p in resources.files("alignpro.templates").iterdir()
                           if p.name.startswith(kind) and p.name.endswith(".yaml"))
            raise AlignProError(f"{kind} template '{name_or_path}' is neither a YAML file nor a builtin template; "
                                f"builtin {kind} templates: {names}")
        text, source = builtin.read_text(), f"builtin:{name_or_path}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise AlignProError(f"{kind} template '{source}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise AlignProError(f"{kind} template '{source}' must be a YAML mapping")
    return data, source


def load_rewrite_template(name_or_path: str = DEFAULT_REWRITE_TEMPLATE) -> RewriteTemplate:
    """Load a builtin template by name (``rewrite-default``) or a YAML file by path."""
    data, source = read_template_yaml(name_or_path, "rewrite")
    if "system" not in data:
        raise AlignProError(f"rewrite template '{source}' must be a mapping with at least the key 'system'")
    user = data.get("user", "{prompt}")
    if "{prompt}" not in user:
        raise AlignProError(f"rewrite template '{source}': 'user' must contain '{{prompt}}'")
    examples = []
    for i, ex in enumerate(data.get("examples") or []):
        if not isinstance(ex, dict) or not {"prompt", "rewrite"} <= set(ex):
            raise AlignProError(f"rewrite template '{source}': examples[{i}] needs keys 'prompt' and 'rewrite'")
        examples.append((str(ex["prompt"]), str(ex["rewrite"])))
    compose = str(data.get("compose", "{rewrite}"))
    if "{rewrite}" not in compose:
        raise AlignProError(f"rewrite template '{source}': 'compose' must contain '{{rewrite}}'")
    return RewriteTemplate(system=str(data["system"]), user=user, examples=tuple(examples),
                           compose=compose, max_chars=int(data.get("max_chars", 0)),
                           max_new_tokens=int(data.get("max_new_tokens", 0)),
                           strip_prefixes=tuple(data.get("strip_prefixes") or ()),
                           max_chars_ratio=float(data.get("max_chars_ratio", 6.0)), source=source)
