"""The ``alignpro`` command: one sub-command per module, each owning its config dataclass."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from alignpro.errors import AlignProError, ConfigError
from alignpro.fileio import blocking_file, not_a_folder_message

# sub-command -> (module, one-line help). Each module exposes ``main(argv: list[str]) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("alignpro.demo", "no fine-tuning vs Align-Pro on the builtin eval prompts"),
    "rewrite": ("alignpro.quick", "rewrite one prompt with a prompter"),
    "answer": ("alignpro.quick", "answer one prompt with a target (optionally through a prompter)"),
    "score": ("alignpro.quick", "score one (prompt, answer) pair with a reward"),
    "sft": ("alignpro.train.sft", "supervised fine-tuning of the prompter on demonstrated rewrites (the paper's ρ_sft)"),
    "train": ("alignpro.train.cli", "train the prompter (eq 9) or the RLHF oracle (eq 2) with PPO/RLOO/GRPO"),
    "evaluate": ("alignpro.evaluate.cli", "the paper's evaluation grid: arms x datasets x pairs, judged win rates"),
    "serve": ("alignpro.serve", "an OpenAI-compatible server: prompter rewrites, target answers"),
    "reward": ("alignpro.reward_model.cli", "learn a Bradley–Terry reward model (eq 1) from preference pairs; label "
                                            "pairs with a gold reward"),
    "overopt": ("alignpro.overopt.run", "over-optimisation of learned proxies: gold and proxy reward vs √KL for the "
                                        "closed form, a trained prompter and the RLHF oracle"),
    "theory": ("alignpro.theory.cli", "Lemma 1, eq (7) and Theorem 1: exact tabular checks and Monte-Carlo estimates for real LLMs"),
}


def _usage() -> str:
    lines = ["usage: alignpro <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'alignpro <command> --help' for the options of a command."]
    return "\n".join(lines)


def _path_setting(path: Path, blocker: Path, argv: list[str]) -> str | None:
    """The setting (a ``--flag VALUE`` or ``--flag=VALUE`` of ``argv``) whose VALUE is ``path`` or a folder above
    it and lies at or below ``blocker``: the input that put a file where a folder had to be."""
    for i, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        flag, eq, value = token[2:].partition("=")
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if value and (Path(value) == path or Path(value) in path.parents) and \
                (Path(value) == blocker or blocker in Path(value).parents):
            return flag.replace("-", "_")
    return None


def _making_a_folder(exc: BaseException) -> bool:
    """Whether ``exc`` was raised where a folder is made (``Path.mkdir``, ``os.makedirs``)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name in ("mkdir", "makedirs")


def _run(module, name: str, rest: list[str]) -> int:
    """``module.main``; a folder that cannot be made because a file stands in its way (a file given as the run
    folder ``--out``, wherever the command makes it) is a :class:`ConfigError` naming the flag that gave it."""
    try:
        if module.__name__ == "alignpro.quick":
            return int(module.main(name, rest) or 0)
        return int(module.main(rest) or 0)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = blocking_file(exc.filename) if exc.filename and _making_a_folder(exc) else None
        if blocker is None:
            raise
        path = Path(exc.filename)
        raise ConfigError(not_a_folder_message(path, blocker, _path_setting(path, blocker, rest))) from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in ("-V", "--version"):
        from alignpro import __version__
        print(__version__)
        return 0
    if name not in COMMANDS:
        print(f"alignpro: unknown command '{name}'; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return _run(module, name, rest)
    except AlignProError as exc:
        print(f"alignpro {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alignpro {name}: interrupted", file=sys.stderr)
        return 130
