"""Keep freed memory in the process, for the command line's runs.

glibc hands out large blocks (NumPy's multi-megabyte temporaries) as fresh pages and returns
them on free, so every op that allocates a large temporary pays a page fault per 4 KiB touched.
On the project's VMs that cost more than the arithmetic in the CUDA math emulation (the GPT
model's gelu and softmax ran 2-3x slower). Raising glibc's mmap and trim thresholds keeps freed
blocks for reuse. It changes the allocator of the whole process, so the library never does it
on import; `simprec` (the command) does, and a script can call `keep_freed_memory()` itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_MAX = 32 << 20   # glibc's largest mmap threshold on 64-bit systems
_TRIM = 1 << 30        # keep up to 1 GiB of freed memory at the top of the heap


def keep_freed_memory() -> bool:
    """Ask glibc to serve blocks of up to 32 MiB from the heap and keep up to 1 GiB freed;
    True if it took the settings (False elsewhere: other C libraries, other systems)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM))
