"""Training step (forward + loss + backward) per zoo model: launches and analytic bytes, fused vs
unfused vs the minimum; activation memory kept between forward and backward, against what
torch.autograd saves for the same net (counted with saved-tensor hooks); on a CUDA GPU, the step's
time against torch eager and torch.compile.

    python -m bench.bench_training [--batch 64] [--out bench/results]
    python -m bench.bench_training --batch 256 --models lenet    # the issue's GPU target (>= 1.3x eager)

Writes <out>/training_<device>.json and .md. CPU (interpreter) runs record no timings."""

from __future__ import annotations

import torch

import fusegraph as fg
from bench.common import NO_TIMINGS, median_ms, run_per_model, with_speedups
from fusegraph.checks import sample_inputs
from fusegraph.ir.cost import graph_traffic, minimum_bytes, nbytes
from fusegraph.passes.explain import saved_activations

MODELS = fg.zoo.LOSSES


def targets(model: fg.Model, loss: str, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if loss == "cross_entropy":
        return torch.randint(0, model.output_shape[-1], (batch,), generator=generator)
    shape = (batch, *model.output_shape)
    return (torch.rand(shape, generator=generator) > 0.5).float() if loss == "binary_cross_entropy" else \
        torch.randn(shape, generator=generator)


def torch_loss(model: fg.Model, prediction: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """The same loss in PyTorch, on what the model outputs (a softmax / sigmoid output stays a probability)."""
    import torch.nn.functional as F

    last = model.graph.producers()[model.graph.outputs[0].name].op
    if loss == "cross_entropy":
        return F.nll_loss(torch.log(prediction), target) if last == "softmax" else F.cross_entropy(prediction, target)
    if loss == "binary_cross_entropy":
        return F.binary_cross_entropy(prediction, target) if last == "sigmoid" else \
            F.binary_cross_entropy_with_logits(prediction, target)
    return F.mse_loss(prediction, target)


def autograd_saved_bytes(model: fg.Model, feeds, target, loss: str) -> int:
    oracle = model.to_torch()
    excluded = {t.data_ptr() for t in [*oracle.parameters(), *feeds]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if t.data_ptr() not in excluded and t.numel() > 1:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = torch_loss(model, oracle(*feeds), target, loss)
    value.backward()
    return sum(seen.values())


def gpu_timings(model, feeds, target, loss) -> dict[str, float]:
    """Medians (ms) of one training step (forward, loss, backward, SGD with momentum, the loss read
    back to the host): fusegraph's Trainer (CUDA graph replay of forward + backward, and launching
    kernel by kernel) against torch eager and torch.compile with torch.optim.SGD (foreach)."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    def ours(cuda_graphs: bool):
        trainer = fg.compile(model, loss=loss, optimizer=fg.optim.SGD(lr=0.01, momentum=0.9), cuda_graphs=cuda_graphs)
        return lambda: trainer.train_step(feeds, target)

    def theirs(compiled: bool):
        module = model.to_torch().cuda().train()
        optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
        forward = torch.compile(module) if compiled else module

        def step():
            optimizer.zero_grad(set_to_none=True)
            value = torch_loss(model, forward(*feeds), target, loss)
            value.backward()
            optimizer.step()
            return value.item()

        return step

    steps = {"fusegraph_ms": ours(True), "fusegraph_launching_ms": ours(False), "torch_eager_ms": theirs(False),
             "torch_compile_ms": theirs(True)}
    first = {key: step() for key, step in steps.items()}  # warm-up: captures, compiles; the same first loss
    for key, value in first.items():
        assert abs(value - first["torch_eager_ms"]) <= 1e-3 * max(1.0, abs(value)), (key, first)
    times = {key: median_ms(step) for key, step in steps.items()}
    for key in ("fusegraph", "torch_eager"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        steps[f"{key}_ms"]()
        torch.cuda.synchronize()
        times[f"{key}_peak_bytes"] = torch.cuda.max_memory_allocated()
    return with_speedups(times)


def bench_model(name: str, loss: str, batch: int) -> dict:
    model = fg.zoo.get(name)
    feeds, target = sample_inputs(model, batch), targets(model, loss, batch)
    row = {"model": name, "loss": loss, "batch": batch}
    for fuse in (False, True):
        compiled = fg.compile(model, loss=loss, fuse=fuse)
        device_feeds = [f.to(compiled.device) for f in feeds]
        compiled.loss_and_grads(device_feeds, target.to(compiled.device))
        traffic = graph_traffic(compiled.train_graph, batch)
        row["fused" if fuse else "unfused"] = {"launches": compiled.last_launches,
                                               "bytes_moved": sum(t.total for t in traffic)}
        if fuse:
            row["saved_bytes"] = sum(size(batch) for _, size in saved_activations(compiled.train_graph))
            row["saved_values"] = [v.name for v, _ in saved_activations(compiled.train_graph)]
            if compiled.device == "cuda":
                row.update(gpu_timings(model, device_feeds, target.to("cuda"), loss))
    train = compiled.train_graph  # the fused compile, the loop's last
    gradients = sum(nbytes(v.type, batch) for v in train.outputs)
    row["bytes_minimum"] = minimum_bytes(model.graph, batch) + nbytes(train.inputs[-1].type, batch) + gradients
    row["torch_autograd_saved_bytes"] = autograd_saved_bytes(model, feeds, target, loss)
    return row


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"# Training step per zoo model (batch {results['batch']})", "",
             f"Produced by `{results['benchmark']}`. Device: {env['device']}; torch {env['torch']}, Triton "
             f"{env['triton']}. Bytes are analytic; the minimum is inputs + targets + weights + outputs + "
             "gradients. Saved: activations kept from forward to backward (parameters and inputs excluded), "
             "fusegraph's plan vs what torch.autograd saves (saved-tensor hooks).", "",
             "| model | loss | launches fused / unfused | bytes fused | bytes unfused | minimum | saved (ours) "
             "| saved (torch) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    gpu = env["device_type"] == "cuda"
    if gpu:
        lines[-2] += (" fusegraph ms | launching ms | eager ms | torch.compile ms | vs eager | vs compile "
                      "| peak MB ours / eager |")
        lines[-1] += "---:|---:|---:|---:|---:|---:|---:|"
        lines[-2:-2] = ["GPU times are one SGD-with-momentum step with the loss read back (fusegraph: Trainer.train_step, "
                        "replaying a CUDA graph of forward + backward; 'launching': kernel by kernel; torch: "
                        "torch.optim.SGD, foreach).", ""]
    for r in results["models"]:
        line = (f"| {r['model']} | {r['loss']} | {r['fused']['launches']} / {r['unfused']['launches']} | "
                f"{r['fused']['bytes_moved']:,} | {r['unfused']['bytes_moved']:,} | {r['bytes_minimum']:,} | "
                f"{r['saved_bytes']:,} | {r['torch_autograd_saved_bytes']:,} |")
        if gpu:
            line += (f" {r['fusegraph_ms']:.3f} | {r['fusegraph_launching_ms']:.3f} | {r['torch_eager_ms']:.3f} | "
                     f"{r['torch_compile_ms']:.3f} | "
                     f"{r['speedup_vs_eager']:.2f}x | {r['speedup_vs_torch_compile']:.2f}x | "
                     f"{r['fusegraph_peak_bytes'] / 2**20:.1f} / {r['torch_eager_peak_bytes'] / 2**20:.1f} |")
        lines.append(line)
    if not gpu:
        lines += ["", NO_TIMINGS]
    return "\n".join(lines) + "\n"


def main() -> None:
    run_per_model(__doc__, "training", list(MODELS), lambda name, batch: bench_model(name, MODELS[name], batch),
                  markdown)


if __name__ == "__main__":
    main()
