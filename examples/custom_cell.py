"""Write your own recurrent cell from primitive ops and let fusegraph fuse it.

The cell below is a "minimal gated unit" (MGU: one forget gate f; h' = (1 - f) * h + f * tanh(...))
that fusegraph's layers do not offer. Built from matmul, bias_add, split, sigmoid, tanh, mul and add
in a `scan` body, it still compiles to the same kernels as the built-in cells: the input projection
hoisted out of the time loop as one GEMM, and the whole loop as one persistent kernel. The result
is checked against the same recurrence written in plain torch.

    python examples/custom_cell.py
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

import fusegraph as fg
from fusegraph.ir import BATCH, GraphBuilder, TensorType


def mgu_layer(steps: int, features: int, units: int) -> fg.ir.Graph:
    cell = GraphBuilder("mgu_cell")
    h = cell.input("h", TensorType((BATCH, units)))
    x = cell.input("x", TensorType((BATCH, features)))
    w_x = cell.input("w_x", TensorType((2 * units, features)))
    w_h = cell.input("w_h", TensorType((2 * units, units)))
    b = cell.input("b", TensorType((2 * units,)))
    z = cell.op("add", [cell.op("matmul", [x, w_x], name="zx", transpose_b=True),
                        cell.op("matmul", [h, w_h], name="zh", transpose_b=True)], name="z")
    f_pre, c_pre = cell.op("split", [cell.op("bias_add", [z, b], name="zb", axis=1)], name="gates", axis=1,
                           sizes=(units, units))
    f = cell.op("sigmoid", [f_pre], name="f")
    candidate = cell.op("tanh", [c_pre], name="candidate")
    keep = cell.op("sub", [h, cell.op("mul", [f, h], name="fh")], name="keep")  # (1 - f) * h
    h_new = cell.op("add", [keep, cell.op("mul", [f, candidate], name="write")], name="h_new")
    body = cell.build([h_new, h_new])  # the new carry, and h at every step

    layer = GraphBuilder("mgu")
    seq = layer.input("seq", TensorType((BATCH, steps, features)))
    weights = [layer.parameter(name, TensorType(shape), "glorot_uniform") for name, shape in
               (("w_x", (2 * units, features)), ("w_h", (2 * units, units)), ("b", (2 * units,)))]
    _, hs = layer.op("scan", [seq, *weights], name="mgu", layer="mgu", body=body,
                     num_carries=1, num_seqs=1)
    return layer.build([hs])


def torch_mgu(x: torch.Tensor, w_x: torch.Tensor, w_h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    h = x.new_zeros(x.shape[0], w_h.shape[1])
    outputs = []
    for t in range(x.shape[1]):
        f_pre, c_pre = (x[:, t] @ w_x.T + h @ w_h.T + b).chunk(2, dim=1)
        f = torch.sigmoid(f_pre)
        h = (1 - f) * h + f * torch.tanh(c_pre)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def main(steps: int = 20, features: int = 3, units: int = 8, batch: int = 4, verbose: bool = True) -> dict:
    graph = mgu_layer(steps, features, units)
    generator = torch.Generator().manual_seed(0)
    params = {"w_x": 0.5 * torch.randn(2 * units, features, generator=generator),
              "w_h": 0.5 * torch.randn(2 * units, units, generator=generator),
              "b": 0.1 * torch.randn(2 * units, generator=generator)}
    compiled = fg.compile(SimpleNamespace(graph=graph, params=params))
    x = torch.randn(batch, steps, features, generator=generator)
    ours = compiled(x)
    difference = float((ours - torch_mgu(x, **params)).abs().max())
    if verbose:
        print(graph)
        print(compiled.explain(batch=batch))
        print(f"{compiled.last_launches} launches for {steps} steps; largest difference from plain torch: "
              f"{difference:.1e}")
    return {"launches": compiled.last_launches, "kernels": compiled.kernel_names, "max_abs_difference": difference}


if __name__ == "__main__":
    main()
