"""Fixed-k executor: deploy for gates that keep the same number of channels per site and sample (``topk``).

With k fixed, every tensor has a shape known before the call, so the whole forward is plain tensor ops with no
data-dependent shapes or Python branches: it traces (TorchScript), compiles (``torch.compile``, one graph) and
exports to ONNX (``TopK``, ``Gather``, ``Conv``). Each sample still computes only its own channels:

- a site's producer gathers each sample's k filters and runs them as one grouped convolution with one group per
  sample: input ``[1, B*C_in, H, W]``, weight ``[B*k, C_in, kh, kw]``, ``groups=B`` -> ``[B, k, H', W']``;
- a depthwise layer inside the site gathers the same k channels per sample (``groups=B*k``);
- the consumer gathers each sample's k input channels of its weight (``[B*C_out, k, kh, kw]``, ``groups=B``).

The site's tensor is *packed*: sample b's channel j is channel ``idx[b, j]`` of the full-width model. At batch
1 this is the ``gather`` strategy of ``deploy.py`` without its branches. Supported where no gated producer reads
another site and no site is flattened into a linear layer (ResNets, MobileNetV2); chains of sites (VGG, LeNet)
are refused with the reason.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sites import chained_sites, linear_read_sites
from ..timing import interleaved_timing
from .gated_copy import GatedCopy, gated_copy, swap_layers
from .site_runtime import DeployGate


class FixedKUnsupported(ValueError):
    """This gated model cannot run with static shapes (the message says why)."""


class SiteIndex:
    """The per-call channel choice of one site, shared by its producer, channel-wise layers and consumers."""

    def __init__(self) -> None:
        self.idx: torch.Tensor | None = None  # [B, k] channel indices per sample, set by the producer


class FixedKConv(nn.Module):
    """A folded conv in one role: ``produce`` a site (gate + its filters), run ``depthwise`` inside one, or
    ``consume`` one; per-sample channel sets as grouped convolutions."""

    def __init__(self, conv: nn.Conv2d, site: SiteIndex, role: str, gate: DeployGate | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().clone())  # [C_out, C_in / g, kh, kw]
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias)
        if role == "consume":  # input-major copy: a sample's k input channels are k contiguous rows
            self.register_buffer("weight_in_major", self.weight.transpose(0, 1).contiguous())
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.site, self.role, self.gate = site, role, gate
        if gate is not None:
            self.keep, self.group = gate.keep, gate.group
        self.wide: dict[int, bool] = {}  # batch size -> run this layer wide (autotuned); default narrow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        scale = None
        if self.role == "produce":
            logits, scale = self.gate.logits_and_scale(x.sum(dim=(2, 3)), height * width)  # [B, G], [B, C] | None
            idx = logits.topk(self.keep, dim=1).indices  # [B, k groups]
            if self.group > 1:  # a gate group opens `group` consecutive channels
                idx = (idx[:, :, None] * self.group + torch.arange(self.group, device=idx.device)).flatten(1)
            self.site.idx = idx
        if self.wide.get(batch, False):  # static shapes: these branches are fixed when traced or exported
            out = self._wide(x, self.site.idx)
        elif batch == 1:
            out = self._single(x, self.site.idx[0])
        else:
            out = self._per_sample(x, self.site.idx)
        if scale is not None:  # feature boosting: each sample's kept channels scaled (the producer is the mask point)
            out = out * scale.gather(1, self.site.idx)[:, :, None, None]
        return out

    def _wide(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The dense convolution with the packed site at full width: a producer computes every filter and keeps
        each sample's k (``gather``), a consumer reads its packed input scattered into zeros. Exact too; faster
        than the narrow path for layers whose grouped form the convolution library runs slowly."""
        if self.role == "produce":
            out = self._conv(x, self.weight, self.bias, 1)
            return out.gather(1, idx[:, :, None, None].expand(-1, -1, out.shape[2], out.shape[3]))
        full = x.new_zeros(x.shape[0], self.weight.shape[1], x.shape[2], x.shape[3])
        full = full.scatter(1, idx[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3]), x)
        return self._conv(full, self.weight, self.bias, 1)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def _single(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """One sample: gathered weights and a plain convolution (no reshapes or weight transposes, which cost
        ~15% of batch-1 time in ONNX Runtime)."""
        if self.role == "consume":
            return self._conv(x, self.weight.index_select(1, idx), self.bias, 1)
        weight, bias = self.weight.index_select(0, idx), self.bias.index_select(0, idx)
        return self._conv(x, weight, bias, weight.shape[0] if self.role == "depthwise" else 1)

    def _per_sample(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Each sample its own channels, the batch folded into the channel axis of one grouped convolution."""
        batch, channels, height, width = x.shape
        flat = idx.reshape(-1)  # [B*k]
        if self.role == "consume":  # [B*k, C_out, kh, kw] -> [B, C_out, k, kh, kw] -> [B*C_out, k, kh, kw]
            gathered = self.weight_in_major.index_select(0, flat)
            k = channels
            weight = gathered.view(batch, k, *gathered.shape[1:]).transpose(1, 2).reshape(-1, k, *gathered.shape[2:])
            bias, groups = self.bias.repeat(batch), batch
        else:
            weight, bias = self.weight.index_select(0, flat), self.bias.index_select(0, flat)
            groups = weight.shape[0] if self.role == "depthwise" else batch
        out = self._conv(x.reshape(1, -1, height, width), weight, bias, groups)
        return out.view(batch, -1, out.shape[2], out.shape[3])


class FixedKModel(nn.Module):
    """Inference-only, static-shape executor of a fixed-k gated model (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def train(self, mode: bool = True) -> FixedKModel:
        """Inference-only: stays in eval mode whatever is asked."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def layers(self) -> list[FixedKConv]:
        return [m for m in self.model.modules() if isinstance(m, FixedKConv)]

    @torch.no_grad()
    def autotune(self, example: torch.Tensor, min_run_time: float = 0.02) -> dict[str, int]:
        """Time every producer and consumer narrow and wide on its real input for this batch size (the project's
        one timing, ``timing.interleaved_timing``, ``min_run_time`` seconds per mode) and keep the faster;
        depthwise layers stay narrow. Returns the count of layers per mode. Decided in eager PyTorch; compiled
        and exported copies inherit the choice."""
        batch = example.shape[0]
        layers = [m for m in self.layers() if m.role != "depthwise"]
        inputs: dict[FixedKConv, tuple[torch.Tensor, torch.Tensor | None]] = {}
        hooks = [m.register_forward_pre_hook(_recorder(inputs)) for m in layers]
        for m in layers:
            m.wide[batch] = False
        try:
            self(example)
        finally:
            for h in hooks:
                h.remove()
        threads = torch.get_num_threads()
        for m in layers:
            x, idx = inputs[m]
            modes = {"narrow": _layer_run(m, batch, idx, False), "wide": _layer_run(m, batch, idx, True)}
            timed, _ = interleaved_timing(modes, x, threads, min_run_time)
            m.wide[batch] = timed["wide"].ms < timed["narrow"].ms
        wide = sum(m.wide[batch] for m in layers)
        return {"narrow": len(layers) - wide, "wide": wide}


def _layer_run(layer: FixedKConv, batch: int, idx: torch.Tensor | None, wide: bool):
    """One layer in one mode on its recorded channel choice, as a callable of its input (for the timing)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        layer.wide[batch] = wide
        layer.site.idx = idx
        return layer(x)

    return run


def _recorder(inputs: dict):
    """A forward pre-hook that keeps a layer's input and its site's channel choice at that moment."""

    def record(module: FixedKConv, args: tuple[torch.Tensor, ...]) -> None:
        inputs[module] = (args[0], module.site.idx)

    return record


def fixed_k_problem(copied: GatedCopy) -> str | None:
    """Why this gated model cannot run with static shapes, or None when it can."""
    loose = sorted(name for name, gate in copied.gates.items() if gate.keep is None)
    if loose:
        return (
            f"sites {', '.join(loose[:3])}{' ...' if len(loose) > 3 else ''} open a data-dependent number of "
            "channels (threshold gates); static shapes need fixed-count gates (--gate topk)"
        )
    for site, producer in chained_sites(copied.sites).items():
        return f"site {site} feeds the gated producer {producer} (a chain of sites, as in VGG/LeNet)"
    for site, linear in linear_read_sites(copied.model, copied.sites).items():
        return f"site {site} is flattened into the linear layer {linear}"
    return None


def to_fixed_k(model: nn.Module) -> FixedKModel:
    """Convert a trained fixed-k gated model to a ``FixedKModel``; raises ``FixedKUnsupported`` with the reason
    for models it cannot run (threshold gates, chains of sites, sites read by a linear layer)."""
    copied = gated_copy(model)
    problem = fixed_k_problem(copied)
    if problem is not None:
        raise FixedKUnsupported(f"no static-shape executor for this model: {problem}")
    indices = {name: SiteIndex() for name in copied.widths}

    def make_conv(conv: nn.Conv2d, in_site: str | None, out_site: str | None, depthwise: bool, width: int):
        if out_site is not None:
            return FixedKConv(conv, indices[out_site], "produce", copied.gates[out_site])
        return FixedKConv(conv, indices[in_site], "depthwise" if depthwise else "consume")

    def make_linear(linear: nn.Linear, in_site: str) -> nn.Module:
        raise FixedKUnsupported(f"site {in_site} is flattened into a linear layer")  # fixed_k_problem said so

    return FixedKModel(swap_layers(copied, make_conv, make_linear))
