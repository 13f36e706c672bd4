"""The two kinds of failure a user can see, kept apart on purpose.

A :class:`UserError` is a mistake in the input (a config value, a path, a dataset that does not fit the
settings): the command line prints it as one line and exits with code 2. Anything else is a bug and keeps its
traceback. The subclasses also derive from ``ValueError``/``RuntimeError`` so library callers can catch them
the way they always did.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message names the setting, the value and what would be valid."""


class ConfigError(UserError, ValueError):
    """A config value is out of range or unknown; the message names the key, the value and what is valid."""


class DataError(UserError, ValueError):
    """The data does not fit the settings (too few images, a single class, k >= N, ...)."""


class UnavailableError(UserError, RuntimeError):
    """Something the run needs (dataset files, backbone weights) is not on this machine and cannot be fetched."""
