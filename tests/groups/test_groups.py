import pytest
import torch

from gsa import groups
from gsa.groups import act_on_image, act_on_lifted

ALL = groups.names()


def test_names_and_aliases():
    assert ALL == ["z2", "p4", "p8", "p12", "p16", "mz2", "p4m", "p8m"]
    for paper, ours in [
        ("Z2", "z2"),
        ("R4", "p4"),
        ("r8", "p8"),
        ("R12", "p12"),
        ("R16", "p16"),
        ("Z2M", "mz2"),
        ("R4M", "p4m"),
        ("r8m", "p8m"),
        ("P4", "p4"),
    ]:
        assert groups.get(paper) is groups.get(ours)
    assert [groups.get(n).order for n in ALL] == [1, 4, 8, 12, 16, 2, 8, 16]


def test_any_order_by_pattern_and_escnn_names():
    for spelling, name, order in [
        ("p6", "p6", 6),
        ("C6", "p6", 6),
        ("P6M", "p6m", 12),
        ("D6", "p6m", 12),
        ("r6", "p6", 6),
        ("R6M", "p6m", 12),
        ("se2(6)", "p6", 6),
        ("e2(6)", "p6m", 12),
        ("p3", "p3", 3),
        ("d5", "p5m", 10),
        ("p2", "p2", 2),
        ("p1", "z2", 1),
        ("C1", "z2", 1),
        ("p1m", "mz2", 2),
        ("D1", "mz2", 2),
        ("z2m", "mz2", 2),
    ]:
        g = groups.get(spelling)
        assert (g.name, g.order) == (name, order), spelling
        assert g is groups.get(name)  # one object per group, whatever the spelling
    assert groups.get("C4") is groups.get("p4") and groups.get("D8") is groups.get("p8m")
    assert groups.get(" p-6_M ") is groups.get("p6m")  # the registry's alias rule


@pytest.mark.parametrize("bad", ["p0", "q5", "p04", "c4m", "d0", "p6mm", "p1.5"])
def test_unknown_group_is_one_line_listing_names_and_patterns(bad):
    with pytest.raises(ValueError) as e:
        groups.get(bad)
    assert str(e.value) == (
        f"unknown group {bad!r}; expected one of: z2, p4, p8, p12, p16, mz2, p4m, p8m, "
        "p{n}, p{n}m, C{n}, D{n} (any n >= 1)"
    )
    with pytest.raises(TypeError):
        groups.get(4)
    with pytest.raises(ValueError, match="rotations >= 1"):
        groups.Group("none", 0)


ORDERS = [f"p{n}{m}" for n in range(1, 13) for m in ("", "m")]


@pytest.mark.parametrize("name", ORDERS)
def test_group_axioms_for_every_order(name):
    """Closure, identity, inverses and associativity of the Cayley table, n = 1 … 12."""
    G = groups.get(name)
    c, inv, n = G.cayley, G.inverses, G.order
    e = torch.arange(n)
    assert c.shape == (n, n) and c.min() >= 0 and c.max() < n  # closure
    assert torch.equal(c[0], e) and torch.equal(c[:, 0], e)  # identity
    assert torch.equal(c[e, inv], torch.zeros(n, dtype=torch.long)) and torch.equal(c[inv, e], c[e, inv])
    assert torch.equal(c[c], c[:, c])  # (ab)d == a(bd) for all a, b, d
    assert all(G.compose(a, b) == c[a, b] for a in range(n) for b in range(n))
    rotations = [a for a in range(n) if not G.is_mirrored(a)]
    assert all(c[a, b] == c[b, a] for a in rotations for b in rotations)  # the rotations commute


@pytest.mark.parametrize("name", ["p2", "p3", "p5m", "p6", "p6m", "p10m", "p12"])
def test_cayley_table_matches_the_action_on_vectors(name):
    G = groups.get(name)
    v = torch.randn(6, 2, dtype=torch.float64)
    for a in range(G.order):
        for b in range(G.order):
            torch.testing.assert_close(
                G.act_on_vectors(a, G.act_on_vectors(b, v)),
                G.act_on_vectors(int(G.cayley[a, b]), v),
                rtol=0,
                atol=1e-13,
            )


@pytest.mark.parametrize("name,steps", [("p2", 1), ("p6", 3), ("p10m", 5), ("p6", 0), ("p12", 9)])
def test_quarter_turns_are_exact_matrices_for_any_order(name, steps):
    """180° in p2 / p6 / p10 (n not a multiple of 4) is an exact matrix, like 90° in p4."""
    G = groups.get(name)
    k = round(G.angle(steps) / 90)
    exact = torch.linalg.matrix_power(torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64), k)
    assert torch.equal(G.matrix(steps), exact)


@pytest.mark.parametrize("name", ALL)
def test_action_on_vectors_is_a_homomorphism(name):
    G = groups.get(name)
    v = torch.randn(10, 2, dtype=torch.float64)
    for a in range(G.order):
        for b in range(G.order):
            ab = G.act_on_vectors(G.compose(a, b), v)
            torch.testing.assert_close(ab, G.act_on_vectors(a, G.act_on_vectors(b, v)), rtol=0, atol=1e-13)
        m = G.matrix(a)
        assert abs(abs(torch.det(m)) - 1) < 1e-12
        assert G.is_mirrored(a) == bool(torch.det(m) < 0)


def test_rotation_direction_matches_rot90():
    G = groups.get("p4")
    assert torch.equal(G.matrix(1), torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64))
    # a bright pixel one column right of the centre moves one row up under +90°
    x = torch.zeros(5, 5)
    x[2, 3] = 1
    y = act_on_image(G, 1, x)
    assert y[1, 2] == 1 and torch.equal(y, torch.rot90(x, 1, (-2, -1)))
    # the same displacement acted on as a vector
    assert G.act_on_vectors(1, torch.tensor([0.0, 1.0])).tolist() == [-1.0, 0.0]


@pytest.mark.parametrize("name", ["p4", "mz2", "p4m", "p8m", "p2", "p3m", "p5m", "p6", "p6m"])
def test_image_and_lifted_actions_are_homomorphisms(name):
    G = groups.get(name)
    exact = [e for e in range(G.order) if (4 * G.split(e)[0]) % G.rotations == 0]
    x = torch.randn(2, 3, 7, 5)
    f = torch.randn(2, 3, G.order, 7, 5)
    for a in exact:
        for b in exact:
            ab = G.compose(a, b)
            assert torch.equal(act_on_image(G, ab, x), act_on_image(G, a, act_on_image(G, b, x)))
            assert torch.equal(act_on_lifted(G, ab, f), act_on_lifted(G, a, act_on_lifted(G, b, f)))


def test_lifted_action_permutes_group_axis():
    G = groups.get("p4")
    f = torch.zeros(1, 1, 4, 3, 3)
    f[0, 0, 0, 1, 1] = 1  # identity channel, centre pixel
    g = act_on_lifted(G, 1, f)
    assert g[0, 0, 1, 1, 1] == 1 and g.sum() == 1  # r·e = r
    G = groups.get("p4m")
    f = torch.zeros(1, 1, 8, 3, 3)
    f[0, 0, 1, 1, 1] = 1  # r
    g = act_on_lifted(G, 4, f)  # m·r = r^-1 m = element 3 + 4
    assert g[0, 0, 7, 1, 1] == 1


def test_lifted_action_rejects_wrong_group_axis():
    with pytest.raises(ValueError, match=r"\|H\|=4"):
        act_on_lifted("p4", 1, torch.randn(1, 2, 8, 3, 3))


def test_rotate_image_exact_for_quarter_turns_and_close_otherwise():
    x = torch.randn(2, 1, 9, 9)
    assert torch.equal(groups.rotate_image(x, 90), torch.rot90(x, 1, (-2, -1)))
    assert torch.equal(groups.rotate_image(x, -180), torch.rot90(x, 2, (-2, -1)))
    # 45° of a smooth blob ≈ the analytically rotated blob (direction: counter-clockwise)
    r = torch.arange(33, dtype=torch.float64) - 16

    def blob(c):
        return torch.exp(-((r[:, None] - c[0]) ** 2 + (r[None, :] - c[1]) ** 2) / 30.0)

    centre = torch.tensor([3.0, -2.0], dtype=torch.float64)
    moved = groups.get("p8").act_on_vectors(1, centre)
    err = (groups.rotate_image(blob(centre), 45) - blob(moved)).abs().max()
    assert err < 0.03  # bilinear resampling; a wrong direction gives ~1


def test_element_angles_are_in_degrees():
    g = groups.get("p4m")
    assert [g.angle(e) for e in range(g.order)] == [0.0, 90.0, 180.0, 270.0] * 2
    assert g.elements[5] == (90.0, True)
