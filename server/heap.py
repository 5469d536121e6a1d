"""Hand the C heap's free memory back to the OS after a model load (glibc's `malloc_trim`).

Building a model's ONNX Runtime session allocates tens of MB of temporaries (the exported graph,
its serialized bytes, the agreement probe) that are freed as soon as the session exists. glibc
keeps freed heap memory for reuse instead of returning it. Under load the heap grows back
toward the same working set, so this lowers an idle worker's footprint, not its peak; it costs
nothing per request (it runs at load time only). A fixed `MALLOC_MMAP_THRESHOLD_` saved as much
but slowed torch's large batches (every large tensor then costs an mmap and its page faults).
Measured in docs/performance.md.
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
