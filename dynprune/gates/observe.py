"""The gated method's evaluation part: what the gates did over an evaluation pass (open rates, conditional share,
distinct channel sets: ``eval_account.py``), the per-sample MACs of their decisions, the logits a per-site
calibration asks for, and after the test pass what their input-dependence is worth (``dynamism.py``; for a
network-scope router also at the same MACs: ``routing_gain.py``) with the class x channel open-rate map.
``GatedMethod`` hands its evaluation hooks to one of these."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cost import CostModel
from ..plots import plot_class_open_rates
from .dynamism import measure_dynamism
from .eval_account import EvalAccount
from .module import GateSet
from .routing_gain import routed_correct, routing_gain


class GateObserver:
    def __init__(self, gate_set: GateSet, cost: CostModel, dense_macs: float) -> None:
        self.gate_set, self.cost, self.dense_macs = gate_set, cost, dense_macs
        self.account = EvalAccount()  # what the gates did over the last evaluation pass
        self._collect: dict[str, list[torch.Tensor]] = {}
        self._class_rates: dict[str, torch.Tensor] = {}  # site -> [K, G] test open rates per class (inspect)

    def start_eval(self) -> None:
        self.account.start(s.name for s in self.gate_set.sites)

    def collect_logits(self, sites: Iterable[str]) -> None:
        """Keep every logit of the next evaluation pass at ``sites`` (read with ``collected_logits``)."""
        self._collect = {site: [] for site in sites}

    def collected_logits(self) -> dict[str, torch.Tensor]:
        collected = {site: torch.cat(chunks) for site, chunks in self._collect.items()}
        self._collect = {}
        return collected

    def per_sample_macs(self, batch_size: int) -> torch.Tensor:
        """The batch's per-sample MACs under the gates' decisions, after adding them to the pass's account."""
        for site, chunks in self._collect.items():  # per-site calibration collects the pass's logits
            chunks.append(self.gate_set.logits[site].detach().float().cpu())
        masks = self.gate_set.masks
        self.account.add(masks, batch_size)
        return self.cost.macs_from_masks({k: v.double() for k, v in masks.items()}).detach().cpu()

    def open_rates(self) -> dict[str, float]:
        """Per-site open rate over the last evaluation pass."""
        return self.account.open_rates()

    def epoch_logs(self) -> dict[str, float]:
        """The validation pass's open rate and conditional share per site (how dynamic the gates are, epoch by
        epoch: the diagnosis of a recipe whose gates freeze or collapse)."""
        shares = self.account.conditional_shares()
        return {
            **{f"open/{k}": v for k, v in self.open_rates().items()},
            **{f"conditional/{k}": v for k, v in shares.items()},
            **({"conditional_share": sum(shares.values()) / len(shares)} if shares else {}),
        }

    def result_fields(self) -> dict[str, Any]:
        sets = self.account.sets_summary()
        return {
            "site_open_rates": self.open_rates(),
            "site_channel_sets": sets,  # of the test pass: one set everywhere is static pruning
            "dynamic_sites": sum(v["distinct"] > 1 for v in sets.values()),
            "gate_macs": self.cost.dense_macs - self.dense_macs,
            "sites_not_gated": dict(self.gate_set.skipped),
        }

    def inspect(
        self, model: nn.Module, val_loader: Any, test_loader: Any, num_classes: int, amp_dtype: torch.dtype | None
    ) -> dict[str, Any]:
        """Conditional share, class spread and the frozen-gate ablation; keeps the class x channel open rates
        for ``figures``."""

        def macs_ratio(masks: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.cost.macs_from_masks({k: v.double() for k, v in masks.items()}).cpu() / self.dense_macs

        fields, self._class_rates = measure_dynamism(
            model, self.gate_set, val_loader, test_loader, num_classes, macs_ratio, amp_dtype
        )
        if self.gate_set.router is not None:  # one width per input: what the choice is worth at the same MACs
            fields.update(routing_gain(*routed_correct(model, self.gate_set, test_loader, amp_dtype)))
        return fields

    def figures(self, out_dir: Path, title: str) -> dict[str, Path]:
        """The class x channel open-rate map of every site (test split), when ``inspect`` measured it."""
        if not self._class_rates:
            return {}
        path = out_dir / "gate_classes.png"
        plot_class_open_rates(self._class_rates, path, title)
        return {"gate_classes": path}
