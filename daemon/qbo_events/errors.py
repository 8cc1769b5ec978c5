"""The exception tree of qbo-events; foreign exceptions are translated into these at one edge."""

from __future__ import annotations


class QboEventsError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(QboEventsError):
    """The configuration is invalid; `problems` holds one message a line, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StartupError(QboEventsError):
    """The daemon cannot start as configured (a listener that cannot bind, a state directory
    another daemon holds); one line naming the key and the cause, exit 2."""


class OutboxError(QboEventsError):
    """The outbox could not take or give back rows (disk full, closed, corrupt)."""


class OutboxFull(OutboxError):
    """Intake is refused: the outbox holds more than `outbox.max_pending` undelivered events."""


class OutboxClosed(OutboxError):
    """Intake is refused: the daemon is shutting down."""


class QuickBooksError(QboEventsError):
    """A call to QuickBooks Online failed."""

    def __init__(self, message: str, *, status: int | None = None, intuit_tid: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.intuit_tid = intuit_tid


class QuickBooksAuthError(QuickBooksError):
    """401: the access token was refused (expired or revoked)."""


class NeedsReauthorization(QuickBooksError):
    """The token endpoint answered invalid_grant: a person must connect the company again."""


class QuickBooksRateLimited(QuickBooksError):
    """429: the realm must wait `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float, intuit_tid: str = "") -> None:
        super().__init__(message, status=429, intuit_tid=intuit_tid)
        self.retry_after = retry_after


class QuickBooksUnavailable(QuickBooksError):
    """5xx, a timeout or a network error: worth retrying with back-off."""


class BudgetExhausted(QuickBooksError):
    """The month's calls reached `quickbooks.monthly_call_budget`: none leaves until it turns."""


class QuickBooksFault(QuickBooksError):
    """QuickBooks answered with a Fault (validation, permission, unsupported operation)."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        fault_type: str = "",
        status: int | None = None,
        intuit_tid: str = "",
        detail: str = "",
    ) -> None:
        super().__init__(message, status=status, intuit_tid=intuit_tid)
        self.code = code
        self.fault_type = fault_type
        self.detail = detail


class DeliveryError(QboEventsError):
    """One delivery attempt to a callback URL failed."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryTimeout(DeliveryError):
    """The receiver did not answer within `delivery.timeout`."""


class DeliveryRejected(DeliveryError):
    """The receiver answered with a status other than 2xx."""

    def __init__(self, status: int, *, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}", retry_after=retry_after)
        self.status = status

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver asks never to be sent this again."""
        return self.status == 410
