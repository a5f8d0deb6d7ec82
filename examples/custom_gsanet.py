"""Build a small GSA-Net from the layers of ``gsa.nn`` and train it on the embedded data.

    python examples/custom_gsanet.py            # ~1-2 minutes on 2 CPU cores
    python examples/custom_gsanet.py --smoke    # a few seconds (also: GSA_SMOKE=1)

The network: lifting self-attention (image -> lifted map on p4), a group self-attention
transformer block, a 2x2 max-pool over space, a second block, a point-wise linear map to the
classes, sum over space and max over the group axis (invariant logits). It is trained on the
embedded ``rotmnist-mini`` stand-in (randomly rotated MNIST digits; not the benchmark), and its
90-degree invariance is checked at the end.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import gsa
from gsa import data
from gsa.nn import LiftingSelfAttention
from gsa.nn.blocks import LayerNorm, TransformerBlock


class TinyGSANet(nn.Module):
    """Lifting layer, two group self-attention blocks, invariant read-out."""

    def __init__(self, group: str = "p4", channels: int = 8, heads: int = 2, classes: int = 10):
        super().__init__()
        self.lift = LiftingSelfAttention(group, 1, channels, num_heads=heads, patch_size=5)
        self.norm = LayerNorm(channels)  # GroupNorm over (C, |H|, X, Y)
        self.block1 = TransformerBlock(group, channels, channels, num_heads=heads, patch_size=5, crop=2)
        self.pool = nn.MaxPool3d(kernel_size=(1, 2, 2))  # space only; 24x24 -> 12x12 (even: exact)
        self.block2 = TransformerBlock(group, channels, channels, num_heads=heads, patch_size=5)
        self.head = nn.Conv3d(channels, classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.nn.functional.silu(self.norm(self.lift(x)))  # (B, C, |H|, 28, 28)
        f = self.pool(self.block1(f))  # (B, C, |H|, 12, 12)
        f = self.block2(f)
        return self.head(f).mean(dim=(-2, -1)).amax(dim=-1)  # (B, classes)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", default=os.environ.get("GSA_SMOKE") == "1")
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    steps = args.steps or (1 if args.smoke else 150)
    batch, n_test = (4, 8) if args.smoke else (16, 300)

    x_train, y_train = data.arrays("rotmnist-mini", "train")  # float32 (7000, 1, 28, 28) in [0, 1]
    x_test, y_test = data.arrays("rotmnist-mini", "test")
    info = data.info("rotmnist-mini")
    mean, std = info.mean[0], info.std[0]

    def prep(x):
        return (x - mean) / std

    net = TinyGSANet()
    print(f"TinyGSANet: {sum(p.numel() for p in net.parameters()):,} parameters")
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    t0 = time.time()
    net.train()
    for step in range(steps):
        idx = torch.randint(len(x_train), (batch,))
        loss = nn.functional.cross_entropy(net(prep(x_train[idx])), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps} loss {loss.item():.3f}")
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(prep(x_test[i : min(i + 100, n_test)])).argmax(1) for i in range(0, n_test, 100)])
    acc = (pred == y_test[:n_test]).float().mean().item()
    print(
        f"trained {steps} steps of {batch} images in {time.time() - t0:.0f} s; "
        f"test accuracy {100 * acc:.1f}% on {n_test} images"
    )
    errs = gsa.check_equivariance(net, "p4", (1, 1, 28, 28))
    print(f"invariance to 90-degree rotations: max relative logit error {max(errs.values()):.1e}")


if __name__ == "__main__":
    main()
