"""The one error every channel raises, so the dispatcher can tell a retry from a give-up."""

from __future__ import annotations


class DeliveryError(Exception):
    """A notice did not reach its channel.

    ``retryable``: nothing final happened (connection refused, provider busy, 5xx) and the same
    delivery may succeed later. Otherwise the channel refused it for good (invalid number,
    mailbox unknown) and sending again would only be refused again.
    """

    def __init__(self, message: str, *, retryable: bool, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message
