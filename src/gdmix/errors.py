"""Exception types raised by gdmix.

Every error caused by the user's input (data, configuration, files) derives from
:class:`GDMixError`, so that the command line can report it in one line and exit
with status 2 instead of printing a traceback.
"""

from __future__ import annotations


class GDMixError(ValueError):
    """Base class of every error caused by bad input to gdmix."""


class DataError(GDMixError):
    """The data does not satisfy the schema (missing column, bad dtype, NaN...)."""


class ConfigError(GDMixError):
    """The configuration is invalid (unknown key, out-of-range value...)."""


class ModelDirectoryError(GDMixError):
    """A path that should hold a gdmix model does not hold a valid one."""


class OutputError(GDMixError):
    """An output path cannot be used (it would destroy data gdmix did not write, is not
    writable, is locked by another writer) or writing it failed (disk full...)."""
