"""RNN layers given initial states and returning their final states (Keras' `initial_state` and
`return_state`, each direction's carries in turn): forward against nn.LSTM / nn.GRU / nn.RNN given
(h0, c0) through to_torch(), and every gradient against torch.autograd's, including the gradients that
reach the initial states (through the Dense layers computing them). fp32: KERNEL_RTOL / KERNEL_ATOL."""

import pytest
import torch

import fusegraph as fg
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL, assert_grads_match_torch

CARRIES = {fg.LSTM: 2, fg.GRU: 1, fg.SimpleRNN: 1}


def stateful(rnn_cls, bidirectional: bool, steps: int = 5) -> fg.Model:
    torch.manual_seed(0)
    seq, z = fg.Input((steps, 3), name="seq"), fg.Input((4,), name="z")
    count = CARRIES[rnn_cls] * (2 if bidirectional else 1)
    states = [fg.Dense(6, activation="tanh", name=f"init{i}")(z) for i in range(count)]
    outs = rnn_cls(6, return_sequences=True, bidirectional=bidirectional, return_state=True, name="rnn")(seq, *states)
    features = fg.Concatenate()([fg.Flatten()(outs[0]), *outs[1:]])
    return fg.Model([seq, z], fg.Dense(3, name="head")(features))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["one way", "bidirectional"])
@pytest.mark.parametrize("rnn_cls", [fg.LSTM, fg.GRU, fg.SimpleRNN], ids=["lstm", "gru", "rnn"])
def test_initial_and_final_states_match_torch_forward_and_backward(rnn_cls, bidirectional):
    model = stateful(rnn_cls, bidirectional)
    feeds, target = [torch.randn(4, 5, 3), torch.randn(4, 4)], torch.randint(0, 3, (4,))
    with torch.no_grad():
        torch.testing.assert_close(fg.compile(model)(feeds), model.to_torch()(*feeds), rtol=KERNEL_RTOL,
                                   atol=KERNEL_ATOL)
    assert_grads_match_torch(model, feeds, target, "cross_entropy")


def test_a_single_step_sequence_starts_from_its_initial_state():
    model = stateful(fg.LSTM, False, steps=1)
    assert_grads_match_torch(model, [torch.randn(3, 1, 3), torch.randn(3, 4)], torch.randint(0, 3, (3,)),
                             "cross_entropy")


def test_initial_states_of_the_wrong_count_or_shape_are_one_clear_error():
    seq, h = fg.Input((5, 3)), fg.Input((6,))
    with pytest.raises(fg.GraphError, match=r"layer 'lstm' \(LSTM\) takes its initial states as \(h, c\) after the "
                                            r"sequence, each f32\[N,6\]"):
        fg.LSTM(6, name="lstm")(seq, h)
    with pytest.raises(fg.GraphError, match=r"\(h, h_reverse\)"):
        fg.GRU(6, bidirectional=True, name="gru")(seq, fg.Input((5,)), fg.Input((6,)))
