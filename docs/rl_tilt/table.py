"""The tilt study's table: test (val) top-1 per fine-tune seed, mean +- std, MACs and parameters per strategy.

usage: python docs/rl_tilt/table.py STRATEGY_DIR RUNS_DIR   # RUNS_DIR/t<T>-m<M>-s<S>/result.json or ...-s<S>.json
"""

import json
import statistics
import sys
from pathlib import Path


def main() -> None:
    strategies, runs = Path(sys.argv[1]), Path(sys.argv[2])
    head = "| target | m | kept per site, stages 1/2/3 | parameters | MACs | test top-1 per seed (val) | mean +- std |"
    print(head)
    print("|---|---|---|---|---|---|---|")
    for spec in sorted(strategies.glob("t*-m*.json"), key=lambda p: [float(x[1:]) for x in p.stem.split("-")]):
        s = json.loads(spec.read_text())
        files = sorted(runs.glob(f"{spec.stem}-s*/result.json")) or sorted(runs.glob(f"{spec.stem}-s*.json"))
        done = [json.loads(r.read_text()) for r in files]
        if not done:
            continue
        tests = [r["top1"] for r in done]
        per_seed = ", ".join(f"{r['top1']:.2f} ({r['val_top1']:.2f})" for r in done)
        mean = statistics.mean(tests)
        spread = f"{mean:.2f} +- {statistics.stdev(tests):.2f}" if len(tests) > 1 else f"{mean:.2f} (1 seed)"
        t, m = spec.stem.split("-")
        kept = "/".join(str(k) for k in list(s["kept"].values())[::3])  # one site per stage: all its sites agree
        print(f"| {t[1:]} | {m[1:]} | {kept} | {s['params']:,} | {done[0]['macs_ratio']:.3f} | {per_seed} | {spread} |")


if __name__ == "__main__":
    main()
