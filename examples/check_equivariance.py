"""Check the equivariance of any model with ``gsa.check_equivariance``.

    python examples/check_equivariance.py            # ~1 minute on 2 CPU cores
    python examples/check_equivariance.py --smoke    # seconds (also: GSA_SMOKE=1)

``gsa.check_equivariance(module, group, input_shape)`` returns, for each exact group element g
(quarter turns, mirrors), the relative error max|f(g.x) - g.f(x)| / max|g.f(x)|, computed in
float64 on a copy of the module in eval mode. The action on the output is chosen from its rank:
an image (B, C, X, Y), a lifted map (B, C, |H|, X, Y) or logits (B, K) (invariance).
"""

from __future__ import annotations

import argparse
import math
import os

import torch
from torch import nn

import gsa
import gsa.data


def show(name: str, errors: dict) -> float:
    worst = max(errors.values())
    print(f"{name:<58} max error {worst:.1e}  " + " ".join(f"{e}:{v:.0e}" for e, v in errors.items()))
    return worst


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", default=os.environ.get("GSA_SMOKE") == "1")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    size = 24 if args.smoke else 28  # exact sizes for this preset: even, >= 22

    # 1. single layers: image -> lifted map, lifted map -> lifted map
    lift = gsa.nn.LiftingSelfAttention("p4m", 1, 6, num_heads=2, patch_size=3)
    show("LiftingSelfAttention p4m (image -> lifted)", gsa.check_equivariance(lift, "p4m", (1, 1, 9, 9)))
    gsa_layer = gsa.nn.GroupSelfAttention("p4m", 6, 6, num_heads=2, patch_size=3)
    show("GroupSelfAttention p4m (lifted -> lifted)", gsa.check_equivariance(gsa_layer, "p4m", (1, 6, 8, 9, 9)))

    # 2. a whole preset network: the logits are invariant
    channels, heads = (6, 1) if args.smoke else (8, 2)
    # (a new GSANet starts with a zero classifier, i.e. zero logits: draw a random one to check)
    net = gsa.models.create("rotmnist", group="p4", channels=channels, num_heads=heads, head_init="whitening")
    show(f"rotmnist GSA-Net p4, {size}x{size} input (logits)", gsa.check_equivariance(net, "p4", (2, 1, size, size)))

    # 3. p8: a 45-degree rotation of a pixel image needs interpolation, so it is only approximate
    #    (on a smooth input: a digit; on white noise the error would be of order 1)
    lift8 = gsa.nn.LiftingSelfAttention("p8", 1, 4, num_heads=1, patch_size=5)
    digit = gsa.data.arrays("rotmnist-mini", "test")[0][:1]
    errs = gsa.check_equivariance(lift8, "p8", x=digit, elements=range(8))
    print("p8 lifting layer on a digit, every element (45-degree turns are interpolated):")
    print("   " + " ".join(f"{math.degrees(gsa.groups.get('p8').angle(e)):.0f}deg:{v:.0e}" for e, v in errs.items()))

    # 4. a model that is NOT equivariant: the check says so
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    show("plain Conv2d stack (not equivariant)", gsa.check_equivariance(cnn, "p4", (1, 1, 12, 12)))

    # 5. input sizes matter: a max-pool that sees an odd size breaks exact invariance
    pcam = gsa.models.create("pcam", group="p4", channels=4, num_heads=1, head_init="whitening")
    for s in () if args.smoke else (56, 88, 96):
        show(f"pcam GSA-Net p4 (channels 4), {s}x{s} input", gsa.check_equivariance(pcam, "p4", (1, 3, s, s)))

    # 6. a trained model can be checked as well; here: after one optimiser step
    if args.smoke:
        return
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = net(torch.randn(2, 1, size, size)).logsumexp(1).mean()
    loss.backward()
    opt.step()
    show("rotmnist GSA-Net p4 after a training step", gsa.check_equivariance(net, "p4", (2, 1, size, size)))


if __name__ == "__main__":
    main()
