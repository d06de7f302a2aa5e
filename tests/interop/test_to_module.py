"""compiled.to_module() in plain PyTorch loops, against the torch nets it came from (written here): the same
outputs, input and parameter gradients as torch.autograd, the same parameters and running statistics
after torch.optim steps with gradient clipping and an LR schedule, saved activations kept per call,
state_dict under the torch names. fp32: rtol 1e-4, atol 1e-5."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusegraph as fg

RTOL, ATOL = 1e-4, 1e-5


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(64, 5))


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.embed = nn.Embedding(12, 4)
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.out = nn.Linear(6, 3)

    def forward(self, ids):
        seq, _ = self.lstm(self.embed(ids))
        return self.out(seq[:, -1])


def batches(count: int, shape=(4, 3, 8, 8), classes: int = 5, seed: int = 2):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=generator), torch.randint(0, classes, (shape[0],), generator=generator))
            for _ in range(count)]


def module_of(net: nn.Module, example) -> nn.Module:
    return fg.compile(fg.from_torch(net, example)).to_module()


def test_outputs_and_gradients_are_torch_autograds():
    net = cnn().train()
    (x, y), = batches(1)
    module = module_of(net, x)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = module(x_ours), net(x_theirs)
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
    F.cross_entropy(ours, y).backward()
    F.cross_entropy(theirs, y).backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=RTOL, atol=ATOL)
    mine = dict(module.named_parameters())
    for name, param in net.named_parameters():
        torch.testing.assert_close(mine[name].grad, param.grad, rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")


def test_torch_optim_steps_with_clipping_and_a_schedule_match_the_net():
    net = cnn()
    data = batches(3)
    module = module_of(net, data[0][0])
    module.train(), net.train()
    loops = []
    for model in (module, net):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        loops.append((model, optimizer, schedule))
    for x, y in data:
        for model, optimizer, schedule in loops:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
            schedule.step()
    ours, theirs = module.state_dict(), net.state_dict()
    assert list(ours) == list(theirs)  # the torch names, in torch's order
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=RTOL, atol=ATOL, msg=lambda m, k=key: f"{k}: {m}")
    # evaluation reads the running statistics, folded into the conv from the weights torch.optim moved
    module.eval(), net.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(data[0][0]), net(data[0][0]), rtol=RTOL, atol=ATOL)


def test_two_forwards_then_their_backwards_keep_each_calls_activations():
    net = cnn().train()
    (x1, y1), (x2, y2) = batches(2, seed=3)
    module = module_of(net, x1)
    loss = F.cross_entropy(module(x1), y1) + F.cross_entropy(module(x2), y2)
    loss.backward()
    (F.cross_entropy(net(x1), y1) + F.cross_entropy(net(x2), y2)).backward()
    mine = dict(module.named_parameters())
    for name, param in net.named_parameters():
        torch.testing.assert_close(mine[name].grad, param.grad, rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")


def test_a_recurrent_classifier_trains_like_the_net():
    net = LSTMClassifier()
    ids = torch.randint(0, 12, (5, 7), generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2, 1, 0])
    module = module_of(net, ids)
    F.cross_entropy(module(ids), y).backward()
    F.cross_entropy(net(ids), y).backward()
    mine = dict(module.named_parameters())
    assert set(mine) == {name for name, _ in net.named_parameters()}
    for name, param in net.named_parameters():
        torch.testing.assert_close(mine[name].grad, param.grad, rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")


def test_dropouts_backward_uses_the_mask_its_own_forward_drew():
    """d sum(dropout(x W^T + b)) / d b counts, per unit, the samples the mask kept (over 1 - p): the mask of
    that call, though another forward ran in between."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(6, 32), nn.Dropout(0.5))
    x = torch.randn(16, 6)
    module = module_of(net, x).train()
    first = module(x)
    second = module(x)
    assert not torch.equal(first != 0, second != 0)  # a new mask each call
    first.sum().backward()
    bias = dict(module.named_parameters())["0.bias"]
    torch.testing.assert_close(bias.grad, (first != 0).sum(0).float() / 0.5)


def test_load_state_dict_and_the_modules_own_parameters_drive_the_kernels():
    net, other = cnn(), cnn()
    with torch.no_grad():
        for param in other.parameters():
            param.mul_(-1.0)
    (x, _), = batches(1)
    module = module_of(net, x).eval()
    module.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(module(x), other.eval()(x), rtol=RTOL, atol=ATOL)


def test_mixed_precision_models_are_refused_clearly():
    model = fg.from_torch(cnn(), torch.randn(2, 3, 8, 8))
    with pytest.raises(fg.GraphError, match="to_module runs in float32"):
        fg.compile(model, precision="fp16").to_module()


@pytest.mark.parametrize("build", [cnn, LSTMClassifier], ids=["batch_norm", "lstm"])
def test_eval_mode_gradients_are_torchs(build):
    """Fine-tuning with the running statistics fixed: the evaluation batch norm's own gradient (the input's
    scaled per channel, the weight's and bias's per-channel sums), and an RNN's, as torch.autograd's."""
    net = build().eval()
    (x, y), = batches(1) if build is cnn else [(torch.randint(0, 12, (3, 5), generator=torch.Generator()
                                                              .manual_seed(6)), torch.tensor([0, 2, 1]))]
    module = module_of(net, x).eval()
    F.cross_entropy(module(x), y).backward()
    F.cross_entropy(net(x), y).backward()
    mine = dict(module.named_parameters())
    for name, param in net.named_parameters():
        torch.testing.assert_close(mine[name].grad, param.grad, rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")
    assert all(torch.equal(module.state_dict()[k], v) for k, v in net.state_dict().items() if "running" in k)
