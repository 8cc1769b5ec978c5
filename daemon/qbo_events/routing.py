"""Which instances a change goes to: the realm and resource table built from the config."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from qbo_events.config import Config
from qbo_events.events import Change, Event, make_event
from qbo_events.quickbooks.resources import object_type


class Routed(NamedTuple):
    events: list[Event]
    unknown: int  # changes of a realm no webhook-taking instance serves
    unsubscribed: int  # changes of a served realm whose instances' resource lists all lack them


class Routes:
    """Webhook fan-out: realm -> instances taking webhooks, each with its resource filter."""

    def __init__(self, config: Config) -> None:
        self._by_realm: dict[str, list[tuple[str, frozenset[str] | None]]] = {}
        # Realms an instance polls: QuickBooks may send their webhooks too, but they are known.
        self._polled = frozenset(i.realm_id for i in config.instances if i.polls and i.realm_id)
        for inst in config.instances:
            # No realm: a company not connected yet, whose webhooks cannot be told apart.
            if not inst.takes_webhooks or not inst.realm_id:
                continue
            # An instance with notifications off gets nothing: its events could never leave.
            # Its realm is still known, so what it is sent counts as unsubscribed, not unknown.
            if not inst.event.notification.enabled:
                self._by_realm.setdefault(inst.realm_id, [])
                continue
            urls = inst.event.poller.urls
            wanted = frozenset(inst.event.poller.resources) if urls else None
            self._by_realm.setdefault(inst.realm_id, []).append((inst.name, wanted))

    def serves(self, realm_id: str) -> bool:
        return realm_id in self._by_realm

    def polled_only(self, realm_id: str) -> bool:
        """Served here, but by polling alone: its webhooks are dropped on purpose."""
        return realm_id in self._polled and realm_id not in self._by_realm

    def route(self, changes: Iterable[Change]) -> Routed:
        """The events of these changes, with the changes that reached no instance counted."""
        events: list[Event] = []
        unknown = unsubscribed = 0
        for change in changes:
            targets = self._by_realm.get(change.realm_id)
            if targets is None:
                unknown += 1
                continue
            kind = object_type(change.entity)
            mine = [
                make_event(name, kind, change)
                for name, wanted in targets
                if wanted is None or kind in wanted
            ]
            # Expected with a resource list, and always so for an entity outside the 22
            # (ChangeOrder, Estimate) unless some instance of the realm takes everything.
            if not mine:
                unsubscribed += 1
            events += mine
        return Routed(events, unknown, unsubscribed)

    def events(self, changes: Iterable[Change]) -> tuple[list[Event], int]:
        """The events of these changes, and how many changes had no realm served here."""
        routed = self.route(changes)
        return routed.events, routed.unknown


def poll_events(instance: str, resource: str, changes: Sequence[Change]) -> list[Event]:
    return [make_event(instance, resource, change) for change in changes]
