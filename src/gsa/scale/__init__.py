"""Self-attention on the dilation–translation group (paper App. E): scale groups, layers, a network.

* :mod:`gsa.scale.group`: :class:`ScaleGroup` (dyadic scales ``1, 2, 4, …`` by default), looked up
  by name with :func:`get` (``"scale2x3"``), and its actions on images and lifted maps;
* :mod:`gsa.scale.attention`: :class:`ScaleLiftingSelfAttention` ``(B, C, X, Y) → (B, C', S, X, Y)``
  and :class:`ScaleGroupSelfAttention` ``(B, C, S, X, Y) → (B, C', S, X, Y)``;
* the network built from them is :class:`gsa.models.ScaleGSANet` (scale-invariant logits;
  ``gsa.models.create("scalemnist")``).

See ``docs/scale.md`` for the approximation (interpolation, truncated scale range, border).
"""

from .attention import ScaleGroupSelfAttention, ScaleLiftingSelfAttention, dilated_attention
from .group import ScaleGroup, act_on_image, act_on_lifted, get, is_scale_group, names, rescale_image

__all__ = [
    "ScaleGroup",
    "get",
    "names",
    "is_scale_group",
    "rescale_image",
    "act_on_image",
    "act_on_lifted",
    "ScaleLiftingSelfAttention",
    "ScaleGroupSelfAttention",
    "dilated_attention",
]
