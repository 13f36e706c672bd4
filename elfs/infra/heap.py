"""Give glibc's freed heap memory back to the system: blocks of a few to 32 MiB freed between large allocations
stay in the heap (glibc raises its mmap threshold as large blocks are freed) and count as resident."""

from __future__ import annotations

import ctypes
import sys

__all__ = ["trim_heap"]


def trim_heap() -> None:
    """malloc_trim(0): the heap's free pages back to the system; nothing where the C library is not glibc."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass
