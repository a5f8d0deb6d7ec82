"""``torch.hub`` entry points of gsa: ``torch.hub.load(repo, "gsanet", ...)``.

``repo`` is this repository: ``"<owner>/<name>"`` on GitHub, or a checkout with ``source="local"``.
The repository's own ``src/gsa`` is used (it is put first on ``sys.path``).
"""

import os
import sys

dependencies = ["torch", "numpy", "safetensors"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)


def gsanet(preset="rotmnist", *, weights=None, group="p4", patch_size=5, map_location="cpu", **overrides):
    """A GSA-Net: the paper's ``preset`` (``"rotmnist"``, ``"cifar10"``, ``"pcam"``) with ``group``,
    ``patch_size`` and any ``GSANetConfig`` field in ``overrides``, freshly initialised; or, with
    ``weights`` (a ``gsa train`` run directory, a weight file, or a ``save_pretrained`` folder), the
    trained network in eval mode, via ``gsa.models.load`` (then the other arguments must be left out).
    """
    import gsa.models

    if weights is None:
        return gsa.models.create(preset, group=group, patch_size=patch_size, **overrides)
    if overrides or (preset, group, patch_size) != ("rotmnist", "p4", 5):
        raise ValueError(
            "gsanet(weights=...) rebuilds the recorded network; leave out preset, group, patch_size and overrides"
        )
    return gsa.models.load(weights, map_location=map_location)
