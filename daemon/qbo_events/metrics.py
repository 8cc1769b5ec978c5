"""The Prometheus metrics, one registry per daemon, names prefixed `qbo_events_`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric the daemon exposes; components take this and count into it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_accepted = Counter(
            "qbo_events_events_accepted",
            "Events newly stored in the outbox",
            ["source"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "qbo_events_events_duplicate", "Events dropped as already seen", ["source"], registry=r
        )
        self.deliveries = Counter(
            "qbo_events_deliveries",
            "Delivery attempts by outcome (delivered, retry, dead)",
            ["outcome"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "qbo_events_delivery_latency_seconds",
            "From acceptance into the outbox to a 2xx from the receiver",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        # Per callback host: bounded by the configured callbacks (host[:port], no path).
        self.delivery_attempt_seconds = Histogram(
            "qbo_events_delivery_attempt_seconds",
            "Duration of one delivery attempt, request to answer or failure, by callback host",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.delivery_attempts = Counter(
            "qbo_events_delivery_attempts",
            "Delivery attempts by callback host and outcome (2xx, 3xx, 4xx, 5xx, timeout, error)",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.endpoint_state = Gauge(
            "qbo_events_endpoint_state",
            "The instance's callback endpoint: 0 healthy, 1 failing, 2 paused (probes only)",
            ["instance"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "qbo_events_outbox_depth", "Undelivered events in the outbox", registry=r
        )
        self.outbox_commit_seconds = Gauge(
            "qbo_events_outbox_commit_seconds",
            "Moving average of the outbox's commit times (fsync included)",
            registry=r,
        )
        self.outbox_slow_storage = Gauge(
            "qbo_events_outbox_slow_storage",
            "1 while commits run on a helper thread because storage is slow",
            registry=r,
        )
        self.webhook_requests = Counter(
            "qbo_events_webhook_requests", "Webhook requests by HTTP status", ["status"], registry=r
        )
        self.webhook_unknown_realm = Counter(
            "qbo_events_webhook_unknown_realm_entities",
            "Webhook entities for realms no instance serves",
            registry=r,
        )
        self.webhook_unsubscribed = Counter(
            "qbo_events_webhook_unsubscribed_entities",
            "Webhook entities of a served realm that no instance's resource list takes",
            registry=r,
        )
        self.budget_stretch = Gauge(
            "qbo_events_poll_interval_stretch",
            "Factor the monthly call budget puts on poll intervals, by instance mode "
            "(hybrid, polling); +Inf while polling waits for the month to turn",
            ["mode"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "qbo_events_poll_duration_seconds",
            "Duration of one poll of one resource (per instance detail: /status)",
            ["resource"],
            registry=r,
        )
        self.poll_lag = Gauge(
            "qbo_events_poll_lag_seconds",
            "Seconds the resource's oldest cursor, over all instances, trails now",
            ["resource"],
            registry=r,
        )
        self.api_calls = Counter(
            "qbo_events_quickbooks_api_calls",
            "QuickBooks API calls by status",
            ["status"],
            registry=r,
        )
        self.quickbooks_calls = Counter(
            "qbo_events_quickbooks_calls",
            "QuickBooks requests sent, by metered kind (cdc, query, read, batch, token)",
            ["kind"],
            registry=r,
        )
        self.quickbooks_calls_month = Gauge(
            "qbo_events_quickbooks_calls_month",
            "QuickBooks requests of all instances this calendar month (UTC), kept over restarts",
            registry=r,
        )
        self.quickbooks_calls_projection = Gauge(
            "qbo_events_quickbooks_calls_month_projected",
            "This month's total if requests go on at the month's rate so far",
            registry=r,
        )
        self.refresh_token_expiry = Gauge(
            "qbo_events_refresh_token_expiry_seconds",
            "Seconds until the instance's refresh token reaches its hard expiry (a new connect "
            "is needed by then); absent while unknown",
            ["instance"],
            registry=r,
        )
        self.needs_reauthorization = Gauge(
            "qbo_events_needs_reauthorization",
            "1 when the instance's refresh token was refused (invalid_grant)",
            ["instance"],
            registry=r,
        )
