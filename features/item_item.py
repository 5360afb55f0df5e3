"""Item-to-item models over the binary user x item matrix: EASE and co-occurrence cosine.

- ``ease`` (Steck, 2019): ``B = argmin ||X - XB||^2 + lambda ||B||^2`` with ``diag(B) = 0``,
  closed form ``P = (G + Lambda)^-1``, ``B = -P / diag(P)``, ``G = X'X``. Dense n_items^2 inverse,
  so it is used up to ``max_items`` items; above that the cosine model takes its place.
  ``dropout`` p > 0 makes it EDLAE (Steck, 2020, "Autoencoders that don't overfit towards the
  identity"): ``Lambda = lambda I + p / (1 - p) diag(G)``, a penalty that grows with popularity.
- ``cosine``: ``C_ij = co_ij / sqrt(co_ii co_jj)`` from the sparse co-occurrence counts.

Co-occurrence can also count sessions: ``G = X'X + w S'S`` with ``S`` the binary session x item
matrix (a user's interactions with gaps of at most a few seconds or minutes between them, see
``features.user_items.build_session_items``). Items taken in the same sitting are more closely
related than items a user took months apart; the users' rows still carry the long-term taste.

Both keep only each item's ``neighbours`` strongest weights (by absolute value), so the
stored matrix is sparse (n_items x n_items CSR, float32) and ``score(u, j) = sum_i x_ui B_ij``
is a sparse product with the user's history.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from features.rank_workers import usable_cores
from features.ties import tie_keys
from recsys.errors import ConfigError
from recsys.stage_timer import add_work

log = logging.getLogger(__name__)
KINDS = ("ease", "cosine")
_BLOCK_ENTRIES = 8_000_000  # sparse score entries per block of users in pair_scores
_COSINE_BLOCK_ENTRIES = 30_000_000  # partial co-occurrence products per block of item rows in the cosine fit
_COSINE_MAX_THREADS = 4  # blocks of the cosine fit in flight at once (each holds one block's counts)
COOCCURRENCE_NEIGHBOURS = 400  # weights per item of the co-occurrence baseline (training/evaluate.py)


@dataclass(frozen=True)
class ItemItem:
    """weights: CSR (n_items, n_items) float32, row i = how history item i votes for each item."""

    kind: str
    weights: sp.csr_matrix

    def user_scores(self, history: sp.csr_matrix) -> np.ndarray:
        """Dense float32 (rows, n_items) scores of the given binary history rows (rows x n_items)."""
        return self.user_scores_sparse(history).toarray()

    def user_scores_sparse(self, history: sp.csr_matrix) -> sp.csr_matrix:
        """CSR float32 (rows, n_items) scores of the given binary history rows: only the items some
        history item votes for are stored (every other item scores 0). Costs history entries x
        ``neighbours``, independent of the catalog size."""
        return (history @ self.weights).tocsr().astype(np.float32, copy=False)

    def pair_scores(self, history: sp.csr_matrix, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """float32 (n,) scores of (user, item) pairs; NaN where user_idx is -1.

        history: binary CSR (n_users, n_items); user_idx, item_idx: int arrays (n,). Users go
        through in blocks whose sparse products hold about ``_BLOCK_ENTRIES`` entries.
        """
        user_idx = np.asarray(user_idx, dtype=np.int64)
        item_idx = np.asarray(item_idx, dtype=np.int64)
        out = np.full(len(user_idx), np.nan, dtype=np.float32)
        rows = np.flatnonzero(user_idx >= 0)
        if rows.size == 0:
            return out
        users, inverse = np.unique(user_idx[rows], return_inverse=True)
        user_history = history[users]
        per_row = max(1.0, self.weights.nnz / max(1, self.weights.shape[0]))
        cost = np.cumsum(np.diff(user_history.indptr) * per_row)
        block_of_user = (cost // _BLOCK_ENTRIES).astype(np.int64)
        starts = np.flatnonzero(np.r_[True, block_of_user[1:] != block_of_user[:-1]])
        bounds = np.r_[starts, len(users)]
        order = np.argsort(inverse, kind="stable")
        pair_bounds = np.searchsorted(inverse[order], bounds)
        for b in range(len(bounds) - 1):
            pick = order[pair_bounds[b]:pair_bounds[b + 1]]
            if pick.size:
                block = self.user_scores_sparse(user_history[bounds[b]:bounds[b + 1]])
                out[rows[pick]] = np.asarray(block[inverse[pick] - bounds[b], item_idx[rows[pick]]]).ravel()
        return out

    def pruned(self, neighbours: int) -> ItemItem:
        """The same model keeping each item's ``neighbours`` strongest weights: equal to fitting
        with ``neighbours`` directly (the same order by magnitude and tie rule) when this model
        keeps at least as many."""
        return ItemItem(kind=self.kind, weights=_prune_rows(self.weights, neighbours))

    def with_new_items(self, n_new: int) -> ItemItem:
        """The same model over a catalog grown by ``n_new`` items that nobody has seen (zero weights)."""
        n = self.weights.shape[0] + n_new
        grown = sp.csr_matrix((self.weights.data, self.weights.indices,
                               np.concatenate([self.weights.indptr, np.full(n_new, self.weights.nnz)])),
                              shape=(n, n))
        return ItemItem(kind=self.kind, weights=grown)

    def save(self, path: Path) -> None:
        sp.save_npz(path, self.weights)
        Path(path).with_suffix(".kind").write_text(self.kind)

    @classmethod
    def load(cls, path: Path) -> ItemItem:
        return cls(kind=Path(path).with_suffix(".kind").read_text().strip(),
                   weights=sp.load_npz(path).tocsr().astype(np.float32))


def binary(user_items: sp.csr_matrix) -> sp.csr_matrix:
    """The 0/1 pattern of a user x item matrix, float32 CSR."""
    out = user_items.tocsr().astype(np.float32, copy=True)
    out.sum_duplicates()  # one entry per (row, item): the cosine's diagonal counts entries
    out.eliminate_zeros()
    out.data[:] = 1.0
    return out


def fit_item_item(user_items: sp.csr_matrix, *, kind: str = "ease", regularization: float = 500.0,
                  neighbours: int = 200, max_items: int = 20_000, dropout: float = 0.0,
                  sessions: sp.csr_matrix | None = None, session_weight: float = 1.0) -> ItemItem:
    """Fit on the 0/1 pattern of ``user_items`` (n_users, n_items).

    regularization: EASE's lambda (a count of co-occurrences; larger = smoother).
    neighbours: weights kept per item row; max_items: above this EASE falls back to cosine.
    dropout: EDLAE's dropout probability in [0, 1) (0 = plain EASE; ignored by cosine).
    sessions: optional (n_sessions, n_items) matrix whose 0/1 pattern adds ``session_weight`` x
        the session co-occurrence counts to the user ones (both kinds).

    The cosine fit's cost follows the distinct co-occurring pairs (the off-diagonal stored
    entries of the counts), which grow faster than the interactions when the catalog grows with
    them (fewer repeats per pair); it records them as the work ``pairs`` of the open stage
    (``recsys.stage_timer.add_work``) for the scaling benchmarks. EASE's cost is its dense
    n_items^2 inverse (cubic), so it records none.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown item-to-item model {kind!r}; use one of {KINDS}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"item-to-item dropout must be in [0, 1), got {dropout}")
    x = binary(user_items)
    n_items = x.shape[1]
    if sessions is not None and sessions.shape[1] != n_items:
        raise ConfigError(f"sessions have {sessions.shape[1]} item columns, user_items {n_items}")
    if kind == "ease" and n_items > max_items:
        log.warning("EASE needs a dense %d x %d inverse; using cosine co-occurrence above %d items",
                    n_items, n_items, max_items)
        kind = "cosine"
    s = binary(sessions) if sessions is not None and session_weight > 0 else None
    if kind == "ease":
        counts = (x.T @ x).tocsr()
        if s is not None:
            counts = (counts + session_weight * (s.T @ s)).tocsr()
        weights = _ease_weights(counts, regularization, neighbours, dropout)
    else:
        weights, pairs = _cosine_weights(x, s, session_weight, neighbours)
        add_work("pairs", pairs)
    return ItemItem(kind=kind, weights=weights)


def fit_with_cooccurrence(user_items: sp.csr_matrix, *, kind: str = "ease", neighbours: int = 200,
                          max_items: int = 20_000, sessions: sp.csr_matrix | None = None,
                          session_weight: float = 1.0, **settings) -> tuple[ItemItem, ItemItem | None]:
    """``fit_item_item(user_items, ...)`` and, when that model is the plain co-occurrence cosine
    (above ``max_items`` or asked for, without sessions), the co-occurrence baseline's
    (``fit_item_item(user_items, kind="cosine", neighbours=COOCCURRENCE_NEIGHBOURS)``) from the
    same pass over the counts, the costliest part of both at scale; else None for the second.
    Both equal their separate fits: each is the wider one pruned.
    """
    plain = sessions is None or session_weight <= 0
    if not plain or (kind == "ease" and user_items.shape[1] <= max_items):
        return fit_item_item(user_items, kind=kind, neighbours=neighbours, max_items=max_items, sessions=sessions,
                             session_weight=session_weight, **settings), None
    wide = fit_item_item(user_items, kind=kind, neighbours=max(neighbours, COOCCURRENCE_NEIGHBOURS),
                         max_items=max_items, **settings)
    model = wide if neighbours >= COOCCURRENCE_NEIGHBOURS else wide.pruned(neighbours)
    baseline = wide if neighbours <= COOCCURRENCE_NEIGHBOURS else wide.pruned(COOCCURRENCE_NEIGHBOURS)
    return model, baseline


def _ease_weights(counts: sp.csr_matrix, regularization: float, neighbours: int,
                  dropout: float = 0.0) -> sp.csr_matrix:
    """EASE's (EDLAE's, with ``dropout`` > 0) B, pruned to ``neighbours`` per row, in one dense n_items^2 buffer.

    The Gram matrix is inverted in place through its Cholesky factor (it is symmetric positive
    definite), scaled in place and pruned in row blocks, so the peak is one dense matrix
    (float64 up to 5,000 items, float32 above) instead of the four that ``np.linalg.inv`` plus a
    dense-to-sparse conversion hold at once.
    """
    n_items = counts.shape[0]
    dtype = np.float64 if n_items <= 5_000 else np.float32
    gram = counts.toarray().astype(dtype)
    gram[np.diag_indices(n_items)] *= 1.0 + dropout / (1.0 - dropout)
    gram[np.diag_indices(n_items)] += regularization
    potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (gram,))
    with threadpool_limits(limits=None, user_api="blas"):
        # gram.T is the same symmetric matrix in Fortran order: LAPACK works on it without a copy.
        factor, info = potrf(gram.T, lower=False, overwrite_a=True)
        if info != 0:
            raise ValueError(f"EASE Gram matrix is not positive definite (LAPACK potrf info {info})")
        inverse, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ValueError(f"EASE inverse failed (LAPACK potri info {info})")
    _symmetrize_from_upper(inverse)  # potri fills one triangle of the symmetric inverse
    inverse = inverse.T  # row-major view of the same (symmetric) values, for the row blocks below
    diag = np.diag(inverse).copy()
    inverse /= -diag[None, :]
    np.fill_diagonal(inverse, 0.0)
    return _prune_dense_rows(inverse, neighbours)


def _symmetrize_from_upper(matrix: np.ndarray, block: int = 1024) -> None:
    """Copy the upper triangle onto the lower one, in place, in column blocks (bounded temporaries)."""
    n = matrix.shape[0]
    for first in range(0, n, block):
        last = min(first + block, n)
        # rows below the block's diagonal get the transposed upper entries of these columns' rows
        matrix[last:, first:last] = matrix[first:last, last:].T
        tile = matrix[first:last, first:last]
        lower = np.tril_indices(last - first, -1)
        tile[lower] = tile.T[lower]


def _prune_dense_rows(matrix: np.ndarray, keep: int, block: int = 1024) -> sp.csr_matrix:
    """CSR float32 of the ``keep`` largest-magnitude entries of each row of a dense matrix (zeros dropped)."""
    n_rows, n_cols = matrix.shape
    keep = min(keep, n_cols)
    indptr, indices, data = [np.zeros(1, dtype=np.int64)], [], []
    total = 0
    for first in range(0, n_rows, block):
        rows = matrix[first:first + block]
        cols = _strongest(rows, keep, first) if keep < n_cols else np.broadcast_to(np.arange(n_cols), rows.shape)
        cols = np.sort(cols, axis=1)
        values = np.take_along_axis(rows, cols, axis=1).astype(np.float32)
        nonzero = values != 0
        indices.append(cols[nonzero].astype(np.int32))
        data.append(values[nonzero])
        counts = nonzero.sum(axis=1)
        indptr.append(total + np.cumsum(counts))
        total += int(counts.sum())
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.concatenate(indptr)),
                         shape=matrix.shape, dtype=np.float32)


def _strongest(rows: np.ndarray, keep: int, first_row: int) -> np.ndarray:
    """int (n, keep) columns of each row's ``keep`` largest magnitudes; among entries tied at the
    cut, the seeded tie rule decides (never the column index). rows: float (n, n_cols)."""
    magnitude = np.abs(rows)
    n_cols = rows.shape[1]
    cut = np.partition(magnitude, n_cols - keep, axis=1)[:, n_cols - keep][:, None]
    keys = tie_keys(0, np.arange(first_row, first_row + len(rows))[:, None], np.arange(n_cols)[None, :])
    # Entries above the cut first (key 0), then the tied ones in tie-rule order, the rest last.
    keys = np.where(magnitude > cut, np.uint64(0), np.where(magnitude == cut, keys | np.uint64(1),
                                                            np.uint64(np.iinfo(np.uint64).max)))
    return np.argpartition(keys, keep - 1, axis=1)[:, :keep]


def _cosine_weights(x: sp.csr_matrix, s: sp.csr_matrix | None, session_weight: float, neighbours: int,
                    block_entries: int = _COSINE_BLOCK_ENTRIES,
                    threads: int | None = None) -> tuple[sp.csr_matrix, int]:
    """Cosine of the co-occurrence counts ``G = X'X (+ session_weight S'S)``, pruned to
    ``neighbours`` per row, computed in blocks of item rows; and G's stored entries off its
    diagonal (the distinct ordered pairs of different items that co-occur), which the blocks'
    cost follows.

    x, s: binary float32 CSR (users or sessions x items). ``threads`` blocks run at once (None:
    one per usable core, at most ``_COSINE_MAX_THREADS``; scipy's sparse products release the
    GIL), each holding the items whose products add up to about ``block_entries / threads``
    partial entries, so the peak is about ``block_entries`` entries of counts in all plus the
    pruned result (``neighbours`` per item), not all of G (160M entries at 200,000 items, several
    copies of it for the scaling). Every entry goes through the same float32 operations as on the whole
    matrix, so the kept weights (values and columns) do not depend on the block size; only the
    order of a row's stored entries may differ, which no product with the weights sees.
    """
    n_items = x.shape[1]
    xt = x.T.tocsr()
    st = None if s is None else s.T.tocsr()
    # G's diagonal: users (sessions) per item, exact as float32 counts.
    diag = np.diff(xt.indptr).astype(np.float32)
    row_cost = xt @ np.diff(x.indptr).astype(np.int64)  # partial products per item row of X'X
    if st is not None:
        diag = diag + session_weight * np.diff(st.indptr).astype(np.float32)
        row_cost = row_cost + st @ np.diff(s.indptr).astype(np.int64)
    own = int(np.count_nonzero(diag))  # G's stored diagonal: the items with a user or session
    diag = np.sqrt(diag).astype(np.float32)
    diag[diag == 0] = 1.0
    inverse = 1.0 / diag
    threads = max(1, min(_COSINE_MAX_THREADS, usable_cores()) if threads is None else threads)
    block_of_row = np.cumsum(row_cost) // max(1, block_entries // threads)
    starts = np.flatnonzero(np.r_[True, block_of_row[1:] != block_of_row[:-1]]) if n_items else np.zeros(0, int)

    def block(first: int, last: int) -> tuple[sp.csr_matrix, int]:
        counts = xt[first:last] @ x
        if st is not None:
            counts = counts + session_weight * (st[first:last] @ s)
        counts = counts.tocsr()
        pairs = counts.nnz
        return _pruned_cosine_block(counts, inverse, first, neighbours), pairs

    bounds = [(int(first), int(last)) for first, last in zip(starts, np.r_[starts[1:], n_items], strict=True)]
    if min(threads, len(bounds)) > 1:  # each block is the same as alone; pool.map keeps their order
        pool = ThreadPoolExecutor(min(threads, len(bounds)), thread_name_prefix="cosine")
        try:
            blocks = list(pool.map(lambda bound: block(*bound), bounds))
        except BaseException:  # an error or Ctrl-C: do not wait for the queued blocks
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    else:
        blocks = [block(first, last) for first, last in bounds]
    if not blocks:
        return sp.csr_matrix((0, n_items), dtype=np.float32), 0
    return (sp.vstack([weights for weights, _ in blocks], format="csr", dtype=np.float32),
            sum(pairs for _, pairs in blocks) - own)


def _pruned_cosine_block(counts: sp.csr_matrix, inverse: np.ndarray, first_row: int, keep: int) -> sp.csr_matrix:
    """float32 CSR of a block of G's rows (from ``first_row``; every column) turned into cosines
    ``counts[r, c] / (norm_r norm_c)`` and pruned to each row's ``keep`` strongest, an item's own
    entry and zeros dropped: ``_prune_rows`` of ``diags(inverse) @ G @ diags(inverse)`` without its
    diagonal (the same float32 operations, in the same order). The cosines are computed in place
    in ``counts.data`` (which it overwrites); the temporaries are a few 4-byte and 1-byte arrays
    of the block's entries (the row and column factors, the row ids, masks), no 8-byte ones."""
    if keep <= 0:
        return sp.csr_matrix(counts.shape, dtype=np.float32)
    values = counts.data if counts.data.dtype == np.float32 else counts.data.astype(np.float32)
    lengths = np.diff(counts.indptr)
    values *= np.repeat(inverse[first_row:first_row + counts.shape[0]], lengths)
    values *= inverse[counts.indices]
    own = counts.indices == np.repeat(np.arange(first_row, first_row + counts.shape[0], dtype=counts.indices.dtype),
                                      lengths)
    # Cosines are >= 0: the values are their own magnitudes; -1 marks an entry no row may keep.
    values[own | (values == 0)] = -1.0
    del own
    kept = _kept_entries(values, counts.indptr, counts.indices, keep, first_row)
    return sp.csr_matrix((values[kept], counts.indices[kept], _kept_indptr(kept, counts.indptr)),
                         shape=counts.shape, dtype=np.float32)


def _prune_rows(matrix: sp.csr_matrix, keep: int, first_row: int = 0) -> sp.csr_matrix:
    """Keep the ``keep`` largest-magnitude entries of each row (a history item's strongest votes);
    among entries tied at the cut, the seeded tie rule decides (never the column index), as
    ``np.lexsort((tie_keys(0, row, cols), -abs(values)))[:keep]`` would. Kept entries stay in
    their stored order. first_row: the item index of the matrix's row 0 (a block of rows), for
    the tie rule. values: without NaN. Returns a new matrix (no array shared with the input).
    """
    matrix = matrix.tocsr()
    if keep <= 0:
        return sp.csr_matrix(matrix.shape, dtype=np.float32)
    if matrix.nnz == 0 or np.diff(matrix.indptr).max() <= keep:
        return sp.csr_matrix((matrix.data.astype(np.float32), matrix.indices.copy(), matrix.indptr.copy()),
                             shape=matrix.shape, dtype=np.float32)
    kept = _kept_entries(np.abs(matrix.data), matrix.indptr, matrix.indices, keep, first_row)
    return sp.csr_matrix((matrix.data[kept].astype(np.float32), matrix.indices[kept],
                          _kept_indptr(kept, matrix.indptr)), shape=matrix.shape, dtype=np.float32)


def _kept_entries(magnitude: np.ndarray, indptr: np.ndarray, indices: np.ndarray, keep: int,
                  first_row: int) -> np.ndarray:
    """bool (nnz,) mask of each CSR row's ``keep`` largest ``magnitude`` entries, ties at the cut
    by the tie rule (``tie_keys(0, first_row + row, column)``, smallest first).

    magnitude: float (nnz,) >= 0 for entries that may be kept, negative for entries that never
    are (they do not count towards ``keep``); indptr: (n_rows + 1,); indices: columns (nnz,).
    A row's cut is found by a partition (linear); everything else is one vectorised pass over
    the entries, and tie keys are hashed only for the entries tied at a cut.
    """
    lengths = np.diff(indptr)
    cut = np.full(len(lengths), -0.5, dtype=magnitude.dtype)  # below every keepable magnitude
    for row in np.flatnonzero(lengths > keep):
        start, stop = indptr[row], indptr[row + 1]
        cut[row] = np.partition(magnitude[start:stop], stop - start - keep)[stop - start - keep]
    cut[cut < 0] = -0.5  # fewer than ``keep`` keepable entries: the row keeps all of them
    entry_cut = np.repeat(cut, lengths)
    kept = magnitude > entry_cut
    tied = np.flatnonzero(magnitude == entry_cut)
    del entry_cut
    if tied.size:
        # Each row with tied entries keeps ``keep - (entries above its cut)`` of them, smallest tie key first.
        tied_row = np.searchsorted(indptr, tied, side="right") - 1
        need = keep - _row_counts(kept, indptr)[tied_row]
        keys = tie_keys(0, first_row + tied_row, indices[tied])
        order = np.lexsort((keys, tied_row))
        ordered_row = tied_row[order]
        group_start = np.flatnonzero(np.r_[True, ordered_row[1:] != ordered_row[:-1]])
        rank = np.arange(len(order)) - np.repeat(group_start, np.diff(np.r_[group_start, len(order)]))
        kept[tied[order[rank < need[order]]]] = True
    return kept


def _row_counts(mask: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """int64 (n_rows,) True entries of ``mask`` (nnz,) in each CSR row."""
    counts = np.zeros(len(indptr) - 1, dtype=np.int64)
    filled = np.flatnonzero(np.diff(indptr) > 0)
    if filled.size:  # a segment runs to the next filled row's start: exactly this row
        counts[filled] = np.add.reduceat(mask, indptr[filled], dtype=np.int64)
    return counts


def _kept_indptr(kept: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """The indptr of a CSR matrix's entries selected by ``kept`` (nnz,), rows unchanged."""
    return np.r_[0, np.cumsum(_row_counts(kept, indptr))]
