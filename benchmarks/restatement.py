"""Does a prompter restate the instructions the prompt gives, and only those?

    .venv/bin/python benchmarks/restatement.py --json runs/restatement.json

For each prompter, one rewrite per held-out TRAIN prompt (default: the 120 `builtin-writing:train` prompts the
writing recipe's learning curve holds out, `heldout` 120 with seed 0; never an eval split or IFEval), sampled as
`alignpro evaluate` samples its `align_pro` arm (`rewrite_max_new_tokens` 112, the rewrite seed of that arm). The
instruction ids its line names are found by `alignpro.train.sft.restated_types` (IFEval's registry wording with the
kwargs left out; on every record of both builtin sets it recovers exactly the record's ids from its SFT
demonstration line: tests/test_sft.py; a paraphrase of it counts as naming nothing, so both recall and invented
are lower bounds). Per prompter, over prompts: `recall` (share of x's instructions named),
`exact` (names exactly x's), `invented` (instructions named that x does not give, mean count) and
`any_invented` (share of prompts with at least one). The SFT demonstration lines themselves are the first row
(recall 1, nothing invented, by construction). Prints a table and, with --json, writes every rewrite.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from alignpro.arms import REWRITE_SEED
from alignpro.data import load_prompts
from alignpro.specs import DEFAULT_REWRITE_CONFIG, make_prompter
from alignpro.train.heldout import split_heldout
from alignpro.train.sft import instruction_demo, restated_types

DEMO_LINE = "IMPORTANT: {instructions} Pay close attention to the required format, length, and wording."


def scores(records, lines, types) -> dict:
    """recall, exact, invented, any_invented (means over prompts) of one list of restatement lines."""
    rows = []
    for r, line in zip(records, lines):
        true, named = {i.id for i in r.instructions}, restated_types(line, types)
        rows.append((len(true & named) / len(true), named == true, len(named - true), bool(named - true)))
    a = np.array(rows, dtype=float)
    se = a.std(0, ddof=1) / np.sqrt(len(a))
    return {k: {"mean": float(a[:, i].mean()), "stderr": float(se[i])}
            for i, k in enumerate(("recall", "exact", "invented", "any_invented"))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompters", nargs="+", default=["hf:alignpro/adapters/writing-prompter-sft",
                                                       "hf:alignpro/adapters/writing-prompter"],
                    help="prompters taught to restate in the registry's wording (a prompter that copies x's own "
                         "phrasing names nothing this script recognises)")
    ap.add_argument("--prompts", default="builtin-writing:train")
    ap.add_argument("--heldout", type=int, default=120)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="the evaluation seed (rewrites from seed + REWRITE_SEED)")
    ap.add_argument("--template", default="rewrite-restate")
    ap.add_argument("--max-new-tokens", type=int, default=112)
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    records = load_prompts(args.prompts).records
    _, held = split_heldout(records, args.heldout, args.split_seed) if args.heldout else (None, records)
    types = sorted({i.id for src in ("builtin-writing:all", "builtin-ifeval:all")
                    for r in load_prompts(src).records for i in r.instructions})
    prompts = [r.text for r in held]
    out = {"prompts": args.prompts, "heldout": args.heldout, "n": len(held), "rows": {}}
    out["rows"]["SFT demonstration lines"] = {
        **scores(held, [instruction_demo(r, DEMO_LINE, styled=True) for r in held], types), "seconds": 0.0}
    for spec in args.prompters:
        t0 = time.perf_counter()
        prompter = make_prompter(spec, args.template,
                                 DEFAULT_REWRITE_CONFIG.with_(max_new_tokens=args.max_new_tokens), batch_size=32)
        sets = prompter.rewrite(prompts, 1, seed=args.seed + REWRITE_SEED)
        lines = [s.rewrites[0].text[len(x):] if s.rewrites[0].text.startswith(x) else s.rewrites[0].text
                 for x, s in zip(prompts, sets)]
        out["rows"][spec] = {**scores(held, lines, types), "seconds": time.perf_counter() - t0,
                             "lines": [{"id": r.id, "line": line} for r, line in zip(held, lines)]}
    print(f"{out['n']} held-out prompts of {args.prompts}")
    print("| prompter | recall | exact | invented per prompt | prompts with an invented one |")
    print("|---|---|---|---|---|")
    for name, row in out["rows"].items():
        print(f"| {name} | " + " | ".join(f"{row[k]['mean']:.2f} ± {row[k]['stderr']:.2f}"
                                         for k in ("recall", "exact", "invented", "any_invented")) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
