"""One error root for the whole package.

Library code raises these and never prints or exits; only the adapters (``cli.py``,
``server.py``) turn them into exit codes or HTTP statuses.
"""

from __future__ import annotations


class NLUError(Exception):
    """Root of every error the package raises on purpose."""


class DataError(NLUError):
    """A data file is unreadable or its content breaks the data contract."""


class ConfigError(NLUError):
    """A configuration value or file is invalid."""


class ArtifactError(NLUError):
    """A model directory is missing, damaged, tampered with or incompatible."""


class InputError(NLUError):
    """A caller passed something the API cannot score (e.g. a non-string text)."""


class QueueError(NLUError):
    """The human-agent queue refused an operation or its database failed (locked, full, corrupt)."""


class UnknownTicket(QueueError):
    """No ticket has the requested id."""
