"""Per epoch of the from-scratch runs at 0.1 (validation pass): the lowest site's conditional share per stage and
the train top-1, the recipe against the usage floor. Usage: python docs/gate_usage/plot_epochs.py (writes
docs/gate_usage/epochs.png from the metrics.jsonl files beside it)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
RUNS = {"recipe": "scratch-recipe-t0.1-s{}", "usage floor": "scratch-usage1-t0.1-s{}"}
STAGES = ("layer1", "layer2", "layer3")

fig, axes = plt.subplots(1, len(STAGES) + 1, figsize=(15, 3.4))
for label, pattern in RUNS.items():
    for seed, style in ((0, "-"), (1, "--"), (2, ":")):
        path = HERE / (pattern.format(seed) + ".metrics.jsonl")
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        epochs = [r["epoch"] for r in rows]
        color = "tab:blue" if label == "recipe" else "tab:red"
        for ax, stage in zip(axes, STAGES, strict=False):
            low = [min(v for k, v in r.items() if k.startswith(f"cost/conditional/{stage}.")) for r in rows]
            ax.plot(epochs, low, style, color=color, label=f"{label}, seed {seed}")
        axes[-1].plot(epochs, [r["train_acc"] for r in rows], style, color=color, label=f"{label}, seed {seed}")
for ax, stage in zip(axes, STAGES, strict=False):
    ax.axhline(0.2, color="grey", lw=0.8)
    ax.set(title=f"{stage}: lowest site's conditional share", xlabel="epoch", ylim=(0, 1))
axes[-1].set(title="train top-1", xlabel="epoch", ylim=(60, 92))
axes[-1].legend(fontsize=7)
fig.tight_layout()
fig.savefig(HERE / "epochs.png", dpi=90)
