"""Scratch arrays reused from one chunk of users to the next, while a job asks for it.

Ranking a chunk of users against the whole catalog makes several (users, items) arrays: the
source scores (float32), the seen and picked masks (bool). At 200,000 items a chunk of 512
users (candidate generation's chunk) is 410 MB per float32 array and 102 MB per mask. A fresh
array that large is mapped from the kernel, which zeroes each page on its first write, and
unmapped when freed: every chunk pays that again. On a virtual machine this cost more than the
matrix product that fills the array (``benchmarks/array_reuse.py`` measures both). Inside
``reusing_arrays()``, ``take`` hands out buffers that earlier chunks handed back with ``give``,
so the pages are written once per block. Outside it, and for arrays under ``MIN_POOLED_BYTES``,
``take`` is ``np.empty`` and ``give`` does nothing.

Memory: the pool holds the buffers given back, whole (a buffer is never split), while some
caller is inside a block; they go back to the system when the outermost block ends. So a block
holds about one chunk's arrays for its whole length, also while other work runs between chunks:
open blocks around chunk loops, not around whole stages. A taken array that is never given back
is freed as usual. The pool is process-wide: one open block turns reuse on for every thread (the
ranking threads of a batch job take and give concurrently).
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

# Smaller arrays are not pooled: glibc's malloc keeps freed blocks under its largest mmap
# threshold (32 MiB) for the next allocation itself, and the pool measured no gain at 20,000 items.
MIN_POOLED_BYTES = 32 << 20

_lock = threading.Lock()
_active = 0  # reusing_arrays() blocks open, over all threads
_free: list[np.ndarray] = []  # uint8 buffers given back, smallest first
_lent: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()  # id -> buffer out on loan


@contextmanager
def reusing_arrays() -> Iterator[None]:
    """Reuse given-back arrays until the outermost block ends (blocks nest, across threads)."""
    global _active
    with _lock:
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                _free.clear()
                _lent.clear()


def _size(buffer: np.ndarray) -> int:
    """The key ``_free`` is sorted by: a buffer's bytes."""
    return buffer.nbytes


def _pooled(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """The array's bytes when the pool serves it (a block is open, the floor is reached), else 0."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    with _lock:
        return nbytes if _active > 0 and nbytes >= MIN_POOLED_BYTES else 0


def take(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-ordered array of ``shape`` and ``dtype``: the smallest given-back buffer
    that holds it, else a new one. Give it back with ``give`` once nothing reads it any more."""
    dtype = np.dtype(dtype)
    nbytes = _pooled(shape, dtype)
    if not nbytes:
        return np.empty(shape, dtype=dtype)
    with _lock:
        position = bisect.bisect_left(_free, nbytes, key=_size)  # the smallest buffer that holds nbytes
        buffer = _free.pop(position) if position < len(_free) else None
    if buffer is None:
        buffer = np.empty(nbytes, dtype=np.uint8)
    with _lock:
        _lent[id(buffer)] = buffer
    return buffer[:nbytes].view(dtype).reshape(shape)


def take_filled(shape: tuple[int, ...], dtype, value) -> np.ndarray:
    """``take`` with every element set to ``value``; where ``take`` would make a new array,
    ``np.full`` (``np.zeros`` for zero: the kernel's zero pages, written only where set)."""
    dtype = np.dtype(dtype)
    if not _pooled(shape, dtype):
        return np.zeros(shape, dtype=dtype) if value == 0 else np.full(shape, value, dtype=dtype)
    out = take(shape, dtype)
    out.fill(value)
    return out


def give(*arrays: np.ndarray | None) -> None:
    """Hand arrays from ``take`` back for reuse; the caller must not read or write them again.
    Arrays that did not come from ``take`` (or came from it outside ``reusing_arrays()``) are ignored."""
    for array in arrays:
        base = array
        while base is not None:
            with _lock:
                if _active == 0:
                    return
                if _lent.get(id(base)) is base:
                    del _lent[id(base)]
                    bisect.insort(_free, base, key=_size)
                    break
            base = base.base if isinstance(base, np.ndarray) else None
