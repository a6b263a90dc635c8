"""Rate limits of the hub's writes, kept in its database so a restart does not refill them.

A token bucket per key (a worker id, a client address, "*" for the hub as a whole): `rate` tokens
per second up to `burst`; a request takes one or is refused (429). The buckets live in the table
`rate_buckets` (models.RateBucket) with the wall-clock time of their last take, so a hub killed
and started again (or restarted to shed the limits) finds them as it left them. The hub is one
server process: a lock serialises takes, so two requests cannot both spend the last token.
Buckets that have been full for a while are deleted now and then (a full bucket and no row are
the same), so the table holds only keys seen recently.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from autoresearch.core.errors import AutoresearchError
from autoresearch.hub.models import RateBucket

PRUNE_EVERY = 1000  # takes between deletions of buckets that are full again


class RateLimited(AutoresearchError):
    """Raised by `take` when the key's bucket is empty; server.py answers it with 429."""


class RateLimiter:
    def __init__(self, sessions: sessionmaker[Session], name: str, rate: float, burst: int,
                 clock: Callable[[], float] = time.time):
        self.sessions, self.name, self.rate, self.burst, self.clock = sessions, name, rate, burst, clock
        self._lock = threading.Lock()
        self._takes = 0

    def take(self, key: object) -> None:
        full, now = float(self.burst), self.clock()
        with self._lock, self.sessions.begin() as s:
            b = s.get(RateBucket, f"{self.name}:{key}")
            if b is None:
                b = RateBucket(key=f"{self.name}:{key}", tokens=full, at=now)
                s.add(b)
            b.tokens = min(full, b.tokens + max(0.0, now - b.at) * self.rate)  # a clock set back refills nothing
            b.at = now
            if b.tokens < 1.0:
                raise RateLimited(f"{self.rate:g} per second, bursts of {self.burst}")
            b.tokens -= 1.0
            self._takes += 1
            if self._takes % PRUNE_EVERY == 0:
                s.execute(delete(RateBucket).where(RateBucket.key.startswith(f"{self.name}:"),
                                                   RateBucket.at < now - full / self.rate))
