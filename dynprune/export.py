"""python -m dynprune.export CHECKPOINT --onnx model.onnx: a run's deploy model as a fixed-shape ONNX file,
checked against PyTorch on real test images with ONNX Runtime.

A cascade (``cascade.json`` of ``python -m dynprune.cascade``) exports one file per member (FILE for the first,
``<stem>.member<i>.onnx`` beside it), each for any batch size, its threshold in the report, and is checked by
running them as the cascade does. Network-scope width gates (``--width-scope network``) export their router as
FILE and one static model per width beside it (``<stem>.width<i>.onnx``), each for any batch size, checked by
running them as the routed executor does. Other gated runs export their static-shape executor
(``dynprune.gates.fixed_k``: gates, ``TopK``, weight ``Gather``s and narrow ``Conv``s, each sample only its own
channels), so they need fixed-count gates (``--gate topk``); statically pruned runs export their physically
narrower model, dense runs the dense one, BN folded in all. The batch size is part of the file (one grouped
convolution per layer holds a group per sample).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .base import ConfigError, option
from .cascade import Cascade, load_cascade
from .cascade.onnx import OrtCascade, export_cascade
from .checkpoints import load_checkpoint
from .cli import run_command
from .config import parse_cli
from .data import data_of_checkpoint
from .fold import fold_bn
from .gates.fixed_k import FixedKUnsupported, to_fixed_k
from .gates.routed import OrtRouted, RoutedUnsupported, RoutedWidths, export_routed
from .loader import BatchLoader
from .models import input_shape
from .outputs import check_output_file
from .prune.masks import make_permanent
from .rebuild import deployable_from_checkpoint, gated_model_from_checkpoint, is_gated_checkpoint
from .runtimes import OrtExecutor, export_onnx

PROG = "python -m dynprune.export"
#: the largest |ONNX Runtime - PyTorch| accepted on the check images, relative to the logits' scale (the largest
#: |PyTorch logit|, at least 1): float32 kernels differ in the last digits, and logits may reach the hundreds
TOLERANCE = 1e-4


def exportable(path: str) -> tuple[nn.Module, nn.Module, dict]:
    """(module to export, the PyTorch reference it must equal, checkpoint; a cascade's: its first member's)."""
    if path.endswith(".json"):  # a cascade.json: one file per member
        cascade, spec = load_cascade(path)
        return cascade, cascade, load_checkpoint(spec["members"][0]["checkpoint"])
    if is_gated_checkpoint(path):
        model, _, ckpt = gated_model_from_checkpoint(path)
        with contextlib.suppress(RoutedUnsupported):  # network-scope width gates: a router and a model per width
            return RoutedWidths(model), model, ckpt
        try:
            return to_fixed_k(model), model, ckpt
        except FixedKUnsupported as exc:
            raise ConfigError(f"{path}: {exc}") from None
    model, ckpt = deployable_from_checkpoint(path)
    make_permanent(model)  # a soft-masked run: its zeros baked into the weights (the same function, no hooks)
    return fold_bn(model), model, ckpt


def check_images(ckpt: dict, batch: int, count: int, data_dir: str | None) -> list[torch.Tensor]:
    """Whole batches of real, normalised test images of the run's data set, ``count`` images at most."""
    data = data_of_checkpoint(ckpt, data_dir)
    batches = []
    for images, _ in BatchLoader(data.test, data, batch, train=False):
        if images.shape[0] < batch or len(batches) * batch >= count:
            break
        batches.append(images)
    return batches


@dataclass
class ExportConfig:
    """python -m dynprune.export CHECKPOINT --onnx FILE: what to export, and how it is checked."""

    checkpoint: str = option("", "checkpoint.pt of a dynprune run, or a cascade.json", positional=True)
    onnx: str | None = option(None, "the ONNX file to write; required")
    batch: int = option(1, "the batch size the file is exported for")
    check_images: int = option(256, "test images ONNX Runtime is checked on (0: no check)")
    data_dir: str | None = option(None, "where the run's data set is, if not where it was")
    threads: int = option(2, "ONNX Runtime threads for the check")

    def validate(self) -> None:
        if self.onnx is None:
            raise ConfigError("--onnx is required: the ONNX file to write (e.g. --onnx model.onnx)")
        if self.batch < 1 or self.check_images < 0 or self.threads < 1:
            raise ConfigError("--batch and --threads must be >= 1, --check-images >= 0")


def check_against_pytorch(
    session: Callable[[torch.Tensor], torch.Tensor], reference: nn.Module, ckpt: dict, args: ExportConfig
) -> dict:
    """ONNX Runtime's logits against PyTorch's on real test images: the report's check fields."""
    worst, scale, agree, seen = 0.0, 1.0, 0, 0
    with torch.no_grad():
        for images in check_images(ckpt, args.batch, args.check_images, args.data_dir):
            got, want = session(images), reference(images)
            worst = max(worst, (got - want).abs().max().item())
            scale = max(scale, want.abs().max().item())
            agree += int((got.argmax(1) == want.argmax(1)).sum())
            seen += images.shape[0]
    if seen == 0:
        raise ConfigError(f"the test split has fewer than --batch {args.batch} images; nothing was checked")
    relative = worst / scale
    report = dict(
        checked_images=seen,
        max_abs_error=worst,
        logit_scale=scale,
        max_relative_error=relative,
        tolerance=f"{TOLERANCE:g} x max(1, largest |logit|)",
        top1_agreement=agree / seen,
    )
    verdict = "OK" if relative <= TOLERANCE else f"FAILED (over {TOLERANCE:g} of the logits' scale)"
    print(
        f"ONNX Runtime vs PyTorch on {seen} test images: max |diff| {worst:.2e} for logits up to {scale:.3g} "
        f"(relative {relative:.2e}) {verdict}; top-1 agrees on {agree}/{seen}"
    )
    return report


def write_files(
    module: nn.Module, example: torch.Tensor, out: Path, threads: int
) -> tuple[list[Path], Callable[[], Callable[[torch.Tensor], torch.Tensor]], dict]:
    """(the files written, how ONNX Runtime runs them as ``module`` runs, what the report adds) for each kind of
    deploy model: routed width gates and cascades write one file per branch, any batch size."""
    if isinstance(module, RoutedWidths):
        files = export_routed(module, example, out)
        print(f"wrote {', '.join(map(str, files))}: the router, then one static model per width (any batch size)")
        return files, lambda: OrtRouted(files, threads), {}
    if isinstance(module, Cascade):
        files = export_cascade(module, example, out)
        print(f"wrote {', '.join(map(str, files))}: one static model per member, cheapest first (any batch size)")
        return files, lambda: OrtCascade(files, module.threshold, threads), {"threshold": module.threshold}
    export_onnx(module, example, out)
    shape = ", ".join(map(str, example.shape))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): input [{shape}]")
    return [out], lambda: OrtExecutor(out, threads), {}


def export(args: ExportConfig) -> int:
    out = Path(args.onnx)
    check_output_file(out, "--onnx", "model.onnx")
    module, reference, ckpt = exportable(args.checkpoint)
    shape = input_shape(ckpt["arch"])
    example = torch.randn(args.batch, *shape)
    files, session, extra = write_files(module, example, out, args.threads)
    report = {"onnx": [str(f) for f in files] if len(files) > 1 else str(out), "batch": args.batch, **extra}
    report.update(input_shape=list(shape), checked_images=0)
    if args.check_images > 0:
        report.update(check_against_pytorch(session(), reference, ckpt, args))
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report.get("max_relative_error", 0.0) <= TOLERANCE else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_cli(ExportConfig, argv, PROG, __doc__.split("\n\n")[0])
    torch.set_num_threads(args.threads)

    def interrupted() -> str:
        return f"{args.onnx} may be incomplete: export again" if Path(args.onnx).exists() else "nothing was written"

    return run_command(PROG, lambda: export(args), interrupted)


if __name__ == "__main__":
    sys.exit(main())
