"""Static pruning as a method on the training spine: prune (as the pruner's process says), fine-tune, and
optionally remove the pruned channels physically at the end (``--hard``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from ..base import ConfigError, check_ratio, option
from ..checkpoints import load_weights
from ..config import TrainConfig
from ..cost import CostModel
from ..methods import Method, MethodSpec
from ..sites import NO_SITES, probe_forward, slice_site, slice_sites
from .criteria import CRITERIA
from .masks import channel_mask, make_permanent, prunable_weights, sparsity
from .pruners import PRUNERS, get_pruner
from .ratios import resolver


@dataclasses.dataclass
class PruneOptions:
    """Options of every static-pruning run, whatever its pruner."""

    ratio: float | None = option(None, "static: the same pruning ratio at every site/layer, in [0, 1)")
    ratios: str | None = option(None, "static: JSON file {site name: ratio} (e.g. an RL policy.json)")
    prune_steps: int = option(1, "static: pruning events (1 = one-shot), spread over the first half of training")
    prune_schedule: Literal["cubic", "linear"] = option("cubic", "static: ramp of the ratio over the events")
    hard: bool = option(False, "static structured: remove pruned channels physically at the end")
    prune_criterion: str | None = option(
        None,
        "static: the ranking of the pruners that take one (sfp, global-filter; default l2-filter), any registered "
        "criterion",
        choices=lambda: CRITERIA.names(),
    )

    def validate(self) -> None:
        if self.ratio is not None:
            check_ratio(self.ratio)
        if self.ratio is not None and self.ratios is not None:
            raise ConfigError("--ratio and --ratios both given; choose one")
        if self.prune_criterion is not None and self.prune_criterion not in CRITERIA:
            raise ConfigError(f"--prune-criterion got {self.prune_criterion!r}; allowed: {', '.join(CRITERIA.names())}")
        if self.prune_steps < 1:
            raise ConfigError(f"--prune-steps must be >= 1, got {self.prune_steps}")


class StaticPruneMethod(Method):
    def __init__(
        self,
        prune: str,
        ratios: Mapping[str, float] | None = None,
        resolve_ratios: Callable[..., dict[str, float]] | None = None,
        steps: int = 1,
        schedule: str = "cubic",
        hard: bool = False,
        criterion: str | None = None,
    ) -> None:
        self.name = prune
        self.pruner = get_pruner(prune)
        if criterion is not None:  # sfp and global-filter rank by a chosen criterion; the others refuse one
            self.pruner = self.pruner.with_criterion(criterion)
        self.structured = self.pruner.structured
        self._ratios = dict(ratios) if ratios else None
        self._resolve = resolve_ratios  # (cost, structured[, macs curve]) -> ratios, when they depend on the model
        self.steps, self.schedule, self.hard = max(1, steps), schedule, hard
        self.site_keep: dict[str, list[int]] | None = None
        self.final_fractions: dict[str, float] | None = None
        self.macs_nonzero: float | None = None
        self.final_sparsity: tuple[float, dict[str, float]] = (0.0, {})

    @classmethod
    def from_config(cls, cfg: TrainConfig, prune: str) -> StaticPruneMethod:
        o: PruneOptions = cfg.options["static"]
        resolve = resolver(o.ratio, o.ratios, cfg.target_macs)
        return cls(
            prune,
            resolve_ratios=resolve,
            steps=o.prune_steps,
            schedule=o.prune_schedule,
            hard=o.hard,
            criterion=o.prune_criterion,
        )

    def prepare(self, model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
        super().prepare(model, input_shape)
        self.input_shape = tuple(input_shape)
        self.sites = model.channel_sites()
        if self.structured and not self.sites:
            unstructured = ", ".join(n for n in PRUNERS.names() if not PRUNERS[n].structured)
            raise ConfigError(
                f"--prune {self.name}: {NO_SITES}; an unstructured pruner ({unstructured}) prunes weights"
            )
        if self._ratios is not None:
            self.ratios = self._ratios
        elif self.pruner.macs_curve is not None:
            self.ratios = self._resolve(self.cost, self.structured, self.pruner.macs_curve(model, self.cost))
        else:
            self.ratios = self._resolve(self.cost, self.structured)
        self.process = self.pruner.process(self.pruner, self.sites, self.ratios, self.cost, self.steps, self.schedule)
        self.process.start(model)
        return model

    def begin(self, total_steps: int, steps_per_epoch: int) -> None:
        self.process.begin(max(1, total_steps // max(steps_per_epoch, 1)))

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict[str, float]:
        self.process.on_epoch_end(model, epoch)
        global_sparsity, _ = sparsity(model)
        return {"weight_sparsity": global_sparsity, "structured_macs_ratio": self._structured_ratio(model)}

    def _structured_ratio(self, model: nn.Module) -> float:
        """Structured-effective MACs / dense: what the kept channels cost once removed."""
        if not self.structured:
            return 1.0
        fractions = self.final_fractions or self.process.keep_fractions(model)  # after --hard: already narrow
        return self.cost.macs(fractions) / self.dense_macs

    def per_sample_macs(self, model: nn.Module, batch_size: int) -> torch.Tensor:
        return torch.full((batch_size,), self._structured_ratio(model) * self.dense_macs, dtype=torch.float64)

    def finalize(self, model: nn.Module, val_loader: Any, amp_dtype: torch.dtype | None) -> None:
        self.process.finish(model)
        if not self.structured:
            self.macs_nonzero = nonzero_macs(model, self.cost)
            self.final_sparsity = sparsity(model)
        if self.hard and self.structured:
            keep = {name: m.nonzero().flatten() for name, m in self.process.keep_masks(model).items()}
            self.final_fractions = {k: len(v) / self.cost.site_widths[k] for k, v in keep.items()}
            make_permanent(model)
            slice_sites(model, self.sites, keep)
            check_runs(model, self.input_shape)  # before the checkpoint is written: never save one that cannot run
            self.site_keep = {k: v.tolist() for k, v in keep.items()}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"site_keep": self.site_keep} if self.site_keep is not None else {}

    def result_fields(self) -> dict[str, Any]:
        fields = {
            "prune": self.name,
            "structured": self.structured,
            "hard": self.hard and self.structured,
            "ratios": self.ratios,
        }
        if self.macs_nonzero is not None:
            fields["macs_nonzero"] = self.macs_nonzero
            fields["macs_nonzero_ratio"] = self.macs_nonzero / self.dense_macs
            # unstructured pruners prune every conv and linear layer, not only the channel sites of "ratios"
            fields["weight_sparsity"], fields["layer_sparsity"] = self.final_sparsity
        return fields

    def rebuild(self, model: nn.Module, ckpt: dict[str, Any], input_shape: Sequence[int], source: str) -> nn.Module:
        """The saved pruned model, with what ``per_sample_macs`` needs to say what it costs."""
        Method.prepare(self, model, input_shape)  # the dense architecture's cost: every ratio's reference
        self.sites = model.channel_sites()
        restore_pruned(model, ckpt, source)
        keep = ckpt.get("site_keep")
        if keep:  # channels removed: narrower by the saved indices
            self.final_fractions = {name: len(k) / self.cost.site_widths[name] for name, k in keep.items()}
        elif self.structured:  # channels masked: the masks say which are kept
            self.final_fractions = {s.name: channel_mask(model, s).mean().item() for s in self.sites}
        return model.eval()


def restore_pruned(model: nn.Module, ckpt: dict[str, Any], source: str) -> nn.Module:
    """A checkpoint's pruned model on a fresh ``model``: removed channels (``site_keep``) sliced away, masks
    re-attached, weights loaded. Other tools' pruned checkpoints fail with ``load_state_dict`` size mismatches
    because the narrower shapes are not saved; dynprune's carry the kept channel indices."""
    keep = ckpt.get("site_keep") or {}
    for site in model.channel_sites():
        if site.name in keep:
            slice_site(model, site, torch.tensor(keep[site.name]))
    state = ckpt["model"]
    modules = dict(model.named_modules())
    for key in state:
        if key.endswith("_mask"):
            path, _, param = key[: -len("_mask")].rpartition(".")
            tprune.identity(modules[path], param)  # same key layout; load_state_dict fills the real mask
    load_weights(model, state, source)
    return model


def check_runs(model: nn.Module, input_shape: Sequence[int]) -> None:
    """One forward pass of the narrowed model; a RuntimeError naming the cause if the slicing broke it (the last
    epoch's checkpoint, still masked, stays as it was)."""
    try:
        probe_forward(model, input_shape)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RuntimeError(f"--hard: the model with its pruned channels removed cannot run ({first})") from exc


def nonzero_macs(model: nn.Module, cost: CostModel) -> float:
    """MACs if zero weights were free: each layer's MACs x its density (unstructured methods report this)."""
    names = {id(m): p for p, m in model.named_modules()}
    density = {names[id(m)]: float((getattr(m, n) != 0).float().mean()) for m, n in prunable_weights(model)}
    return float(sum(layer.macs * density.get(layer.name, 1.0) for layer in cost.layers))


STATIC = MethodSpec("static", "prune", PRUNERS.names, lambda: {"static": PruneOptions}, StaticPruneMethod.from_config)
