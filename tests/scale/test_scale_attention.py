"""gsa.scale.attention: the layers against a dense loop oracle, and their equivariance to dilations.

Equivariance is checked in float64 in two ways (tolerances stated at each test):

* exact: an odd-sized image dilated by 2 copies its pixels to the even distances from the centre,
  so there the output at scale index ``k + 1`` equals the output at ``k`` on the original, to
  round-off (``1e-12``), wherever the keys stay in the frame;
* approximate: on a Gaussian blob and a ``rotmnist-mini`` digit (28×28, every sample interpolated),
  the output at ``k + 1`` against the original's output at ``k`` dilated by 2 with the same
  bilinear interpolation, away from the border.

(Named ``test_scale_attention.py``: test files share one namespace of basenames.)
"""

import math

import pytest
import torch

from gsa import scale
from gsa.data.rotmnist import mini_arrays

TOL_EXACT = 1e-12
TOL_BLOB = 1e-2  # measured <= 0.4 % (sigma = 3 px)
TOL_DIGIT = 5e-2  # measured <= 2.4 % (a pixelated digit is far from smooth)


def _oracle(layer, x: torch.Tensor) -> torch.Tensor:
    """Dense loops over outputs, heads and keys, written from the definition (paper Eqs. 20–21)."""
    lifting = x.dim() == 4
    f = (x[:, :, None] if lifting else x).permute(0, 2, 3, 4, 1)  # (B, S_in, X, Y, C)
    B, S_in, X, Y, C = f.shape
    n, d, r, p = layer.num_heads, layer.mid_channels, layer.patch_size // 2, layer.row_dim + layer.col_dim
    Q = layer.query(f).view(B, S_in, X, Y, n, d) / math.sqrt(C)
    K, V = layer.key(f).view(B, S_in, X, Y, n, d), layer.value(f).view(B, S_in, X, Y, n, d)
    M = layer.scale_window // 2
    S = layer.group.num_scales
    out = torch.zeros(B, S, X, Y, n, d, dtype=x.dtype)
    for t in range(S):
        s = layer.group.scales[t]
        for b in range(B):
            for i in range(X):
                for j in range(Y):
                    for h in range(n):
                        q = Q[b, 0 if lifting else t, i, j, h]
                        scores, values = [], []
                        for m in [0] if lifting else range(-M, M + 1):
                            tk = 0 if lifting else t + m
                            if not 0 <= tk < S_in:
                                continue  # truncated scale range
                            for dr in range(-r, r + 1):
                                for dc in range(-r, r + 1):
                                    ii, jj = i + s * dr, j + s * dc
                                    if not (0 <= ii < X and 0 <= jj < Y):
                                        continue  # outside the image
                                    delta = torch.tensor([[dr / max(r, 1)]], dtype=x.dtype)
                                    eps = torch.tensor([[dc / max(r, 1)]], dtype=x.dtype)
                                    rho = torch.cat([layer.row_encoding(delta), layer.col_encoding(eps)], -1)[0]
                                    a = q @ K[b, tk, ii, jj, h] + q[:p] @ rho
                                    if not lifting:
                                        a = a + q[p:] @ layer.scale_embedding.weight[m + M]
                                    scores.append(a)
                                    values.append(V[b, tk, ii, jj, h])
                        w = torch.softmax(torch.stack(scores), 0)
                        out[b, t, i, j, h] = (w[:, None] * torch.stack(values)).sum(0)
    return layer.out(out.reshape(B, S, X, Y, n * d)).permute(0, 4, 1, 2, 3)


@torch.no_grad()
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_lifting_layer_equals_the_oracle(backend):
    torch.manual_seed(0)
    layer = scale.ScaleLiftingSelfAttention("scale2x3", 2, 6, num_heads=2, patch_size=3).double()
    x = torch.randn(2, 2, 7, 6, dtype=torch.float64)  # 7x6: the dilation-4 sub-grids have 4 shapes
    y = layer(x, backend=backend)
    assert y.shape == (2, 6, 3, 7, 6)
    torch.testing.assert_close(y, _oracle(layer, x), rtol=0, atol=1e-12)


@torch.no_grad()
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_group_layer_equals_the_oracle(backend):
    torch.manual_seed(1)
    layer = scale.ScaleGroupSelfAttention("scale2x3", 3, 6, num_heads=2, patch_size=3, scale_window=3).double()
    x = torch.randn(1, 3, 3, 7, 6, dtype=torch.float64)
    y = layer(x, backend=backend)
    assert y.shape == (1, 6, 3, 7, 6)
    torch.testing.assert_close(y, _oracle(layer, x), rtol=0, atol=1e-12)


@torch.no_grad()
def test_scale_window_five_and_a_wide_window_equal_the_oracle():
    """Windows wider than a sub-grid (computed as global attention there) and M = 2."""
    torch.manual_seed(2)
    layer = scale.ScaleGroupSelfAttention("scale2x3", 2, 6, num_heads=1, patch_size=5, scale_window=5).double()
    x = torch.randn(1, 2, 3, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _oracle(layer, x), rtol=0, atol=1e-12)


def test_gradients_flow_to_every_parameter():
    layer = scale.ScaleGroupSelfAttention("scale2x2", 4, 6, num_heads=2, patch_size=3)
    layer(torch.randn(2, 4, 2, 8, 8)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patch_size=None), "odd int patch_size"),
        (dict(patch_size=4), "odd int patch_size"),
        (dict(scale_window=2), "scale_window must be an odd int"),
        (dict(num_heads=0), "num_heads must be a positive int"),
        (dict(mid_channels=2), "mid_channels must be an int >= 3"),
        (dict(attention_dropout=1.0), "attention_dropout must be in"),
    ],
)
def test_bad_arguments_raise_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scale.ScaleGroupSelfAttention("scale2x3", 4, 6, **{"patch_size": 3, **kwargs})


def test_bad_inputs_raise():
    layer = scale.ScaleGroupSelfAttention("scale2x3", 4, 6, patch_size=3)
    with pytest.raises(ValueError, match=r"expects input \(B, C, S=3, X, Y\) with C=4"):
        layer(torch.randn(1, 4, 2, 5, 5))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.zeros(1, 4, 3, 5, 5, dtype=torch.long))


# ------------------------------------------------------------------------------------ equivariance


def _blob(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    return torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))[None, None]


def _digit(label: int = 3) -> torch.Tensor:
    a = mini_arrays()
    i = int((a["test_y"] == label).nonzero()[0][0])
    return torch.from_numpy(a["test_x"][i]).to(torch.float64)[None, None] / 255.0


def _lattice(t: torch.Tensor, c: int, R: int, step: int) -> torch.Tensor:
    """``t[..., c + step·m, c + step·m']`` for ``|m|, |m'| <= R``."""
    sl = slice(c - step * R, c + step * R + 1, step)
    return t[..., sl, sl]


@torch.no_grad()
@pytest.mark.parametrize("image", ["blob", "digit"])
def test_lifting_layer_is_exactly_equivariant_where_the_dilation_copies_pixels(image):
    torch.manual_seed(0)
    g = scale.get("scale2x3")
    layer = scale.ScaleLiftingSelfAttention(g, 1, 8, num_heads=2, patch_size=3).double()
    x = _blob(29, 3.0) if image == "blob" else torch.nn.functional.pad(_digit(), (0, 1, 0, 1))  # odd: 29x29
    y, y2 = layer(x), layer(scale.act_on_image(g, 1, x))
    c = 14
    for k in range(2):
        R = (c - 2 * g.scales[k]) // 2  # keys of the dilated image c + 2m ± 2·s_k stay in the frame
        got, want = _lattice(y2[:, :, k + 1], c, R, 2), _lattice(y[:, :, k], c, R, 1)
        assert (got - want).abs().max() <= TOL_EXACT * want.abs().max()
        # not an identity: without the shift along the scale axis the responses differ
        assert (_lattice(y2[:, :, k], c, R, 2) - want).abs().max() > 1e-3 * want.abs().max()


@torch.no_grad()
@pytest.mark.parametrize("image, tol", [("blob", TOL_BLOB), ("digit", TOL_DIGIT)])
def test_lifting_layer_is_equivariant_up_to_interpolation(image, tol):
    torch.manual_seed(0)
    g = scale.get("scale2x3")
    layer = scale.ScaleLiftingSelfAttention(g, 1, 8, num_heads=2, patch_size=3).double()
    x = _blob(28, 3.0) if image == "blob" else _digit()
    y2, want = layer(scale.act_on_image(g, 1, x)), scale.act_on_lifted(g, 1, layer(x))
    c = (28 - 1) / 2
    dist = (torch.arange(28, dtype=torch.float64) - c).abs()
    for k in range(2):
        inside = dist + g.scales[k + 1] <= c  # keys of the dilated image's output in the frame
        mask = inside[:, None] & inside[None, :]
        err = (y2[:, :, k + 1] - want[:, :, k + 1])[..., mask].abs().max()
        assert err <= tol * want[:, :, k + 1][..., mask].abs().max()
        unshifted = (y2[:, :, k] - want[:, :, k + 1])[..., mask].abs().max()
        assert unshifted > 5 * err


@torch.no_grad()
def test_group_layer_is_equivariant_away_from_the_ends_of_the_scale_range():
    """Input: a lifted blob; output scale index 2 of the dilated input against index 1 (the only one
    whose key window −1 … +1 is inside the four scales on both sides)."""
    torch.manual_seed(0)
    g = scale.get("scale2x4")
    lift = scale.ScaleLiftingSelfAttention(g, 1, 6, num_heads=2, patch_size=3).double()
    layer = scale.ScaleGroupSelfAttention(g, 6, 8, num_heads=2, patch_size=3).double()
    for size in (29, 28):
        F = lift(_blob(size, 3.0))
        y2, want = layer(scale.act_on_lifted(g, 1, F)), scale.act_on_lifted(g, 1, layer(F))
        c = (size - 1) / 2
        if size % 2:  # exact on the even lattice: keys c + 2m ± 4 in the frame
            R = (int(c) - 4) // 2
            got, ref = _lattice(y2[:, :, 2], int(c), R, 2), _lattice(layer(F)[:, :, 1], int(c), R, 1)
            assert (got - ref).abs().max() <= TOL_EXACT * ref.abs().max()
        inside = (torch.arange(size, dtype=torch.float64) - c).abs() + 4 <= c
        mask = inside[:, None] & inside[None, :]
        err = (y2[:, :, 2] - want[:, :, 2])[..., mask].abs().max()
        assert err <= TOL_BLOB * want[:, :, 2][..., mask].abs().max()
        # at the ends the truncated scale window breaks it (index 1 meets the shifted-in zeros)
        assert (y2[:, :, 1] - want[:, :, 1])[..., mask].abs().max() > 10 * err
