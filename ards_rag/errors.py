"""The package's own exceptions.

Library code raises these; ``cli.py`` turns them into one-line messages and a non-zero exit
(never a traceback). Each message names the file, row or column at fault and what to do.
"""

from __future__ import annotations


class ArdsRagError(Exception):
    """Base class of every error that ards-rag reports to the user as a one-line message."""


class InputError(ArdsRagError):
    """The user's notes file (or another input file) is missing, unreadable or malformed."""


class ConfigError(ArdsRagError):
    """A configuration file or value is invalid."""


class IndexStoreError(ArdsRagError):
    """An index folder is missing, incomplete, or does not match what the caller needs."""


class ManifestMismatchError(IndexStoreError):
    """An index (or run) was built with other settings than the ones asked for now."""


class UnknownPatientError(ArdsRagError):
    """A patient id is not in the index."""


class ModelError(ArdsRagError):
    """A base model cannot be found or loaded."""


class TrainingError(ArdsRagError):
    """Training cannot start or did not finish (e.g. no labeled patients, one class only)."""


class RunError(ArdsRagError):
    """A run folder is missing, incomplete, or incompatible with the index."""
