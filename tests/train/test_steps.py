"""Input normalisation, the fp32 loss and the evaluation pass."""

import pytest
import torch
from torch import nn

from gsa.train.precision import Precision
from gsa.train.steps import compute_loss, evaluate, make_prepare

CPU = torch.device("cpu")


def test_make_prepare_normalises_per_channel_or_is_the_identity():
    x = torch.rand(2, 2, 3, 3)
    assert make_prepare(None, None, CPU)(x) is x
    out = make_prepare((0.5, 0.25), (0.5, 2.0), CPU)(x)
    torch.testing.assert_close(out[:, 0], (x[:, 0] - 0.5) / 0.5)
    torch.testing.assert_close(out[:, 1], (x[:, 1] - 0.25) / 2.0)


def test_make_prepare_only_centres_a_constant_channel():
    x = torch.rand(2, 2, 3, 3)
    with pytest.warns(RuntimeWarning, match=r"channel\(s\) 1 of the training images are constant"):
        prepare = make_prepare((0.5, 0.25), (0.5, 0.0), CPU)
    out = prepare(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 1], x[:, 1] - 0.25)


def test_compute_loss_is_fp32_cross_entropy():
    logits = torch.randn(4, 3).to(torch.bfloat16)
    labels = torch.tensor([0, 2, 1, 0])
    loss = compute_loss(logits, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits.float(), labels))


def _batches():
    torch.manual_seed(0)
    return [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(3)]


def test_evaluate_sums_over_batches_and_keeps_the_training_mode():
    model = nn.Linear(4, 3)
    model.train()
    batches = _batches()
    meter, stopped = evaluate(model, batches, prepare=lambda x: x, precision=Precision("fp32", CPU), device=CPU)
    assert not stopped and meter.count == 15 and model.training
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert meter.correct == float((logits.argmax(1) == labels).sum())
    assert abs(meter.loss - float(nn.functional.cross_entropy(logits, labels))) < 1e-6


def test_evaluate_can_be_cut_short():
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 1

    meter, stopped = evaluate(
        nn.Linear(4, 3),
        _batches(),
        prepare=lambda x: x,
        precision=Precision("fp32", CPU),
        device=CPU,
        should_stop=should_stop,
    )
    assert stopped and meter.count == 5
