import ctypes
from pathlib import Path

import pytest

from rnn_sentiment.server.heap import release_free_heap

BLOCK = 4096  # below glibc's mmap threshold: these come from the heap, as small model temporaries do
BLOCKS = 20_000  # 80 MB


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_freed_heap_memory_goes_back_to_the_os() -> None:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "malloc_trim"):
        pytest.skip("the C library has no malloc_trim (not glibc)")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
    for block in blocks:
        ctypes.memset(block, 1, BLOCK)  # touch every page, so it is resident
    keep = libc.malloc(BLOCK)  # a live block above the freed ones: the heap's top cannot shrink past it
    for block in blocks:
        libc.free(block)
    before = resident_mb()
    assert release_free_heap()
    after = resident_mb()
    libc.free(keep)
    assert before - after > 40, f"RSS {before:.0f} MB -> {after:.0f} MB"
