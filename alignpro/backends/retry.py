"""The one retry policy of the API backends (the ``openai:`` target and the ``openai:`` judge).

A request that fails with a retryable status (:data:`RETRY_STATUSES`), a timeout, a connection error or (when
the caller asks) a malformed body is retried up to ``max_retries`` times. Before retry ``attempt`` (0-based) the
client waits ``min(max_backoff_s, backoff_s · 2^attempt)`` scaled by a jitter in [0.5, 1] (so concurrent
requests that failed together do not retry together), and never less than the server's ``Retry-After``: the
server's wait is a minimum, capped at ``max_backoff_s`` so a misbehaving server cannot stall a run for hours.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

#: HTTP statuses worth retrying: request timeout, conflict, rate limit, and every server error.
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5  #: retries per request (0 = never retry)
    backoff_s: float = 0.5  #: delay before the first retry; doubles on each retry
    max_backoff_s: float = 20.0  #: longest delay between retries (also caps a server's Retry-After)

    def delay(self, attempt: int, retry_after: float | None = None,
              jitter: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to wait before retry ``attempt`` (0-based); ``retry_after`` is the server's minimum."""
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * jitter(0.5, 1.0)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(self.max_backoff_s, retry_after))
        return delay


def retry_after_s(exc: Any) -> float | None:
    """The ``Retry-After`` header (in seconds) of a failed response, or None when absent or not a number."""
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
