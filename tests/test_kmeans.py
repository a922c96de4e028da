"""k-means features (linclf.kmeans) against slow, obvious loop versions, on tiny images."""
import numpy as np
import pytest

from linclf.config import pool_bounds
from linclf.features import encoder, fused, kmeans


def tiny_images(num, seed=0):
    """num smooth-ish random uint8 images (num, 32, 32, 3)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(num, 8, 8, 3))
    images = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2) + rng.integers(-30, 31, size=(num, 32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def state():
    return kmeans.fit(tiny_images(30), k=12, patch_size=5, num_patches=3000, iterations=8, seed=3)


def naive_normalize(p, eps):
    p = np.asarray(p, dtype=np.float64)
    return (p - p.mean()) / np.sqrt(p.var(ddof=1) + eps)


def naive_activations(image, state, patch_size, stride, eps, encoding="triangle", alpha=0.25):
    """Every patch of one image, one at a time: normalize, whiten, then the triangle of the
    distances to the centroids, or (soft) both polarities of the responses to the normalized
    centroids. Yields (row position i, column position j, activations (K,) or (2K,))."""
    centroids = state["centroids"].astype(np.float64)
    positions = list(range(0, 32 - patch_size + 1, stride))
    for i, r in enumerate(positions):
        for j, c in enumerate(positions):
            patch = naive_normalize(image[r:r + patch_size, c:c + patch_size, :].reshape(-1), eps)
            w = (patch - state["patch_mean"]) @ state["whiten"].astype(np.float64)
            if encoding == "soft":
                s = np.array([w @ centroid / np.sqrt(centroid @ centroid) for centroid in centroids])
                yield i, j, np.concatenate([np.maximum(0.0, s - alpha), np.maximum(0.0, -s - alpha)])
                continue
            z = np.sqrt(((w[None, :] - centroids) ** 2).sum(axis=1))
            yield i, j, np.maximum(0.0, z.mean() - z)


def naive_encode(images, state, patch_size, stride, eps):
    """naive_activations summed over the quadrants (split at ceil(P / 2))."""
    K = len(state["centroids"])
    half = ((32 - patch_size) // stride + 2) // 2
    out = np.zeros((len(images), 4, K))
    for n, image in enumerate(images):
        for i, j, f in naive_activations(image, state, patch_size, stride, eps):
            out[n, 2 * (i >= half) + (j >= half)] += f
    return out.reshape(len(images), 4 * K)


def test_sample_patches_are_the_drawn_windows():
    images = tiny_images(7)
    patches = kmeans.sample_patches(images, 50, 6, np.random.default_rng(5))
    rng = np.random.default_rng(5)  # the documented draws: image, then row, then column
    index, rows, cols = rng.integers(0, 7, 50), rng.integers(0, 27, 50), rng.integers(0, 27, 50)
    assert patches.shape == (50, 108) and patches.dtype == np.float32
    for p, i, r, c in zip(patches, index, rows, cols):
        np.testing.assert_array_equal(p, images[i, r:r + 6, c:c + 6, :].reshape(-1))


def test_normalize_patches():
    P = np.random.default_rng(0).uniform(0, 255, size=(20, 12)).astype(np.float32)
    expected = np.array([naive_normalize(p, 10.0) for p in P])
    out = kmeans.normalize_patches(P, 10.0)
    assert out is P
    np.testing.assert_allclose(P, expected, rtol=1e-5, atol=1e-5)


def test_whitening_gives_identity_covariance():
    rng = np.random.default_rng(1)
    mixing = rng.standard_normal((8, 8)) * np.array([5, 3, 2, 1, 1, 0.5, 0.2, 0.1])
    P = (rng.standard_normal((20000, 8)) @ mixing + 7).astype(np.float32)
    mean, matrix = kmeans.fit_whitening(P, eps=1e-9)
    W = kmeans.whiten(P, mean, matrix)
    np.testing.assert_allclose(np.cov(W, rowvar=False), np.eye(8), atol=2e-3)
    np.testing.assert_allclose(W.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-5)  # ZCA: symmetric


def test_whitening_eps_shrinks_small_directions():
    rng = np.random.default_rng(2)
    P = (rng.standard_normal((20000, 6)) @ rng.standard_normal((6, 6))).astype(np.float32)
    mean, matrix = kmeans.fit_whitening(P, eps=0.1)
    values, vectors = np.linalg.eigh(np.cov(P.astype(np.float64), rowvar=False))
    expected = (vectors * (values / (values + 0.1))) @ vectors.T
    np.testing.assert_allclose(np.cov(kmeans.whiten(P, mean, matrix), rowvar=False), expected, atol=2e-3)


def clustered(seed=0, n=600, k=5, dim=4):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 4
    return (centres[rng.integers(0, k, n)] + rng.standard_normal((n, dim))).astype(np.float32)


@pytest.mark.parametrize("threads", [1, 2])
def test_kmeans_inertia_never_increases_and_matches_lloyd(threads):
    P = clustered()
    centroids, history = kmeans.kmeans(P, 8, iterations=30, seed=4, chunk=64, threads=threads)
    assert len(history) >= 2 and history[-1] < history[0]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(history, history[1:]))
    # converged: one more Lloyd step (in float64, by hand) changes nothing
    d = ((P[:, None, :].astype(np.float64) - centroids[None]) ** 2).sum(axis=2)
    labels = d.argmin(axis=1)
    for j in range(8):
        np.testing.assert_allclose(centroids[j], P[labels == j].mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(history[-1], d.min(axis=1).sum(), rtol=1e-4)


def test_kmeans_is_deterministic_for_a_seed():
    P = clustered(1)
    a, ha = kmeans.kmeans(P, 6, iterations=10, seed=7, chunk=100, threads=2)
    b, hb = kmeans.kmeans(P, 6, iterations=10, seed=7, chunk=100, threads=2)
    c, _ = kmeans.kmeans(P, 6, iterations=10, seed=8, chunk=100, threads=2)
    np.testing.assert_array_equal(a, b)
    assert ha == hb
    assert not np.array_equal(a, c)
    d, hd = kmeans.kmeans(P, 6, iterations=10, seed=7, chunk=37, threads=1)  # chunks don't matter
    np.testing.assert_allclose(d, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_kmeans_reseeds_empty_clusters(seed):
    """20 copies of one point and 3 others: the random start picks copies of the same point, whose
    duplicate centroids get no rows; re-seeding them at the farthest rows finds all 4 points."""
    points = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    P = np.concatenate([np.repeat(points[:1], 20, axis=0), points[1:]])
    centroids, history = kmeans.kmeans(P, 4, iterations=10, seed=seed, threads=1)
    assert np.isfinite(centroids).all()
    assert history[-1] == pytest.approx(0.0, abs=1e-6)
    found = {tuple(np.round(c).astype(int)) for c in centroids}
    assert found == {(0, 0), (10, 0), (0, 10), (10, 10)}
    assert all(b <= a * (1 + 1e-6) + 1e-6 for a, b in zip(history, history[1:]))


def test_fit_state_holds_arrays(state):
    assert set(state) == {"patch_mean", "whiten", "centroids", "inertia"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["centroids"].shape == (12, 75) and state["centroids"].dtype == np.float32
    assert state["whiten"].shape == (75, 75) and state["patch_mean"].shape == (75,)


@pytest.mark.parametrize("stride", [1, 3, 4])
def test_encode_matches_naive_loops(state, stride):
    images = tiny_images(3, seed=9)
    params = {"patch_size": 5, "stride": stride, "norm_eps": 10.0}
    features = encoder.encode(images, state, params, block=2, threads=2)
    assert features.shape == (3, encoder.feature_dim(params, 12)) and features.dtype == np.float32
    expected = naive_encode(images, state, 5, stride, 10.0)
    np.testing.assert_allclose(features, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def naive_pool_and_fold(images, state, patch_size, stride, eps, pool, mirror, encoding="triangle", alpha=0.25):
    """Every patch's activations (naive_activations) summed into pool x pool regions by bounds
    written out by hand, then (mirror) each region r, c and channel k summed with region r,
    pool-1-c and k's mirror partner (the same polarity), keeping one of each pair."""
    K = len(state["centroids"])
    C = 2 * K if encoding == "soft" else K
    P = (32 - patch_size) // stride + 1
    bounds = {(28, 2): [0, 14, 28], (28, 3): [0, 9, 19, 28], (14, 3): [0, 5, 9, 14], (10, 3): [0, 3, 7, 10],
              (28, 1): [0, 28], (14, 2): [0, 7, 14]}[(P, pool)]
    region = np.searchsorted(bounds, np.arange(P), side="right") - 1
    pooled = np.zeros((len(images), pool, pool, C))
    for n, image in enumerate(images):
        for i, j, f in naive_activations(image, state, patch_size, stride, eps, encoding, alpha):
            pooled[n, region[i], region[j]] += f
    if not mirror:
        return pooled.reshape(len(images), -1)
    partner = lambda k: K * (k // K) + (k % K + K // 2) % K  # noqa: E731
    out = []
    for n in range(len(images)):
        row = []
        for r in range(pool):
            for c in range(pool):
                for k in range(C):
                    twin = (pool - 1 - c, partner(k))
                    if (c, k) < twin:
                        row.append(pooled[n, r, c, k] + pooled[n, r, twin[0], twin[1]])
        out.append(row)
    return np.array(out)


@pytest.fixture(scope="module")
def mirror_state():
    return kmeans.fit(tiny_images(30), k=12, patch_size=5, num_patches=3000, iterations=8, seed=3, mirror=True)


@pytest.mark.parametrize("pool,stride,mirror", [(2, 1, False), (3, 1, False), (3, 2, False), (1, 1, False),
                                                (3, 1, True), (2, 2, True), (3, 3, True)])
def test_pooled_and_mirror_folded_encoding_matches_naive_loops(state, mirror_state, pool, stride, mirror):
    chosen = mirror_state if mirror else state
    images = tiny_images(2, seed=13)
    params = {"patch_size": 5, "stride": stride, "pool": pool, "mirror": mirror}
    features = encoder.encode(images, chosen, params, block=1, threads=2)
    assert features.shape == (2, encoder.feature_dim(params, 12))
    expected = naive_pool_and_fold(images, chosen, 5, stride, 10.0, pool, mirror)
    np.testing.assert_allclose(features, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


@pytest.mark.parametrize("pool,stride,mirror,alpha", [(2, 1, False, 0.25), (3, 2, False, 0.0), (1, 1, False, 0.5),
                                                      (3, 1, True, 0.25), (2, 2, True, 0.5), (3, 3, True, 0.1)])
def test_soft_encoding_matches_naive_loops(state, mirror_state, pool, stride, mirror, alpha):
    chosen = mirror_state if mirror else state
    images = tiny_images(2, seed=15)
    params = {"patch_size": 5, "stride": stride, "pool": pool, "mirror": mirror, "encoding": "soft", "alpha": alpha}
    features = encoder.encode(images, chosen, params, block=1, threads=2)
    assert features.shape == (2, encoder.feature_dim(params, 12)) == (2, pool * pool * 24 // (1 + mirror))
    expected = naive_pool_and_fold(images, chosen, 5, stride, 10.0, pool, mirror, "soft", alpha)
    if alpha:  # the threshold bites
        assert not np.allclose(features, encoder.encode(images, chosen, {**params, "alpha": 0.0}), rtol=0.05)
    np.testing.assert_allclose(features, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


@pytest.mark.parametrize("P,pool,K,alpha", [(27, 3, 16, 0.25), (14, 2, 7, 0.0), (5, 1, 3, 1.5)])
def test_the_fused_soft_passes_equal_the_numpy_passes(P, pool, K, alpha):
    rng = np.random.default_rng(P + K)
    s = rng.normal(size=(2 * P * P, K)).astype(np.float32)
    bounds = pool_bounds(P, pool)
    expected = fused.soft_pool_numpy(s, 2, P, bounds, np.float32(alpha), np.empty((2, pool, pool, 2 * K), np.float32))
    got = fused.soft_pool(s, 2, P, bounds, alpha, np.full((2, pool, pool, 2 * K), np.nan, np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_mirror_pairs_are_mirror_images_and_whitening_commutes_with_mirroring(mirror_state):
    order = kmeans.mirror_order(5)
    centroids = mirror_state["centroids"]
    np.testing.assert_array_equal(centroids[6:], centroids[:6][:, order])
    patches = np.random.default_rng(2).normal(size=(20, 75)).astype(np.float32)
    whitened = kmeans.whiten(patches, mirror_state["patch_mean"], mirror_state["whiten"])
    mirrored = kmeans.whiten(patches[:, order], mirror_state["patch_mean"], mirror_state["whiten"])
    np.testing.assert_allclose(mirrored, whitened[:, order], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("encoding", ["triangle", "soft"])
@pytest.mark.parametrize("stride", [1, 3])
def test_mirror_features_of_an_image_and_its_mirror_image_are_equal(mirror_state, stride, encoding):
    images = tiny_images(3, seed=14)
    params = {"patch_size": 5, "stride": stride, "pool": 3, "mirror": True, "encoding": encoding}
    plain = encoder.encode(images, mirror_state, params)
    np.testing.assert_allclose(encoder.encode(images, mirror_state, params, flip=True), plain,
                               rtol=1e-4, atol=1e-4 * np.abs(plain).max())


def test_mirror_pairs_need_an_even_k():
    with pytest.raises(ValueError, match="even"):
        kmeans.fit(tiny_images(5), k=7, patch_size=5, num_patches=500, iterations=2, seed=0, mirror=True)


def test_pool_bounds():
    assert pool_bounds(27, 2) == [0, 14, 27] and pool_bounds(27, 3) == [0, 9, 18, 27]
    assert pool_bounds(28, 3) == [0, 9, 19, 28] and pool_bounds(10, 3) == [0, 3, 7, 10]


def test_positions_and_halves():
    assert encoder.num_positions({"patch_size": 6, "stride": 1}) == 27
    assert encoder.num_positions({"patch_size": 6, "stride": 2}) == 14
    assert pool_bounds(27, 2)[1] == 14 and pool_bounds(14, 2)[1] == 7


def test_encode_in_pieces_into_out_equals_all_at_once(state, tmp_path):
    images = tiny_images(7, seed=11)
    params = {"patch_size": 5, "stride": 2}
    whole = encoder.encode(images, state, params, block=3, threads=1)
    out = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=(9, whole.shape[1]))
    seen = []
    piece = encoder.encode(images[:4], state, params, out=out, start=1, progress=seen.append, block=1, threads=2)
    encoder.encode(images[4:], state, params, out=out, start=5, block=2, threads=2)
    assert piece.shape == (4, whole.shape[1])
    assert sorted(seen) == seen and seen[-1] == 4 and len(seen) == 4
    np.testing.assert_array_equal(out[1:8], whole)


def test_encode_flip_is_encoding_mirrored_images(state):
    images = tiny_images(2, seed=12)
    params = {"patch_size": 5, "stride": 1}
    np.testing.assert_array_equal(encoder.encode(images, state, params, flip=True),
                                  encoder.encode(np.ascontiguousarray(images[:, :, ::-1]), state, params))


def test_encode_rejects_bad_out(state):
    images = tiny_images(2)
    with pytest.raises(ValueError):
        encoder.encode(images, state, {"patch_size": 5}, out=np.empty((1, 48), np.float32))
    with pytest.raises(ValueError):
        encoder.encode(images, state, {"patch_size": 6})  # centroids are 5 x 5 x 3


def test_centroid_images(state):
    pictures = kmeans.centroid_images(state, {"patch_size": 5})
    assert pictures.shape == (12, 5, 5, 3)
    assert pictures.min() >= 0 and pictures.max() <= 1
    np.testing.assert_allclose(pictures.reshape(12, -1).max(axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("P,pool,K", [(27, 2, 16), (27, 3, 7), (14, 3, 33), (5, 1, 3)])
def test_the_fused_passes_equal_the_numpy_passes(P, pool, K):
    """fused.triangle_pool and fused.triangle_pool_numpy on the same squared distances (some of them
    rounding negatives, as a product gives for a patch on a centroid)."""
    rng = np.random.default_rng(P + K)
    z = (rng.random((2 * P * P, K)) * 50 - 0.001).astype(np.float32)
    bounds = pool_bounds(P, pool)
    expected = fused.triangle_pool_numpy(z.copy(), 2, P, bounds, np.empty((2, pool, pool, K), np.float32))
    got = fused.triangle_pool(z, 2, P, bounds, np.full((2, pool, pool, K), np.nan, np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_encoding_on_two_threads_gives_the_same_features_every_time():
    """Blocks land on either thread's buffers: the features must not change from run to run (a sum
    whose order depends on where a buffer lies would change the last bit now and then)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 32, 32, 3), dtype=np.uint8)
    state = kmeans.fit(images, k=8, patch_size=6, num_patches=2000, iterations=3, seed=0)
    first = encoder.encode(images, state, {"stride": 4}, threads=2)
    for _ in range(40):
        np.testing.assert_array_equal(encoder.encode(images, state, {"stride": 4}, threads=2),
                                      first)


def test_no_iterations_give_a_dictionary_of_random_whitened_patches():
    images = tiny_images(20, seed=16)
    state = kmeans.fit(images, k=6, patch_size=5, num_patches=500, iterations=0, seed=4)
    patches = kmeans.normalize_patches(kmeans.sample_patches(images, 500, 5, np.random.default_rng(4)))
    whitened = kmeans.whiten(patches, state["patch_mean"], state["whiten"])
    chosen = np.sort(np.random.default_rng(4).choice(500, size=6, replace=False))
    np.testing.assert_allclose(state["centroids"], whitened[chosen], rtol=1e-5, atol=1e-5)
    assert state["inertia"].shape == (0,)
