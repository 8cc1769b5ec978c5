"""The change generator: random creates, updates, deletes, voids, merges and emails at a steady
rate."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

from . import catalog
from .company import ChangeRecord, Company

# How often each operation is picked, where the entity allows it.
_WEIGHTS = {"Create": 4, "Update": 4, "Delete": 1.5, "Void": 1, "Merge": 0.5, "Emailed": 0.5}


def random_change(company: Company, rng: random.Random) -> list[ChangeRecord]:
    """One change to a random entity; falls back to Create when the pick has no target."""
    entity = rng.choice(catalog.ENTITIES)
    allowed = catalog.operations(entity)
    operation = rng.choices(allowed, weights=[_WEIGHTS[o] for o in allowed])[0]
    try:
        return company.apply(entity, operation)
    except ValueError:
        return company.apply(entity, "Create")


class ChangeGenerator:
    """Makes `rate` changes per second across the companies; 0 pauses it. `rate` may change live."""

    def __init__(
        self,
        companies: Callable[[], Sequence[Company]],
        rng: random.Random,
        rate: float,
    ) -> None:
        self._companies = companies
        self._rng = rng
        self.rate = rate
        self.made = 0
        self._changed = asyncio.Event()

    def set_rate(self, rate: float) -> None:
        self.rate = max(0.0, rate)
        self._changed.set()

    async def run_forever(self) -> None:
        """Runs until cancelled; the caller's task group owns it."""
        due = 0.0
        while True:
            self._changed.clear()
            if self.rate <= 0:
                await self._changed.wait()
                continue
            # High rates tick every 10 ms and make several changes a tick.
            interval = max(1.0 / self.rate, 0.01)
            try:
                async with asyncio.timeout(interval):
                    await self._changed.wait()
                continue  # the rate changed: start a fresh interval
            except TimeoutError:
                pass
            due += interval * self.rate
            companies = self._companies()
            while due >= 1.0 and companies:
                due -= 1.0
                random_change(self._rng.choice(companies), self._rng)
                self.made += 1
