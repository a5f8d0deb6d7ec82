"""Use a GSA layer inside an ordinary CNN.

    python examples/gsa_in_cnn.py            # under a minute on 2 CPU cores
    python examples/gsa_in_cnn.py --smoke    # a few seconds (also: GSA_SMOKE=1)

A p4 lifting self-attention layer is the first layer of a plain convolutional network. Its lifted
output ``(B, C, 4, X, Y)`` is pooled over the group axis (max over the four rotations), which gives
ordinary ``(B, C, X, Y)`` feature maps that are *rotation-equivariant* (they rotate with the input)
and can feed any ``nn.Conv2d`` stack. Alternatively the group axis can be folded into the channels
(``(B, C*4, X, Y)``), keeping orientation information at the price of exact equivariance downstream.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import gsa
from gsa import data


class GroupMaxPool(nn.Module):
    """``(B, C, |H|, X, Y) -> (B, C, X, Y)``: max over the group axis (invariant to its permutations)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=2)


def make_net(channels: int = 8) -> nn.Sequential:
    return nn.Sequential(
        gsa.nn.LiftingSelfAttention("p4", 1, channels, num_heads=2, patch_size=5),  # (B, 8, 4, 28, 28)
        GroupMaxPool(),  # (B, 8, 28, 28)
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", default=os.environ.get("GSA_SMOKE") == "1")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    steps, batch, n_test = (2, 8, 16) if args.smoke else (150, 32, 500)

    x_train, y_train = data.arrays("rotmnist-mini", "train")
    x_test, y_test = data.arrays("rotmnist-mini", "test")
    net = make_net()
    print(f"hybrid GSA + CNN: {sum(p.numel() for p in net.parameters()):,} parameters")

    # The first two modules (lifting + group max-pool) are rotation-equivariant on their own:
    front = net[:2]
    errs = gsa.check_equivariance(front, "p4", (2, 1, 28, 28))
    print(f"GSA front end: max relative equivariance error {max(errs.values()):.1e}")

    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    t0 = time.time()
    net.train()
    for step in range(steps):
        idx = torch.randint(len(x_train), (batch,))
        loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps} loss {loss.item():.3f}")
    net.eval()
    with torch.no_grad():
        acc = (net(x_test[:n_test]).argmax(1) == y_test[:n_test]).float().mean().item()
    print(
        f"trained {steps} steps of {batch} in {time.time() - t0:.0f} s; test accuracy {100 * acc:.1f}% "
        f"on {n_test} images (the CNN part is not rotation invariant)"
    )


if __name__ == "__main__":
    main()
