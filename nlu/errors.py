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


class OutputError(NLUError):
    """An output path cannot be written: no permission, a file where a folder should be,
    a full disk. Nothing was half-written."""


class InputError(NLUError):
    """A caller passed something the API cannot score (e.g. a non-string text)."""


class MessageConflict(InputError):
    """A message id that another conversation already used: ids are unique per channel, so
    the caller mixed two messages up. Neither is processed again under the other's id."""


class StorageUnavailable(NLUError):
    """A database failed: locked beyond the timeout, disk full, corrupt or unreadable.

    Nothing was written (the transaction was rolled back) and a retry may succeed, so the
    HTTP adapter answers 503; a caller mistake is never one of these.
    """


class QueueError(NLUError):
    """The human-agent queue refused an operation (a ticket held by someone else, already
    resolved, a bad argument); see :class:`QueueUnavailable` for database failures."""


class QueueUnavailable(QueueError, StorageUnavailable):
    """The queue's database failed (locked beyond the timeout, disk full, corrupt)."""


class UnknownTicket(QueueError):
    """No ticket has the requested id."""


class OptedOut(QueueError):
    """The customer of a ticket opted out ("BAJA"): an agent's message to them is refused
    until they opt in again. The ticket itself can still be resolved or released."""


class UnknownIntent(QueueError):
    """An agent's intent label that the model which scored the ticket does not have: most
    often a typo, which would train as a class of its own. A new intent is kept when the
    agent says it is one (``new_intent``)."""


class WindowClosed(QueueError):
    """An agent's free-form text after WhatsApp's 24-hour customer-service window closed:
    only an approved template message reaches the customer now."""
