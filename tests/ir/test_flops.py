"""The cost model's arithmetic (ir/cost.py graph_flops) against torch's own count, FlopCounterMode, of
the same computation as torch runs it: a conv net forward and training step (as torch.nn modules), a
grouped conv's forward, and an LSTM as torch's cell equations step by step."""

import torch
from torch.utils.flop_counter import FlopCounterMode

import fusegraph as fg
from fusegraph.ir.cost import graph_flops
from fusegraph.passes.autodiff import autodiff


def _counted(run) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def test_a_conv_nets_forward_and_training_flops_are_torchs():
    model = fg.Sequential([fg.Input((3, 10, 10)), fg.Conv2D(8, 3, padding="same", activation="relu"),
                           fg.Conv2D(6, 3, strides=2), fg.Flatten(), fg.Dense(4)])
    net, x = model.to_torch(), torch.randn(5, 3, 10, 10)
    assert graph_flops(model.graph, 5) == _counted(lambda: net(x))
    # a training step: the weights' gradients and every input gradient but the network input's, as torch
    assert graph_flops(autodiff(model.graph, "mse"), 5) == _counted(lambda: net(x).sum().backward())


def test_a_grouped_conv_does_a_groups_share_of_the_work():
    model = fg.Sequential([fg.Input((8, 9, 9)), fg.Conv2D(6, 3, strides=2, groups=2), fg.Flatten(), fg.Dense(3)])
    net, x = model.to_torch(), torch.randn(4, 8, 9, 9)
    assert graph_flops(model.graph, 4) == _counted(lambda: net(x))


def test_an_lstm_counts_its_cell_once_per_step():
    steps, batch, features, hidden = 7, 3, 4, 6
    model = fg.Sequential([fg.Input((steps, features)), fg.LSTM(hidden), fg.Dense(2)])
    lstm = torch.nn.LSTM(features, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, 2)
    x = torch.randn(batch, steps, features)

    def cell_by_cell():  # torch's LSTM equations, one matmul pair per step
        h = c = torch.zeros(batch, hidden)
        for t in range(steps):
            gates = x[:, t] @ lstm.weight_ih_l0.T + h @ lstm.weight_hh_l0.T
            i, f, g, o = gates.chunk(4, 1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
        return head(h)

    assert graph_flops(model.graph, batch) == _counted(cell_by_cell)
