"""asczoo.ops: the semantic k-NN, neighbour gathering and point layout, against brute force."""

from __future__ import annotations

import pytest
import torch

from asczoo.ops import from_points, gather_neighbours, pairwise_distances, point_positions, semantic_knn, to_points


def brute_force_distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> float:
    a, b = a.double(), b.double()
    if distance == "l2":
        return float(((a - b) ** 2).sum())
    return float(1.0 - (a @ b) / (a.norm() * b.norm()))


def brute_force_knn_distances(points, k, segment_size, distance):
    """For every point, the sorted k smallest distances to its admissible candidates (float64)."""
    bsz, count, _ = points.shape
    out = torch.empty(bsz, count, k, dtype=torch.float64)
    for b in range(bsz):
        for i in range(count):
            dists = []
            for j in range(count):
                same = (i // segment_size == j // segment_size) if segment_size else (i == j)
                if not same:
                    dists.append(brute_force_distance(points[b, i], points[b, j], distance))
            out[b, i] = torch.tensor(sorted(dists)[:k], dtype=torch.float64)
    return out


def selected_distances(points, index, distance):
    bsz, count, k = index.shape
    out = torch.empty(bsz, count, k, dtype=torch.float64)
    for b in range(bsz):
        for i in range(count):
            for s in range(k):
                out[b, i, s] = brute_force_distance(points[b, i], points[b, index[b, i, s]], distance)
    return out


def check_admissible(index, segment_size):
    bsz, count, k = index.shape
    centre = torch.arange(count).view(1, count, 1)
    if segment_size:
        assert not (index // segment_size == centre // segment_size).any(), "selected a point of its own segment"
    else:
        assert not (index == centre).any(), "a point selected itself"
    assert (index.sort(dim=-1).values.diff(dim=-1) > 0).all(), "a neighbour was selected twice"


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("segment_size", [None, 6])
def test_semantic_knn_matches_brute_force(distance, segment_size):
    torch.manual_seed(0)
    points = torch.randn(3, 24, 5)  # 3 samples, 4 segments of 6 points
    k = 5
    index = semantic_knn(points, k, segment_size=segment_size, distance=distance)
    assert index.shape == (3, 24, k) and index.dtype == torch.long
    check_admissible(index, segment_size)
    expected = brute_force_knn_distances(points, k, segment_size, distance)
    got = selected_distances(points, index, distance)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_semantic_knn_float64_selects_exactly_the_reference_order(distance):
    torch.manual_seed(1)
    points = torch.randn(2, 12, 4, dtype=torch.float64)
    index = semantic_knn(points, 3, segment_size=3, distance=distance)
    for b in range(2):
        for i in range(12):
            cands = [j for j in range(12) if j // 3 != i // 3]
            order = sorted(cands, key=lambda j: brute_force_distance(points[b, i], points[b, j], distance))
            assert index[b, i].tolist() == order[:3]


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_semantic_knn_bf16_under_autocast_computes_in_fp32(distance):
    torch.manual_seed(2)
    # A common offset makes |a|^2 + |b|^2 - 2ab cancel: in bf16 arithmetic the distances would be noise.
    points = (torch.randn(2, 16, 16) * 0.5 + 8.0).to(torch.bfloat16)
    assert pairwise_distances(points).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        index = semantic_knn(points, 3, segment_size=4, distance=distance)
        assert pairwise_distances(points, distance=distance).dtype == torch.float32
    check_admissible(index, 4)
    expected = brute_force_knn_distances(points, 3, 4, distance)
    got = selected_distances(points, index, distance)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_semantic_knn_indices_carry_no_gradient():
    points = torch.randn(1, 8, 3, requires_grad=True)
    index = semantic_knn(points, 2, segment_size=4)
    assert not index.requires_grad and index.grad_fn is None


def test_semantic_knn_too_many_neighbours_says_so():
    points = torch.randn(2, 12, 3)
    semantic_knn(points, 8, segment_size=4)  # 12 - 4 = 8 candidates: fine
    with pytest.raises(ValueError, match=r"k=9 neighbours but there are only 8 candidates"):
        semantic_knn(points, 9, segment_size=4)
    with pytest.raises(ValueError, match=r"k=12 neighbours but there are only 11 candidates"):
        semantic_knn(points, 12)
    with pytest.raises(ValueError, match="runs of segment_size"):
        semantic_knn(points, 2, segment_size=5)
    with pytest.raises(ValueError, match="distance"):
        semantic_knn(points, 2, distance="manhattan")


def test_gather_neighbours_matches_indexing_and_scatters_gradient():
    torch.manual_seed(3)
    values = torch.randn(2, 7, 3, requires_grad=True)
    index = torch.randint(0, 7, (2, 5, 4))
    out = gather_neighbours(values, index)
    assert out.shape == (2, 5, 4, 3)
    for b in range(2):
        torch.testing.assert_close(out[b], values[b][index[b]], rtol=0, atol=0)
    out.sum().backward()
    counts = torch.zeros(2, 7)
    for b in range(2):
        counts[b].index_add_(0, index[b].reshape(-1), torch.ones(20))
    torch.testing.assert_close(values.grad, counts.unsqueeze(-1).expand(2, 7, 3))
    with pytest.raises(ValueError, match="B=2"):
        gather_neighbours(torch.randn(3, 7, 3), index)


def test_point_layout_and_positions():
    x = torch.randn(2, 3, 4, 5, 6)  # (B, N, C, F, T)
    points = to_points(x)
    assert points.shape == (2, 3 * 5 * 6, 4)
    positions = point_positions((3, 5, 6))
    for n, f, t in [(0, 0, 0), (1, 2, 3), (2, 4, 5)]:
        i = (n * 5 + f) * 6 + t
        torch.testing.assert_close(points[:, i], x[:, n, :, f, t], rtol=0, atol=0)
        torch.testing.assert_close(positions[i], torch.tensor([n / 3, f / 5, t / 6]))
    assert torch.equal(from_points(points, (3, 5, 6)), x)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("segment_size", [None, 6])
def test_chunked_knn_selects_the_same_distances_as_one_block(distance, segment_size):
    torch.manual_seed(5)
    points = torch.randn(3, 48, 7)
    whole = semantic_knn(points, 4, segment_size=segment_size, distance=distance, chunk_size=48)
    for chunk in (1, 5, 16):
        chunked = semantic_knn(points, 4, segment_size=segment_size, distance=distance, chunk_size=chunk)
        check_admissible(chunked, segment_size)  # blocks that cut segments still exclude a point's own
        dist = pairwise_distances(points, distance=distance)
        torch.testing.assert_close(dist.gather(2, chunked), dist.gather(2, whole))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        semantic_knn(points, 4, chunk_size=0)
