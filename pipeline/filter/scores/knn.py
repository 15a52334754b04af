"""KNN: distance to the k-th nearest ID feature (Sun et al., ICML 2022).

*Out-of-Distribution Detection with Deep Nearest Neighbors*,
https://proceedings.mlr.press/v162/sun22d.html

    z = h / ||h||_2                                            (features L2-normalised)
    score(h) = -|| z - z_(k) ||_2                              (higher = more ID)

where z_(k) is the k-th nearest of the normalised ID features kept in the bank. pytorch-ood's
`KNN` returns the distance itself, i.e. exactly the negation.

Bank: at most `bank_size` ID features, drawn uniformly without replacement with `seed`
(None keeps all). k is clamped to the bank size (with a warning).

Search backends:
  * faiss (when installed, `backend="auto"`): an exact flat index for banks of up to
    `flat_max` features; above that an IVF index (`nlist` coarse cells, default
    4 sqrt(bank)), whose probe count is chosen at fit: the smallest `nprobe` for which
    the 99th percentile, over `probe_queries` bank points, of the relative error of the
    k-th distance against the exact search is at most `ivf_tolerance` (default 2%: a 2%
    error in a distance moves a box's rank among ID boxes far less than the ID spread does). IVF
    searches a subset of the bank, so its k-th distance is never below the exact one: an
    approximate score errs towards OOD. The measured errors are kept (`ivf_error`).
    Measured on 2 busy cores, D=64, 100k bank, 50 queries: exact flat ~50 ms, IVF with
    1024 cells ~2 ms at nprobe 16 (p99 error 2%), ~3 ms at nprobe 32 (p99 error 0.7%).
  * numpy brute force otherwise (exact), chunked so that at most ~4M distances are held.

`search_threads` sets faiss's OpenMP threads for the duration of a search; None (default)
leaves faiss's own count (all cores). Measured, 100k bank, 50 queries, 2 idle cores: 1.9 ms
with both, 3.5 ms with one. On cores kept busy by detector workers, spinning OpenMP threads
can slow a search several-fold instead: set 1 there.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from pipeline.detections import Detections
from pipeline.errors import GhostboxError
from pipeline.filter.registry import register
from pipeline.filter.scorer import Scorer, require_arrays
from pipeline.filter.scores.feature_math import l2_normalise

log = logging.getLogger(__name__)

# faiss's loader logs, at INFO, every instruction-set build it tries and does not find: noise in every stage's log
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
_MAX_DISTANCES = 1 << 22  # distances held at once by the numpy search (16 MiB of float32)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401  # optional: exact numpy search without it
    except ImportError:
        return False
    return True


def kth_distance_numpy(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """Exact Euclidean distance from each query to its k-th nearest bank row (brute force)."""
    queries = np.asarray(queries, np.float32)
    bank = np.asarray(bank, np.float32)
    bank_sq = np.einsum("ij,ij->i", bank, bank)
    q_rows = max(1, min(len(queries), _MAX_DISTANCES // max(len(bank), 1)))
    b_rows = max(k, _MAX_DISTANCES // q_rows)
    out = np.empty(len(queries), np.float64)
    for qs in range(0, len(queries), q_rows):
        q = queries[qs:qs + q_rows]
        q_sq = np.einsum("ij,ij->i", q, q)[:, None]
        best: np.ndarray | None = None
        for bs in range(0, len(bank), b_rows):
            d2 = q_sq + bank_sq[None, bs:bs + b_rows] - 2.0 * (q @ bank[bs:bs + b_rows].T)
            # keep only the k smallest per query from this chunk plus the running best
            cand = d2 if best is None else np.concatenate([best, d2], axis=1)
            if cand.shape[1] > k:
                cand = np.partition(cand, k - 1, axis=1)[:, :k]
            best = cand
        assert best is not None
        out[qs:qs + q_rows] = np.sqrt(np.maximum(best.max(axis=1), 0.0))
    return out


@register
class KNN(Scorer):
    """-(distance of the L2-normalised feature to its k-th nearest ID feature)."""

    name = "knn"

    def __init__(self, k: int = 50, bank_size: int | None = 100_000, seed: int = 0,
                 backend: str = "auto", index: str = "auto", flat_max: int = 4096,
                 nlist: int | None = None, nprobe: int | None = None,
                 ivf_tolerance: float = 0.02, probe_queries: int = 256, search_threads: int | None = None) -> None:
        if int(k) < 1:
            raise GhostboxError(f"knn: k must be >= 1, got {k}")
        if bank_size is not None and int(bank_size) < 1:
            raise GhostboxError(f"knn: bank_size must be >= 1 or None, got {bank_size}")
        if backend not in ("auto", "faiss", "numpy"):
            raise GhostboxError(f"knn: backend must be 'auto', 'faiss' or 'numpy', got {backend!r}")
        if index not in ("auto", "flat", "ivf"):
            raise GhostboxError(f"knn: index must be 'auto', 'flat' or 'ivf', got {index!r}")
        if backend == "numpy" and index == "ivf":
            raise GhostboxError("knn: index='ivf' needs backend 'faiss' (numpy search is exact brute force)")
        if search_threads is not None and int(search_threads) < 1:
            raise GhostboxError(f"knn: search_threads must be >= 1 or None, got {search_threads}")
        if backend == "faiss" and not faiss_available():
            raise GhostboxError("knn: backend='faiss' but faiss is not installed (pip install faiss-cpu)")
        super().__init__(k=int(k), bank_size=None if bank_size is None else int(bank_size), seed=int(seed),
                         backend=backend, index=index, flat_max=int(flat_max),
                         nlist=None if nlist is None else int(nlist), nprobe=None if nprobe is None else int(nprobe),
                         ivf_tolerance=float(ivf_tolerance), probe_queries=int(probe_queries),
                         search_threads=None if search_threads is None else int(search_threads))
        self.bank = np.zeros((0, 0), np.float32)
        self.k_used = int(k)
        self.ivf_centroids: np.ndarray | None = None
        self.nprobe_used: int | None = None
        self.ivf_error: dict[str, float] | None = None
        self._index: Any = None

    # -- fitting -----------------------------------------------------------------------

    def _fit(self, boxes: Detections) -> None:
        feats = boxes.box_features
        bank_size = self.params["bank_size"]
        if bank_size is not None and len(feats) > bank_size:
            rng = np.random.default_rng(self.params["seed"])
            feats = feats[np.sort(rng.choice(len(feats), bank_size, replace=False))]
        self.bank = l2_normalise(feats)
        self.k_used = min(self.params["k"], len(self.bank))
        if self.k_used < self.params["k"]:
            log.warning("knn: k=%d exceeds the %d ID features in the bank; using k=%d",
                        self.params["k"], len(self.bank), self.k_used)
        self.ivf_centroids, self.nprobe_used, self.ivf_error = None, None, None
        self._index = None
        if self._index_kind() == "ivf":
            self._train_ivf()  # leaves the filled index in self._index
        else:
            self._build_index()

    def _use_faiss(self) -> bool:
        backend = self.params["backend"]
        if backend == "numpy":
            return False
        if faiss_available():
            return True
        if backend == "faiss" or self.ivf_centroids is not None:
            log.warning("knn: faiss is not installed; searching exactly with numpy (slower)")
        return False

    def _index_kind(self) -> str:
        if not self._use_faiss():
            return "numpy"
        if self.params["index"] == "auto":
            return "ivf" if len(self.bank) > self.params["flat_max"] else "flat"
        return self.params["index"]

    def _train_ivf(self) -> None:
        import faiss

        n, dim = self.bank.shape
        nlist = self.params["nlist"] or int(round(4 * math.sqrt(n)))
        nlist = max(1, min(nlist, n // max(self.k_used, 1)))  # a cell should hold >= k features on average
        quantizer = faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist)
        index.cp.seed = self.params["seed"]
        # 32 points per cell is enough for a coarse partition and keeps training to seconds
        index.cp.min_points_per_centroid = 16
        rng = np.random.default_rng(self.params["seed"])
        train = self.bank[rng.choice(n, min(n, 32 * nlist), replace=False)]
        index.train(train)
        self.ivf_centroids = quantizer.reconstruct_n(0, nlist).astype(np.float32)
        index.add(self.bank)
        # Choose nprobe by measuring agreement with the exact k-th distance.
        probes = self.bank[rng.choice(n, min(n, self.params["probe_queries"]), replace=False)]
        flat = faiss.IndexFlatL2(dim)
        flat.add(self.bank)
        exact = np.sqrt(np.maximum(flat.search(probes, self.k_used)[0][:, -1], 0.0))
        candidates = [self.params["nprobe"]] if self.params["nprobe"] else \
            [p for p in (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256) if p < nlist] + [nlist]
        for nprobe in candidates:
            index.nprobe = nprobe
            approx = np.sqrt(np.maximum(index.search(probes, self.k_used)[0][:, -1], 0.0))
            rel = np.abs(approx - exact) / np.maximum(exact, 1e-6)
            err = {"p99": float(np.quantile(rel, 0.99)), "max": float(rel.max()), "mean": float(rel.mean())}
            if err["p99"] <= self.params["ivf_tolerance"]:
                break
        self.nprobe_used, self.ivf_error = int(nprobe), err
        self._index = index
        log.info("knn: IVF index with %d cells, nprobe %d (relative error of the k-th distance on %d probes: "
                 "p99 %.3g, max %.3g)", nlist, nprobe, len(probes), err["p99"], err["max"])

    def _build_index(self) -> None:
        kind = self._index_kind()
        if kind == "numpy":
            self._index = None
            return
        import faiss

        dim = self.bank.shape[1]
        index: faiss.Index
        if kind == "flat" or self.ivf_centroids is None:
            index = faiss.IndexFlatL2(dim)
        else:
            # Rebuild from the stored cell centres: no retraining, identical cells.
            quantizer = faiss.IndexFlatL2(dim)
            quantizer.add(self.ivf_centroids)
            ivf = faiss.IndexIVFFlat(quantizer, dim, len(self.ivf_centroids))
            ivf.is_trained = True
            ivf.nprobe = int(self.nprobe_used or 1)
            index = ivf
        index.add(self.bank)
        self._index = index

    # -- scoring -----------------------------------------------------------------------

    def kth_distance(self, features: np.ndarray) -> np.ndarray:
        """Distance of each L2-normalised feature to its k-th nearest bank feature (float64)."""
        queries = l2_normalise(features)
        if self._index is None:
            return kth_distance_numpy(queries, self.bank, self.k_used)
        d2, ids = self._faiss_search(queries)
        dist = np.sqrt(np.maximum(d2[:, -1].astype(np.float64), 0.0))
        short = ids[:, -1] < 0  # IVF probed cells held fewer than k features: search exactly
        if short.any():
            dist[short] = kth_distance_numpy(queries[short], self.bank, self.k_used)
        return dist

    def _faiss_search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        threads = self.params["search_threads"]
        if threads is None:
            return self._index.search(queries, self.k_used)
        import faiss

        # faiss's OpenMP thread count is process-wide: set it for this call only.
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(threads)
        try:
            return self._index.search(queries, self.k_used)
        finally:
            faiss.omp_set_num_threads(before)

    def _score(self, boxes: Detections) -> np.ndarray:
        return -self.kth_distance(boxes.box_features)

    # -- state -------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"bank": self.bank}
        if self.ivf_centroids is not None:
            arrays["ivf_centroids"] = self.ivf_centroids
        return arrays, {"k_used": self.k_used, "nprobe_used": self.nprobe_used,
                        "ivf_error": self.ivf_error}

    def _load_state(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]) -> None:
        (bank,) = require_arrays(arrays, self.name, "bank")
        self.bank = np.ascontiguousarray(bank, np.float32)
        self.k_used = int(fitted["k_used"])
        self.ivf_centroids = None if "ivf_centroids" not in arrays else \
            np.ascontiguousarray(arrays["ivf_centroids"], np.float32)
        self.nprobe_used = fitted.get("nprobe_used")
        self.ivf_error = fitted.get("ivf_error")
        if self.bank.ndim != 2 or self.bank.shape[1] != self.feature_dim or not 1 <= self.k_used <= len(self.bank):
            raise GhostboxError(
                f"knn: stored bank of shape {self.bank.shape} does not fit D={self.feature_dim}, k={self.k_used}")
        self._build_index()
