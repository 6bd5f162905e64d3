"""Stage-tilted strategies around uniform pruning: is uniform near the best per-layer strategy at a MAC target?

Every site of stage s keeps the share u * m ** (s - 2) * lam of its channels (m = 1: uniform; m > 1 keeps more of
the late stages, whose channels cost 4x fewer MACs and hold 4x more weights than stage 1's), with lam the largest
scale whose MACs (the search's cost model, its channel rounding) stay at or under the target.

usage: python docs/rl_tilt/tilt_strategies.py DENSE_CKPT TARGET M[,M...] OUT_DIR   # writes OUT_DIR/t<T>-m<M>.json
"""

import json
import sys
from pathlib import Path

from agents.evaluate import EvalSettings, StrategyEvaluator
from dynprune.prune.ratios import keep_fractions, solve_uniform_for_macs
from dynprune.solve import monotone_bracket


def stage(site: str) -> int:
    return int(site.split(".")[0].removeprefix("layer"))  # resnet20's sites: layer<stage>.<block>.conv1


def tilted(cost, target: float, m: float) -> dict[str, float]:
    u = 1.0 - next(iter(solve_uniform_for_macs(cost, target).values()))

    def ratios(lam: float) -> dict[str, float]:
        return {s: min(0.999, max(0.0, 1.0 - u * m ** (stage(s) - 2) * lam)) for s in cost.site_widths}

    def fits(lam: float) -> bool:
        return cost.macs(keep_fractions(cost, ratios(lam))) / cost.dense_macs <= target

    lo, _ = monotone_bracket(fits, 0.01, 1.0 / u, 40)
    return ratios(lo)


def main() -> None:
    init, target, ms, out = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(","), Path(sys.argv[4])
    cost = StrategyEvaluator(init, settings=EvalSettings()).cost
    out.mkdir(parents=True, exist_ok=True)
    for m in ms:
        r = tilted(cost, target, float(m))
        keep = keep_fractions(cost, r)
        macs = cost.macs(keep) / cost.dense_macs
        params = int(cost.params(keep))
        kept = {s: round(k * cost.site_widths[s]) for s, k in keep.items()}
        (out / f"t{target:g}-m{m}.json").write_text(
            json.dumps({"ratios": r, "macs_ratio": macs, "kept": kept, "params": params}, indent=1)
        )
        print(f"t={target:g} m={m}: macs {macs:.4f} kept {list(kept.values())} params {params}")


if __name__ == "__main__":
    main()
