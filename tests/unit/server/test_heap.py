import ctypes
import subprocess
import sys
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


class _LibraryWithoutTrim:
    """A C library as musl's or macOS's: ctypes raises AttributeError for a symbol it lacks."""

    def __getattr__(self, name: str) -> object:
        raise AttributeError(f"undefined symbol: {name}")


def _no_trim(_name: object) -> _LibraryWithoutTrim:
    return _LibraryWithoutTrim()


def _no_library(_name: object) -> object:
    raise OSError("the process image cannot be opened as a library")


@pytest.mark.parametrize("open_library", [_no_trim, _no_library], ids=["no malloc_trim", "no dlopen"])
def test_without_malloc_trim_a_model_load_goes_on_and_says_nothing_was_trimmed(
        monkeypatch: pytest.MonkeyPatch, open_library) -> None:
    # Alpine (musl) and macOS images load models too: the trim is best effort, never an error.
    monkeypatch.setattr(ctypes, "CDLL", open_library)
    assert release_free_heap() is False


# The top of the heap freed while glibc's trim threshold is raised (it raises it by itself once
# large blocks such as torch's tensors are freed; mallopt does it here, in a child process so
# this process's allocator is left alone): free() leaves that memory resident, only the trim
# returns it.
_FREED_HEAP_TOP = """
import ctypes
from pathlib import Path
from rnn_sentiment.server.heap import release_free_heap

def resident_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
M_TRIM_THRESHOLD = -1
libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
blocks = [libc.malloc(%d) for _ in range(%d)]
for block in blocks:
    ctypes.memset(block, 1, %d)
for block in blocks:
    libc.free(block)
before = resident_mb()
assert release_free_heap()
print(before - resident_mb())
""" % (BLOCK, BLOCKS, BLOCK)


def test_a_freed_heap_top_goes_back_to_the_os_too() -> None:
    if not hasattr(ctypes.CDLL(None), "malloc_trim"):
        pytest.skip("the C library has no malloc_trim (not glibc)")
    child = subprocess.run([sys.executable, "-c", _FREED_HEAP_TOP], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert float(child.stdout) > 40, f"only {float(child.stdout):.0f} MB went back"
