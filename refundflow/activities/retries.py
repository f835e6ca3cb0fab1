"""Errors an activity raises so that Temporal retries it, as its retry policy says.

Such an attempt is routine (a provider busy for a moment, notices another sender holds), yet
the SDK logs every failed attempt as a warning with a full traceback. Raised through
:func:`retry_later`, the attempt is one line in our log instead, and the error is Temporal's
BENIGN category: the SDK logs it at debug and leaves it out of failure metrics. The retry
itself, and what the workflow sees once the attempts run out, are unchanged.
"""

from __future__ import annotations

import logging

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory


def retry_later(
    logger: logging.Logger, message: str, *, error_type: str, level: int = logging.WARNING
) -> ApplicationError:
    """Log ``message`` as one line and return the error to raise (``raise ... from exc``)."""
    info = activity.info()
    logger.log(
        level,
        "%s: %s; Temporal retries it (attempt %d failed)",
        info.activity_type,
        message,
        info.attempt,
    )
    return ApplicationError(message, type=error_type, category=ApplicationErrorCategory.BENIGN)
