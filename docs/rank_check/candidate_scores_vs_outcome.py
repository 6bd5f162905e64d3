"""Spearman of each candidate score (candidate_scores.json) with the fine-tuned outcome of a two-seed rank check
(validation and test top-1, mean of the seeds), and the seeds' own agreement. Every score in the file is used
(candidate_scores.py's or teacher_scores.py's); a loss, KL or feature error counts lower as better.

usage: python docs/rank_check/candidate_scores_vs_outcome.py CANDIDATE_SCORES_JSON RANK_CHECK_JSON
"""

import json
import sys
from pathlib import Path

from agents.rank_check import spearman


def main() -> None:
    scores = json.loads(Path(sys.argv[1]).read_text())
    for check in json.loads(Path(sys.argv[2]).read_text())["checks"]:
        rows = check["strategies"]
        mine = {json.dumps(s["ratios"], sort_keys=True): s for s in scores if s["target"] == check["target"]}
        cand = [mine[json.dumps(r["ratios"], sort_keys=True)] for r in rows]
        val, test = [r["tuned_val_top1"] for r in rows], [r["tuned_top1"] for r in rows]
        if check["seed_agreement"] is None:
            agree = "1 fine-tune seed"
        else:
            agree = f"seeds agree: val {check['seed_agreement']:.2f}, test {check['seed_agreement_test']:.2f}"
        print(f"target {check['target']:g}: {len(rows)} strategies; {agree}")
        for key in [k for k in cand[0] if k not in ("target", "kind", "ratios") and not k.startswith("sec")]:
            sign = -1 if key.startswith(("loss", "kl", "feat")) else 1  # a lower loss is the better score
            values = [sign * c[key] for c in cand]
            print(
                f"  {key:11s} Spearman with val {spearman(values, val):5.2f}, with test {spearman(values, test):5.2f}"
            )
        params = [r.get("params") for r in rows]
        if None not in params:
            print(
                f"  parameters  Spearman with val {spearman(params, val):5.2f}, with test {spearman(params, test):5.2f}"
            )


if __name__ == "__main__":
    main()
