"""Freed heap memory goes back to the operating system (glibc, as on every machine the project runs on)."""

import json
import subprocess
import sys

# In a fresh interpreter: a test process's own allocator state (torch loaded, thresholds moved) is not a worker's.
_SCRIPT = """
import ctypes, json
from pipeline.memory import release_free_memory

def rss_mb():
    return next(int(line.split()[1]) // 1024 for line in open("/proc/self/status") if line.startswith("VmRSS:"))

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
blocks = [libc.malloc(64 * 1024) for _ in range(800)]  # 50 MB in blocks under mmap's threshold: on the heap
for block in blocks:
    ctypes.memset(block, 1, 64 * 1024)
keep = libc.malloc(16)  # allocated last: the heap's top stays in use, so free() alone cannot shrink it
for block in blocks:
    libc.free(block)
freed = rss_mb()
print(json.dumps({"freed": freed, "released": release_free_memory(), "trimmed": rss_mb()}))
"""


def test_freed_heap_pages_are_returned():
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result["released"] and result["freed"] - result["trimmed"] > 40, result
