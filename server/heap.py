"""Hand the C heap's free memory back to the OS after a model load (glibc's `malloc_trim`).

Building a model's ONNX Runtime session allocates tens of MB of temporaries (the exported graph,
its serialized bytes, the agreement probe) that are freed as soon as the session exists. glibc
keeps freed heap memory for reuse instead of returning it. Measured on the shipped pair
(`rnn-sentiment serve --workers 1`, 2026-11-29): RSS once serving 497 MB without a trim after each
model load, 445–463 MB with one. Under load the heap grows back toward the same working set
(`make bench`: 449–491 MB per worker with and without), so this lowers an idle worker's
footprint, not its peak; it costs nothing per request (it runs at load time only). A fixed
`MALLOC_MMAP_THRESHOLD_` of 128 KB saved as much but made torch's 64-text batches 1.7× slower
(every large tensor then costs an mmap and its page faults).
"""

from __future__ import annotations

import ctypes
import gc

__all__ = ["release_free_heap"]


def release_free_heap() -> bool:
    """Collect Python's garbage, then malloc_trim(0) where the C library has it (glibc); False
    elsewhere (musl, macOS), where only the collection ran."""
    gc.collect()  # temporaries caught in reference cycles go first, so their memory is free too
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
