"""A calibrated cascade's real speed against its static twin (the l1-filter run at the same MACs) and dense, on real
test images (where inputs stop depends on them), in eager PyTorch, compiled PyTorch (``torch.compile`` of every
model and member, each input shape compiled before timing) and ONNX Runtime (every model exported for any batch
size; the cascade as ``OrtCascade`` runs it), interleaved rounds (``dynprune.timing``).

Batch 1: the same 64 test images one at a time, per image. Batch 64: those 64 images in one call (the cascade
runs its first member on all of them and the next one on the inputs that go on).

usage: python docs/cascade/speed.py CASCADE_JSON TWIN_CKPT DENSE_CKPT [THREADS]
"""

import sys
import tempfile
from pathlib import Path

import torch

from dynprune.cascade import load_cascade
from dynprune.cascade.model import load_member, route
from dynprune.cascade.onnx import OrtCascade, export_cascade
from dynprune.checkpoints import load_checkpoint
from dynprune.data import data_of_checkpoint
from dynprune.loader import BatchLoader
from dynprune.runtimes import OrtExecutor, compiled, export_onnx
from dynprune.timing import interleaved_timing, round_ratio


def main() -> None:
    spec_path, twin_path, dense_path = sys.argv[1:4]
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    torch.set_num_threads(threads)
    cascade, spec = load_cascade(spec_path)
    twin, twin_macs, _ = load_member(twin_path)
    dense, _, _ = load_member(dense_path)
    data = data_of_checkpoint(load_checkpoint(spec["members"][0]["checkpoint"]))
    images, _ = next(iter(BatchLoader(data.test, data, 64, train=False)))
    with torch.no_grad():
        _, stopped = cascade.route(images)
    models = {"cascade": cascade, "twin": twin, "dense": dense}
    models.update({f"member {i}": m for i, m in enumerate(cascade.members)})  # the breakdown: each member alone

    def one_at_a_time(model):
        return lambda x: [model(x[i : i + 1]) for i in range(x.shape[0])]

    print(f"64 test images: {int((stopped > 0).sum())} go past the first member; twin at {twin_macs:.3f}x MACs")
    members = " | ".join(f"member {i} ms/image" for i in range(len(cascade.members)))
    head = "| runtime, batch | cascade ms/image | twin ms/image | dense ms/image | twin / cascade | dense / cascade"
    print(f"{head} | {members} |")
    print("|---|---|---|---|---|---|" + "---|" * len(cascade.members))
    with tempfile.TemporaryDirectory() as folder:
        ort = {
            "cascade": OrtCascade(export_cascade(cascade, images, Path(folder) / "c.onnx"), cascade.threshold, threads)
        }
        for name in ("twin", "dense", *(f"member {i}" for i in range(len(cascade.members)))):
            ort[name] = OrtExecutor(export_onnx(models[name], images, Path(folder) / f"{name}.onnx", True), threads)
        fast = {n: compiled(m, images, threads) for n, m in models.items() if n != "cascade"}
        members = [fast[f"member {i}"] for i in range(len(cascade.members))]
        fast["cascade"] = lambda x: route(members, cascade.threshold, x)[0]
        with torch.no_grad():  # every shape timing will see, compiled now: one image, the batch, the part going on
            for model in fast.values():
                for i in range(images.shape[0]):
                    model(images[i : i + 1])
                model(images)
        for runtime, callables in (("eager", models), ("compiled", fast), ("onnxruntime", ort)):
            for batch in (1, 64):
                calls = {n: one_at_a_time(m) for n, m in callables.items()} if batch == 1 else callables
                timed, rounds = interleaved_timing(calls, images, threads, min_run_time=1.0, min_rounds=5)
                per = {n: t.ms / 64 for n, t in timed.items()}
                flag = "" if all(t.stable for t in timed.values()) else " (unstable)"
                print(
                    f"| {runtime}, {batch} | {per['cascade']:.3f} | {per['twin']:.3f} | {per['dense']:.3f} | "
                    f"{round_ratio(rounds, 'twin', 'cascade'):.2f} | "
                    f"{round_ratio(rounds, 'dense', 'cascade'):.2f}{flag} | "
                    + " | ".join(f"{per[f'member {i}']:.3f}" for i in range(len(cascade.members)))
                    + " |"
                )


if __name__ == "__main__":
    main()
