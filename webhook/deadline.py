"""A deadline on whatever a request waits for (a body, a database, a remote), under the gevent workers.

Under gevent every wait is a switch, so a gevent.Timeout interrupts a slow body, a database that
never answers or a remote that trickles, and frees the greenlet. Without gevent (the test client,
`opos serve` on Werkzeug's threads) nothing can interrupt a blocked thread from outside: the waits
keep their own bounds (socket and connect timeouts) and gunicorn's worker timeout is behind them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


def gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


@contextlib.contextmanager
def deadline(seconds: float, error: BaseException) -> Iterator[None]:
    """Raise `error` in the block when it takes longer than `seconds` (under gevent; a no-op otherwise)."""
    if not gevent_patched():
        yield
        return
    import gevent

    timeout = gevent.Timeout(seconds, error)
    timeout.start()
    try:
        yield
    finally:
        timeout.close()


def call_later(seconds: float, action: Callable[[], None]) -> Callable[[], None]:
    """Run `action` in `seconds` (a greenlet under gevent, a timer thread otherwise); returns the cancel."""
    if gevent_patched():
        import gevent

        greenlet = gevent.spawn_later(seconds, action)
        return lambda: greenlet.kill(block=False)
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer.cancel
