"""Every layer commutes with the group action: exact elements, every group, local and global."""

import pytest
import torch

import gsa
from gsa import groups
from gsa.equivariance import check_equivariance, exact_elements
from gsa.nn import GroupSelfAttention, LiftingSelfAttention
from gsa.nn.positional import ENCODINGS

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
CASES = [(g, ps) for g in groups.names() for ps in (5, None)]


def _ids(case):
    g, ps = case
    return f"{g}-{'global' if ps is None else f'local{ps}'}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_lifting_layer_is_equivariant(case, dtype):
    g, ps = case
    layer = LiftingSelfAttention(g, 3, 8, num_heads=2, patch_size=ps)
    errs = check_equivariance(layer, g, (2, 3, 9, 7), dtype=dtype)
    assert len(errs) == len(exact_elements(g))
    assert max(errs.values()) <= TOL[dtype], errs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_group_layer_is_equivariant(case, dtype):
    """On a random lifted input (not the output of a lifting layer): the original fails this."""
    g, ps = case
    G = groups.get(g)
    layer = GroupSelfAttention(g, 6, 8, num_heads=2, patch_size=ps)
    errs = check_equivariance(layer, g, (2, 6, G.order, 7, 9), dtype=dtype)
    assert max(errs.values()) <= TOL[dtype], errs


ANY_N = [f"p{n}{m}" for n in (1, 2, 3, 4, 5, 6, 8) for m in ("", "m")]


@pytest.mark.parametrize("g", ANY_N)
def test_layers_are_exactly_equivariant_for_any_order(g):
    """p{n} / p{n}m at their exact elements (quarter turns in H, mirrors), float64, local and global."""
    G = groups.get(g)
    n = G.rotations
    turns = 4 if n % 4 == 0 else 2 if n % 2 == 0 else 1  # the multiples of 90° among 360°·s/n
    assert len(exact_elements(G)) == turns * (2 if G.mirror else 1)
    for ps in (3, None):
        lift = LiftingSelfAttention(g, 2, 6, num_heads=2, patch_size=ps)
        errs = check_equivariance(lift, g, (1, 2, 5, 6))
        assert set(errs) == set(exact_elements(G)) and max(errs.values()) <= 1e-12, errs
        layer = GroupSelfAttention(g, 3, 6, num_heads=1, patch_size=ps)
        errs = check_equivariance(layer, g, (1, 3, G.order, 6, 5))
        assert max(errs.values()) <= 1e-12, errs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("positional", ENCODINGS.names())
@pytest.mark.parametrize("g", ["p4", "p4m"])
def test_every_positional_encoding_is_exactly_equivariant(g, positional, dtype):
    """Each variant of :data:`gsa.nn.positional.ENCODINGS`: lifting and group layers, local and global,
    at the exact elements (quarter turns, mirrors): round-off in float64."""
    G = groups.get(g)
    for ps in (3, None):
        lift = LiftingSelfAttention(g, 2, 6, num_heads=2, patch_size=ps, positional=positional)
        errs = check_equivariance(lift, g, (1, 2, 5, 6), dtype=dtype)
        assert set(errs) == set(exact_elements(G)) and max(errs.values()) <= TOL[dtype], errs
        layer = GroupSelfAttention(g, 3, 9, num_heads=2, patch_size=ps, positional=positional)
        errs = check_equivariance(layer, g, (1, 3, G.order, 6, 5), dtype=dtype)
        assert max(errs.values()) <= TOL[dtype], errs


@pytest.mark.parametrize("positional", ["rowcol", "gevit"])  # the two group-embedding indices
@pytest.mark.parametrize("g", ["p4", "p4m"])
def test_group_embedding_matters_for_equivariance(g, positional):
    """Regression guard: a non-trivial group embedding is in play and equivariance still holds."""
    G = groups.get(g)
    layer = GroupSelfAttention(g, 4, 6, num_heads=1, patch_size=3, positional=positional).double()
    with torch.no_grad():
        layer.group_embedding.weight.mul_(10)
    x = torch.randn(1, 4, G.order, 5, 5, dtype=torch.float64)
    base = layer(x)
    errs = check_equivariance(layer, g, x=x)
    assert max(errs.values()) < 1e-12
    with torch.no_grad():
        layer.group_embedding.weight.zero_()
    assert (layer(x) - base).abs().max() > 1e-3  # the embedding changes the output


@pytest.mark.parametrize("g", ["p8", "p16", "p8m", "p3", "p5m", "p6m"])
def test_acted_offsets_are_steerable(g):
    """(g·h)⁻¹(g·δ) = h⁻¹δ for every element, also 45°, 22.5°, 120°, 72° ones (no interpolation)."""
    from gsa.nn.positional import acted_offsets

    G = groups.get(g)
    off = torch.stack(torch.meshgrid(torch.arange(-2, 3), torch.arange(-2, 3), indexing="ij"), -1).reshape(-1, 2)
    base = acted_offsets(G, off, 2.0)  # (H, R, 2)
    for e in range(G.order):
        moved = G.act_on_vectors(e, off.double())
        for h in range(G.order):
            eh = G.compose(e, h)
            got = G.act_on_vectors(G.inverse(eh), moved) / 2.0
            torch.testing.assert_close(got, base[h], rtol=0, atol=1e-14)


def _smooth_image(size: int, channels: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    img = torch.zeros(channels, size, size, dtype=torch.float64)
    for c in range(channels):
        for _ in range(3):
            cx, cy = (torch.rand(2, generator=gen, dtype=torch.float64) - 0.5) * size * 0.4
            img[c] += torch.exp(-((r[:, None] - cx) ** 2 + (r[None, :] - cy) ** 2) / (2 * 4.0**2))
    return img.unsqueeze(0)


@pytest.mark.parametrize("g,angle_steps", [("p8", 1), ("p16", 2), ("p16", 1)])
def test_lifting_layer_is_approximately_equivariant_to_fine_rotations(g, angle_steps):
    """45° / 22.5°: rotate a smooth image by interpolation; compare inside the central disk.

    Stated tolerance: relative error ≤ 0.05 (bilinear resampling of a σ=4 px image, 5×5 attention),
    while a shift of the group axis by a wrong amount gives errors of order 1.
    """
    G = groups.get(g)
    torch.manual_seed(1)  # a fixed layer: the margin of the "wrong shift" check depends on the weights
    layer = LiftingSelfAttention(g, 2, 8, num_heads=2, patch_size=5).double().eval()
    with torch.no_grad():  # make the output depend strongly on the group element
        layer.row_encoding.fc2.weight.mul_(4)
        layer.col_encoding.fc2.weight.mul_(4)
    x = _smooth_image(41, 2)
    angle = 360.0 * angle_steps / G.rotations
    with torch.no_grad():
        y = layer(x)
        lhs = layer(groups.rotate_image(x, angle))
        rhs = groups.rotate_image(y.index_select(2, G.cayley[G.inverse(angle_steps)]), angle)
        wrong = groups.rotate_image(y.index_select(2, G.cayley[angle_steps]), angle)  # shifted the wrong way
    r = torch.arange(41, dtype=torch.float64) - 20
    disk = (r[:, None] ** 2 + r[None, :] ** 2) <= 10**2
    scale = rhs[..., disk].abs().max()
    err = (lhs - rhs)[..., disk].abs().max() / scale
    err_wrong = (lhs - wrong)[..., disk].abs().max() / scale
    assert err < FINE_TOL, err
    assert err_wrong > 4 * err


#: Stated tolerance for elements that are not exact on the grid (see docs/concepts.md): relative error
#: inside the central disk, smooth input (σ = 4 px blobs), bilinear rotation, 5×5 attention.
#: Measured at most 0.03 for p3, p5, p6, p6m, p8, p12, p16 (every non-exact element).
FINE_TOL = 0.05


@pytest.mark.parametrize("g", ["p3", "p5", "p6", "p6m"])
def test_lifting_layer_is_approximately_equivariant_at_every_non_exact_element(g):
    """Every element that is not a multiple of 90° (also mirrored ones), at the stated tolerance.

    Forgetting to permute the group axis gives errors ≥ 4× larger (measured 0.14–0.26).
    """
    G = groups.get(g)
    torch.manual_seed(1)
    layer = LiftingSelfAttention(g, 2, 8, num_heads=2, patch_size=5).double().eval()
    with torch.no_grad():
        layer.row_encoding.fc2.weight.mul_(4)
        layer.col_encoding.fc2.weight.mul_(4)
    x = _smooth_image(41, 2)
    r = torch.arange(41, dtype=torch.float64) - 20
    disk = (r[:, None] ** 2 + r[None, :] ** 2) <= 10**2
    inexact = [e for e in range(G.order) if e not in exact_elements(G)]
    assert inexact
    with torch.no_grad():
        y = layer(x)
        for e in inexact:
            lhs = layer(groups.act_on_image(G, e, x))
            rhs = groups.act_on_lifted(G, e, y)
            unpermuted = groups.act_on_image(G, e, y)  # spatial action only
            scale = rhs[..., disk].abs().max()
            err = (lhs - rhs)[..., disk].abs().max() / scale
            assert err < FINE_TOL, (e, err)
            assert (lhs - unpermuted)[..., disk].abs().max() / scale > 4 * err


def test_public_checker_on_a_model_and_logits():
    net = gsa.models.create("rotmnist", group="p4", num_heads=1, head_init="whitening")
    errs = gsa.check_equivariance(net, "p4", (1, 1, 24, 24))
    assert set(errs) == {0, 1, 2, 3}
    assert max(errs.values()) < 1e-12


@pytest.mark.parametrize("positional", ENCODINGS.names())
@pytest.mark.parametrize("g", ["p4", pytest.param("p4m", marks=pytest.mark.slow)])
def test_whole_model_logits_are_invariant_with_every_positional_encoding(g, positional):
    net = gsa.models.create(
        "rotmnist", group=g, num_heads=1, lifting_heads=1, channels=6, head_init="whitening", positional=positional
    )
    errs = gsa.check_equivariance(net, g, (1, 1, 24, 24))
    assert set(errs) == set(exact_elements(g)) and max(errs.values()) < 1e-12, errs


@pytest.mark.parametrize("positional", ENCODINGS.names())
@pytest.mark.parametrize("g", ["p8", "p6m"])
def test_every_positional_encoding_is_approximately_equivariant_at_non_exact_elements(g, positional):
    """The stated tolerance (:data:`FINE_TOL`) holds for each variant at every non-exact element of p8
    (45°) and p6m (60°, mirrored): measured at most 0.03. Permuting the group axis matters (> 2×)."""
    G = groups.get(g)
    torch.manual_seed(1)
    layer = LiftingSelfAttention(g, 2, 8, num_heads=2, patch_size=5, positional=positional).double().eval()
    encode = layer.positional.forward
    layer.positional.forward = lambda t: 4 * encode(t)  # make the output depend strongly on the element
    x = _smooth_image(41, 2)
    r = torch.arange(41, dtype=torch.float64) - 20
    disk = (r[:, None] ** 2 + r[None, :] ** 2) <= 10**2
    with torch.no_grad():
        y = layer(x)
        for e in [e for e in range(G.order) if e not in exact_elements(G)]:
            lhs = layer(groups.act_on_image(G, e, x))
            rhs = groups.act_on_lifted(G, e, y)
            scale = rhs[..., disk].abs().max()
            err = (lhs - rhs)[..., disk].abs().max() / scale
            assert err < FINE_TOL, (e, err)
            assert (lhs - groups.act_on_image(G, e, y))[..., disk].abs().max() / scale > 2 * err
