"""Scratch arrays reused from one chunk of users to the next, while a job asks for it.

Ranking a chunk of users against the whole catalog makes several (users, items) arrays: the
source scores (float32), the seen and picked masks (bool). At 200,000 items a chunk of 1,024
users is 820 MB per float32 array. A fresh array that large is mapped from the kernel, which
zeroes each page on its first write, and unmapped when freed: every chunk pays that again. On a
virtual machine this costs about as much as the matrix product that fills the array
(``benchmarks/array_reuse.py`` measures both). Inside ``reusing_arrays()``, ``take`` hands out
buffers that earlier chunks handed back with ``give``, so the pages are written once per job.
Outside it, ``take`` is ``np.empty`` and ``give`` does nothing.

The pool holds only buffers given back, and only while some caller is inside
``reusing_arrays()``: it never keeps more than the job's own high-water mark, and the memory
goes back when the outermost block ends. A taken array that is never given back is freed as usual.
Threads share the pool (the batch job's ranking threads take and give concurrently).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

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


def take(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-ordered array of ``shape`` and ``dtype``: the smallest given-back buffer
    that holds it, else a new one. Give it back with ``give`` once nothing reads it any more."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = None
    with _lock:
        if _active == 0:
            return np.empty(shape, dtype=dtype)
        for position, candidate in enumerate(_free):
            if candidate.nbytes >= nbytes:
                buffer = _free.pop(position)
                break
    if buffer is None:
        buffer = np.empty(max(nbytes, 1), dtype=np.uint8)
    with _lock:
        _lent[id(buffer)] = buffer
    return buffer[:nbytes].view(dtype).reshape(shape)


def take_filled(shape: tuple[int, ...], dtype, value) -> np.ndarray:
    """``take`` with every element set to ``value``; outside ``reusing_arrays()``, ``np.full``
    (``np.zeros`` for zero: the kernel's zero pages, written only where set)."""
    with _lock:
        active = _active > 0
    if not active:
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
                    sizes = [b.nbytes for b in _free]
                    _free.insert(int(np.searchsorted(sizes, base.nbytes)), base)
                    break
            base = base.base if isinstance(base, np.ndarray) else None
