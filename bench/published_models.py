"""Coverage of torchvision's and timm's published classification models at their published sizes
(default constructors, random weights), in Triton's CPU interpreter: for each, whether fg.from_torch
converts it, its evaluation forward against torch's (fp32: rtol 1e-4, atol 1e-5), its training loss and
every gradient against torch's own float64 result (within 3x torch's float32 error + 1e-3 of the largest
gradient, as tests/interop/test_published_models.py), and how many nodes torch.compile(backend="fusegraph")
leaves to eager torch. A correctness table, not a performance one: the times are the interpreter's.

    python -m bench.published_models [--only NAME ...] [--size 64]

Writes bench/results/published_models.json and .md (a model run again replaces its row). The model code comes as the tests take it
(tests/interop/published.py: `pip install --no-deps --target .published torchvision==0.28.0 timm==1.0.29`)."""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402  (published.load skips through pytest when the code is missing)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import fusegraph as fg  # noqa: E402
from fusegraph.interop import dynamo  # noqa: E402
from tests.interop.published import load  # noqa: E402

CLASSES = 10
RESULTS = Path(__file__).resolve().parent / "results"

# (name, source, constructor, input size): torchvision's model functions, timm's registered names
MODELS = [
    ("resnet18", "torchvision", "resnet.resnet18", 64), ("resnext50_32x4d", "torchvision", "resnet.resnext50_32x4d", 64),
    ("wide_resnet50_2", "torchvision", "resnet.wide_resnet50_2", 64), ("vgg11_bn", "torchvision", "vgg.vgg11_bn", 64),
    ("alexnet", "torchvision", "alexnet.alexnet", 64), ("squeezenet1_1", "torchvision", "squeezenet.squeezenet1_1", 64),
    ("googlenet", "torchvision", "googlenet.googlenet", 64),
    ("mobilenet_v2", "torchvision", "mobilenetv2.mobilenet_v2", 64),
    ("mobilenet_v3_large", "torchvision", "mobilenetv3.mobilenet_v3_large", 64),
    ("efficientnet_b0", "torchvision", "efficientnet.efficientnet_b0", 64),
    ("shufflenet_v2_x1_0", "torchvision", "shufflenetv2.shufflenet_v2_x1_0", 64),
    ("densenet121", "torchvision", "densenet.densenet121", 64), ("regnet_y_400mf", "torchvision", "regnet.regnet_y_400mf", 64),
    ("mnasnet1_0", "torchvision", "mnasnet.mnasnet1_0", 64), ("convnext_tiny", "torchvision", "convnext.convnext_tiny", 64),
    ("resnet18", "timm", "resnet18", 64), ("resnet10t", "timm", "resnet10t", 64),
    ("resnext50_32x4d", "timm", "resnext50_32x4d", 64),
    ("wide_resnet50_2", "timm", "wide_resnet50_2", 64), ("vgg11_bn", "timm", "vgg11_bn", 64),
    ("mobilenetv2_100", "timm", "mobilenetv2_100", 64), ("mobilenetv3_large_100", "timm", "mobilenetv3_large_100", 64),
    ("efficientnet_b0", "timm", "efficientnet_b0", 64), ("mnasnet_100", "timm", "mnasnet_100", 64),
    ("densenet121", "timm", "densenet121", 64), ("regnety_004", "timm", "regnety_004", 64),
    ("convnext_atto", "timm", "convnext_atto", 64),
]


# what a run found behind a row that is off, by (source, name)
NOTES = {
    ("timm", "mnasnet_100"): "Off by a ReLU tie, not a defect: the same error reproduces on its stage 2 alone "
    "(blocks.2.0-2.2, batch 4 at 24 x 24), traced there node by node against the float64 reference interpreter "
    "over the same graph: every kernel's output agrees until blocks.2.2's bn2 output, where one pre-activation "
    "of 69,120 lies within float32 rounding of zero (4.7e-7 in float64 on a scale of 5.4; 0 here): that "
    "element's gradient passes in float64 and not here, and spreads through the block's batch norms.",
    ("torchvision", "densenet121"): "Off by ReLU ties, not a defect: traced node by node as for timm's "
    "mnasnet_100, every kernel agrees with the float64 reference until the first of four ReLUs "
    "(features.transition2.relu, denseblock2 layers 10-12's relu1) whose input has one element within float32 "
    "rounding of zero; the dense blocks' concatenations carry each tie into every later layer.",
    ("timm", "densenet121"): "The same four ReLU ties as torchvision's densenet121 (the same architecture and "
    "initialisation), traced the same way.",
    ("timm", "mobilenetv2_100"): "Traced node by node against the float64 reference interpreter: one ReLU6 tie "
    "(blocks.3.2, one element) and then, deeper, training batch norms whose few values (batch 2 at 2 x 2) give "
    "large inverse deviations (8.4), where float32 rounding of the forward reaches 1.4e-4 relative "
    "(blocks.5.1-5.2); float32's limit at this size, not a kernel found wrong, but not proven either.",
}


def build(source: str, constructor: str) -> nn.Module:
    torch.manual_seed(0)
    if source == "timm":
        net = load("timm").create_model(constructor, num_classes=CLASSES)
    else:
        module, function = constructor.split(".")
        extra = {"aux_logits": False, "init_weights": True} if function == "googlenet" else {}
        net = getattr(load(module), function)(num_classes=CLASSES, **extra)
    for m in net.modules():  # dropout and stochastic depth off: training deterministic
        if isinstance(m, nn.Dropout) or type(m).__name__ == "StochasticDepth":
            m.p = 0.0
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0
    return net


def gradients_hold(net: nn.Module, model, x: torch.Tensor, y: torch.Tensor) -> dict:
    wide = copy.deepcopy(net).double()
    exact_loss = F.cross_entropy(wide(x.double()), y)
    exact_loss.backward()
    exact = {name: p.grad for name, p in wide.named_parameters()}
    value, grads = fg.compile(model, loss="cross_entropy").loss_and_grads(x, y)
    net.zero_grad()
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    theirs = dict(net.named_parameters())
    scale = max(g.abs().max().item() for g in exact.values())
    worst = 0.0  # our error over the bound (<= 1 holds)
    for ours, grad in grads.items():
        key = model.torch_names[ours]
        ours_error = (grad.double() - exact[key]).abs().max().item()
        bound = 3 * (theirs[key].grad.double() - exact[key]).abs().max().item() + 1e-3 * scale
        worst = max(worst, ours_error / bound)
    loss_bound = 3 * abs(loss.item() - exact_loss.item()) + 1e-5 * abs(exact_loss.item())
    return {"gradients": len(grads), "worst_error_over_bound": worst,
            "loss_holds": abs(value - exact_loss.item()) <= loss_bound, "holds": worst <= 1.0}


def eager_nodes(net: nn.Module, x: torch.Tensor) -> tuple[int, str]:
    torch._dynamo.reset()
    try:
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", dynamo.FusegraphFallbackWarning)
            got = torch.compile(net, backend="fusegraph")(x)
        close = torch.allclose(got, net(x), rtol=1e-4, atol=1e-5)
        fallbacks = [str(w.message) for w in caught if issubclass(w.category, dynamo.FusegraphFallbackWarning)]
        count = sum(int(re.match(r"fusegraph runs (\d+)", m).group(1)) for m in fallbacks)
        return count, ("" if close else "backend result differs from torch") + " ".join(fallbacks)[:300]
    finally:
        torch._dynamo.reset()


def check(name: str, source: str, constructor: str, size: int) -> dict:
    row: dict = {"name": name, "source": source, "constructor": constructor, "input": [2, 3, size, size]}
    started = time.perf_counter()
    try:
        net = build(source, constructor)
        row["parameters"] = sum(p.numel() for p in net.parameters())
        torch.manual_seed(1)
        x, y = torch.randn(2, 3, size, size), torch.randint(0, CLASSES, (2,))
        model = fg.from_torch(net.train(), x)
        row["converts"] = True
        with torch.no_grad():
            row["forward_holds"] = torch.allclose(fg.compile(model)(x), net.eval()(x), rtol=1e-4, atol=1e-5)
        net.train()
        row.update(gradients_hold(net, model, x, y))
        row["eager_nodes"], row["backend_note"] = eager_nodes(net.eval(), x)
    except Exception as error:  # noqa: BLE001 - recorded per model
        row.setdefault("converts", False)
        row["error"] = f"{type(error).__name__}: {str(error)[:400]}"
        traceback.print_exc()
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["# Published models through fusegraph (CPU interpreter, correctness only)", "",
             f"torch {torch.__version__}, batch 2, random weights, {time.strftime('%Y-%m-%d')}; "
             "`python -m bench.published_models`. Gradients: every parameter's within 3x torch's own float32 "
             "error from torch's float64 result (+ 1e-3 of the largest gradient).", "",
             "| source | model | parameters | converts | forward (eval) | loss and every gradient (train) | "
             "eager nodes under the backend | interpreter time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        grads = ("holds" if r.get("holds") and r.get("loss_holds") else
                 f"off ({r.get('worst_error_over_bound', float('nan')):.2g}x bound)") if "holds" in r else "-"
        lines.append(f"| {r['source']} | {r['name']} | {r.get('parameters', 0) / 1e6:.1f}M | "
                     f"{'yes' if r.get('converts') else 'no: ' + r.get('error', '')[:120]} | "
                     f"{'holds' if r.get('forward_holds') else '-' if 'forward_holds' not in r else 'off'} | {grads} | "
                     f"{r.get('eager_nodes', '-')} | {r['seconds']} s |")
    notes = [f"- {source} {name}: {text}" for (source, name), text in NOTES.items()
             if any((r["source"], r["name"]) == (source, name) for r in rows)]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="model names to run (their rows replace earlier ones)")
    parser.add_argument("--size", type=int, help="input height and width for every model")
    args = parser.parse_args()
    rows = []
    for name, source, constructor, size in MODELS:
        if args.only and name not in args.only:
            continue
        rows.append(check(name, source, constructor, args.size or size))
        print(json.dumps(rows[-1]), flush=True)
        save(rows)


def save(rows: list[dict]) -> None:
    """The rows run now, over those of earlier runs (a model run again replaces its row), in MODELS' order."""
    path = RESULTS / "published_models.json"
    kept = {(r["source"], r["name"]): r for r in (json.loads(path.read_text()) if path.exists() else [])}
    kept.update({(r["source"], r["name"]): r for r in rows})
    order = {(source, name): i for i, (name, source, _, _) in enumerate(MODELS)}
    merged = sorted(kept.values(), key=lambda r: order.get((r["source"], r["name"]), len(order)))
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(merged, indent=1) + "\n")
    (RESULTS / "published_models.md").write_text(markdown(merged))


if __name__ == "__main__":
    try:
        main()
    except (pytest.skip.Exception, pytest.fail.Exception) as missing:  # the model code is not installed
        raise SystemExit(str(missing)) from None
