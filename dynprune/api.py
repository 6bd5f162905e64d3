"""dynprune as a library: gates, static pruning and costs inside your own PyTorch training loop.

Every function builds its method through ``build_method`` (a ``TrainConfig`` to its method), so a flag's name is a
keyword here (``gate_pool=2``, ``guide_weight=0``) with the same defaults, recipes and checks. The CLIs are this
API plus a training loop, folders and reports: ``train`` and ``compare`` build their method with ``build_method``
and rebuild runs (a ``--distill`` teacher) with ``load_run``; ``export``, ``bench`` (``pruned``, ``dynamic``,
``overhead``) and ``agents.search`` rebuild checkpoints with ``load_run`` and build random gates with
``build_method``.

Shapes: ``input_shape`` is (C, H, W) of one image; batches are [B, C, H, W]. Costs are MACs per sample
(multiply-accumulates of conv and linear layers; what papers call FLOPs for CNNs), ratios are MACs / the dense
model's MACs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .catalog import method_from_config, rebuild_from_checkpoint, recipe_defaults, train_config
from .config import TrainConfig
from .cost import CostModel
from .evaluation import evaluate
from .gates.fixed_k import FixedKUnsupported, to_fixed_k
from .gates.method import GatedMethod
from .gates.routed import RoutedWidths, export_routed
from .methods import Method
from .models.depgraph import attach_dependency_sites
from .prune.method import StaticPruneMethod
from .runtimes import export_onnx
from .sites import ChannelSite

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def channel_sites(model: nn.Module, input_shape: Sequence[int]) -> list[ChannelSite]:
    """The channel sites of ``model`` (a group of channels one producer writes and its consumers read, pruned or
    gated together): a zoo model's own list, else found from Torch-Pruning's dependency graph (any CNN; the
    layers left out, and why, are in ``model.sites_left_out``)."""
    if not callable(getattr(model, "channel_sites", None)):
        attach_dependency_sites(model, input_shape, speak=False)
    return model.channel_sites()


def macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs per sample of ``model`` at full width (conv and linear layers; gate layers included if attached)."""
    channel_sites(model, input_shape)
    return int(CostModel.from_model(model, input_shape).dense_macs)


@dataclass
class Report:
    """What an evaluation pass measured: top-1 (%), mean MACs per sample and their ratio to the dense model, and
    for gates the open rate per site (mean share of its channels open) and the conditional share per site (the
    share of channels open for some inputs but not all: 0 everywhere = static pruning)."""

    top1: float
    macs: float
    macs_ratio: float
    open_rates: dict[str, float]
    conditional_share: dict[str, float]


@dataclass(frozen=True)
class Exported:
    """An ONNX file written by ``Gates.export_onnx`` and which executor it holds."""

    path: Path
    executor: str  # "fixed-k" (closed channels skipped), "routed" (the router; each width's model beside it) or
    # "masked" (closed channels zeroed)


def build_method(config: TrainConfig | dict[str, Any], recipe: bool = True) -> Method:
    """The method a run's config asks for (dense, static pruning, or gates with their estimator and budget),
    not yet attached to a model (``method.prepare(model, input_shape)`` does that). ``config``: a validated
    ``TrainConfig`` (what the CLIs parse), or flag values by their keyword names (``{"gate": "topk",
    "target_macs": 0.25}``), completed with the recipe the chosen model and method bring, as the CLI does
    (``recipe=False``: the general defaults alone, e.g. plain gates for a speed benchmark)."""
    if isinstance(config, dict):
        chosen = {"wandb": "disabled", **config}
        # the method variant's recipe under what was given, as the CLI layers them (recipe_defaults: catalog.py)
        config = train_config({**(recipe_defaults(chosen) if recipe else {}), **chosen})
    return method_from_config(config)


def load_run(path: str | Path) -> tuple[nn.Module, Method, dict[str, Any]]:
    """(the trained model in eval mode, its method, the checkpoint dict) of any dynprune checkpoint: gates,
    masks and removed channels as trained; ``load`` when only the model is wanted."""
    return rebuild_from_checkpoint(path)


def _method(model: nn.Module, input_shape: Sequence[int], values: dict[str, Any]) -> Any:
    channel_sites(model, input_shape)
    method = build_method(values)
    method.prepare(model, input_shape)
    return method


class Gates:
    """A model with per-input channel gates (``gate``), and what a training loop needs from them."""

    def __init__(self, model: nn.Module, method: GatedMethod, input_shape: Sequence[int], steps: int) -> None:
        self.model, self.method, self.input_shape, self.steps = model, method, tuple(input_shape), steps

    def parameters(self) -> list[nn.Parameter]:
        """The gate layers' parameters (already in ``model.parameters()``): for an optimizer group of their own."""
        return list(self.method.gate_set.parameters())

    def step(self, step: int) -> None:
        """Call before the forward pass of training step ``step`` (0-based): temperatures, the budget's slide
        from dense to the target, the activation guide."""
        self.method.before_step(self.model, step)

    def loss(
        self,
        logits: torch.Tensor,
        step: int,
        epoch: int = 0,
        inputs: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The gates' loss terms for the forward pass just made (budget, balance, activation guide, rate term,
        batch-shaping: those the options switch on; 0 when none is in force): add it to the task loss. Width
        gates with a supernet phase or a gate target run the batch again at other widths: pass it as ``inputs``
        and ``labels``."""
        extra, _ = self.method.extra_loss(self.model, logits, step, epoch, inputs=inputs, labels=labels)
        return extra if extra is not None else logits.new_zeros(())

    def evaluate(self, batches: Batches) -> Report:
        """Top-1, MACs and how dynamic the gates were over ``batches`` (model in eval mode, no gradients)."""
        result = evaluate(self.model, batches, self.method, None)
        mean = float(result.macs.mean())
        shares = self.method.account.conditional_shares()
        return Report(result.top1, mean, mean / self.method.dense_macs, self.method.open_rates(), shares)

    def calibrate(self, batches: Batches) -> dict[str, Any]:
        """After training: shift the gate logits so the eval-mode decisions meet the MAC target on ``batches``
        (a validation split); fixed-count gates meet it by construction. Returns what the search did."""
        self.method.finalize(self.model, batches, None)
        return dict(self.method.calibration)

    def deploy(self) -> nn.Module:
        """An inference copy that really skips the closed channels (BN folded), for any batch size."""
        return self.method.deploy_model(self.model).eval()

    def export_onnx(self, path: str | Path, batch: int = 1) -> Exported:
        """ONNX for a fixed batch size. Fixed-count gates on a model with static shapes (``topk`` on ResNets)
        export the fixed-k executor, which skips the closed channels; any other gated model exports as masked
        (the gates computed, closed channels zeroed: the same outputs, no saving in the file's MACs). Width gates
        at network scope export their router as ``path`` and each width's static model beside it
        (``<stem>.width<i>.onnx``, any batch size), as ``python -m dynprune.export`` does."""
        example = torch.zeros(batch, *self.input_shape)
        if self.method.gate_set.router is not None:
            export_routed(RoutedWidths(self.model), example, Path(path))
            return Exported(Path(path), "routed")
        try:
            return Exported(export_onnx(to_fixed_k(self.model), example, path), "fixed-k")
        except FixedKUnsupported:
            self.method.gate_set.detach_batch_state()  # the last training batch's tensors are not the model's
            return Exported(export_onnx(self.model.eval(), example, path), "masked")


def gate(
    model: nn.Module,
    input_shape: Sequence[int],
    estimator: str = "topk",
    target_macs: float = 0.5,
    steps: int = 1,
    steps_per_epoch: int | None = None,
    **options: Any,
) -> Gates:
    """Attach per-input channel gates to ``model`` (in place) for a training of ``steps`` steps whose mean MACs
    per sample should be ``target_macs`` of the dense model's. ``estimator``: how a gate logit becomes an on/off
    decision (``python -m dynprune.train --help`` lists them; each comes with its recipe); ``options``: any gated
    flag as a keyword (``gate_pool=2``, ``budget_weight=50``). ``steps_per_epoch`` (default: ``steps``) is the
    unit of the options counted in epochs (``budget_warmup_epochs``)."""
    method = _method(model, input_shape, {"gate": estimator, "target_macs": target_macs, **options})
    if method.param_groups():  # the CLI's optimizer honours them; yours is yours: say so instead of ignoring them
        raise ValueError(
            "gate_lr_scale / gate_weight_decay set the CLI's optimizer; in your loop give gates.parameters() "
            "their own parameter group instead"
        )
    method.begin(steps, steps_per_epoch or steps)
    return Gates(model, method, input_shape, steps)


class Pruning:
    """A statically pruned model (``static_prune``): masks now, the channels removed with ``remove()``."""

    def __init__(self, model: nn.Module, method: StaticPruneMethod, input_shape: Sequence[int]) -> None:
        self.model, self.method, self.input_shape = model, method, tuple(input_shape)

    def macs_ratio(self) -> float:
        """MACs of the kept channels (structured) / dense MACs."""
        return float(self.method.per_sample_macs(self.model, 1)[0]) / self.method.dense_macs

    def remove(self) -> nn.Module:
        """Physically remove the pruned channels (structured pruners): a narrower model with the same outputs."""
        self.method.hard = True
        self.method.finalize(self.model, None, None)
        return self.model


def static_prune(model: nn.Module, input_shape: Sequence[int], method: str = "l1-filter", target_macs: float = 0.5,
          **options: Any) -> Pruning:  # fmt: skip
    """Prune ``model`` (in place, with ``torch.nn.utils.prune`` masks) to ``target_macs`` of its dense MACs by
    ``method`` (``python -m dynprune.train --help`` lists the pruners); ``options``: any static flag as a keyword
    (``ratio=0.3`` for a uniform ratio instead of a MAC target). Fine-tune the model as it is, then ``remove()``."""
    pruning = _method(model, input_shape, {"prune": method, "target_macs": target_macs, **options})
    pruning.begin(1, 1)  # one shot: the masks hold the whole ratio from now on
    return Pruning(model, pruning, input_shape)


def load(path: str | Path) -> nn.Module:
    """Any dynprune checkpoint as a ready model in eval mode: gates, masks and removed channels as trained."""
    model, _, _ = load_run(path)
    return model
