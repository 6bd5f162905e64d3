"""Runtimes a model is timed in: eager PyTorch, compiled PyTorch and ONNX Runtime.

A runtime turns an inference module and an example input (whose shape it may fix) into a callable from a
tensor to a tensor. Speed-ups are only meaningful against the dense model in the *same* runtime: the runtimes
differ far more from each other than a pruned model from its dense one. ``compiled`` is ``torch.compile``
(inductor); TorchScript is not offered, being slower than it (BENCHMARKS.md, "Design measurements").
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .base import ConfigError
from .registry import Registry

Executor = Callable[[torch.Tensor], torch.Tensor]
RuntimeFn = Callable[[nn.Module, torch.Tensor, int], Executor]

RUNTIMES: Registry[RuntimeFn] = Registry("runtime")

DEPLOY_EXTRA = "ONNX export needs the deploy extra: pip install -e '.[deploy]' (onnx, onnxscript, onnxruntime)"


@RUNTIMES.add
def eager(module: nn.Module, example: torch.Tensor, threads: int) -> Executor:
    """The module as it is."""
    return module


@RUNTIMES.add
def compiled(module: nn.Module, example: torch.Tensor, threads: int) -> Executor:
    """``torch.compile`` for this input shape (compiled on the first call, here, so timing sees none of it)."""
    # Every compile of the same model class adds an entry to the cache of the same code objects; past dynamo's
    # recompile limit (8) it silently runs eager, so a benchmark of many models and batch sizes would time eager
    # code under the name "compiled".
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 1024)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 4096)
    fn = torch.compile(module, dynamic=False)
    with torch.no_grad():
        fn(example)
    return fn


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, dynamic_batch: bool = False) -> Path:
    """Export ``module`` for the input shape of ``example`` (torch's dynamo exporter), its batch size fixed or
    (``dynamic_batch``) any; returns the path."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; fail with the install line, not deep inside)
    except ImportError as exc:
        raise ConfigError(DEPLOY_EXTRA) from exc
    path = Path(path)
    # torch's exporter logs a warning per torchvision op it cannot register (torchvision is not a dependency)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not the user's business
        try:
            dynamic = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
            program = torch.onnx.export(
                module.eval(), (example,), dynamo=True, verbose=False, report=False, dynamic_shapes=dynamic
            )
        except torch.onnx.OnnxExporterError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"ONNX export failed: {first}") from exc
        program.save(str(path))
    return path


class OrtExecutor:
    """An ONNX Runtime session as a tensor -> tensor callable (CPU provider, fixed thread count)."""

    def __init__(self, path: str | Path, threads: int) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise ConfigError(DEPLOY_EXTRA) from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ORT's idle workers spin after each run by default, stealing the cores from whatever is timed next
        # (measured: eager dense resnet18 2.4x slower when interleaved with a spinning session)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})
        return torch.from_numpy(out)


@RUNTIMES.add
def onnxruntime(module: nn.Module, example: torch.Tensor, threads: int) -> Executor:
    """Exported for this input shape, run by ONNX Runtime's CPU provider."""
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(module, example, Path(folder) / "model.onnx")
        return OrtExecutor(path, threads)  # the session has read the file: the folder may go
