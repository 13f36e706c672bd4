"""elfs: label-free coreset selection with proxy training dynamics (ELFS, ICLR 2025)."""

__version__ = "0.1.0"
