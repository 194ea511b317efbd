"""Prometheus metrics on an optional localhost HTTP port (prometheus-client's exposition).

RPC latency and errors are observed by the servicer; per-vector interrupt
counts are read from the inventory when Prometheus scrapes, so they cost
nothing between scrapes. The port is served by one thread (MetricsHttp),
not one per connection: anyone on the host can connect to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from msixd.errors import MsixdError
from msixd.rpc.httpserve import MetricsHttp
from msixd.service.inventory import Inventory
from msixd.service.irqbalance import LinkState
from msixd.service.leases import Leases
from msixd.service.reconciler import Reason, Reconciler, VectorState

log = structlog.get_logger(__name__)


class VectorCollector(Collector):
    def __init__(self, inventory: Inventory) -> None:
        self._inventory = inventory

    def collect(self) -> Iterator[CounterMetricFamily]:
        interrupts = CounterMetricFamily(
            "msixd_vector_interrupts", "Interrupts counted per MSI-X vector (all CPUs)", labels=["bdf", "vector", "irq"]
        )
        try:
            devices = self._inventory.list_devices(include_vectors=True)
        except MsixdError as err:
            log.warning("metrics: inventory failed", error=str(err))
            devices = []
        for device in devices:
            for vector in device.vectors:
                interrupts.add_metric([device.pci.bdf, str(vector.index), str(vector.irq)], vector.total_count)
        yield interrupts


class PolicyCollector(Collector):
    """The reconciler's counters, read when Prometheus scrapes."""

    def __init__(self, reconciler: Reconciler) -> None:
        self._reconciler = reconciler

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._reconciler.stats
        corrections = CounterMetricFamily("msixd_policy_corrections", "Placements the policy reconciler made, by "
                                          "reason (start, apply, hotplug, new_vector, drift)", labels=["reason"])
        for reason in Reason:
            corrections.add_metric([reason.value], stats.corrections.get(reason.value, 0))
        yield corrections
        yield CounterMetricFamily("msixd_policy_failures", "Placements the kernel refused", value=stats.failures)
        yield CounterMetricFamily("msixd_policy_drift_observed", "Moves by someone else that an observing rule "
                                  "reported", value=stats.drift_observed)
        yield CounterMetricFamily("msixd_policy_passes", "Reconcile passes", value=stats.passes)
        yield CounterMetricFamily("msixd_policy_pass_seconds", "Time spent in reconcile passes",
                                  value=stats.pass_seconds_total)
        yield CounterMetricFamily("msixd_policy_uevents", "Kernel uevents received", value=stats.uevents)
        states = GaugeMetricFamily("msixd_policy_vectors", "Vectors the rules select, by state", labels=["state"])
        counts = self._reconciler.vector_states()
        for vector_state in VectorState:
            states.add_metric([vector_state.value], counts.get(vector_state.value, 0))
        yield states
        link = self._reconciler.irqbalance_status()
        if link is not None:
            irqbalance = GaugeMetricFamily("msixd_irqbalance_link", "The link to irqbalance: 1 for its state",
                                           labels=["state"])
            for state in LinkState:
                irqbalance.add_metric([state.value], 1 if link.state is state else 0)
            yield irqbalance
            yield GaugeMetricFamily("msixd_irqbalance_banned_irqs", "IRQs msixd has banned from irqbalance",
                                    value=len(link.wanted & link.banned))


class LeaseCollector(Collector):
    """Leases granted, held and revoked, per device: read from the table of leases at each scrape."""

    def __init__(self, leases: Leases) -> None:
        self._leases = leases

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        granted = CounterMetricFamily("msixd_leases_granted", "Leases granted", labels=["bdf"])
        held = GaugeMetricFamily("msixd_leases_held", "Leases held now", labels=["bdf"])
        revoked = CounterMetricFamily("msixd_leases_revoked", "Leases revoked (by an admin or by msixd)",
                                      labels=["bdf"])
        for bdf, stats in self._leases.stats().items():
            granted.add_metric([bdf], stats.granted)
            held.add_metric([bdf], stats.held)
            revoked.add_metric([bdf], stats.revoked)
        yield from (granted, held, revoked)


class Metrics:
    def __init__(self, inventory: Inventory, leases: Leases | None = None,
                 reconciler: Reconciler | None = None) -> None:
        self.registry = CollectorRegistry()
        self.rpc_seconds = Histogram(
            "msixd_rpc_duration_seconds", "Time to answer an RPC", ["rpc"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.rpc_errors = Counter(
            "msixd_rpc_errors", "RPCs answered with an error, by code", ["code"], registry=self.registry
        )
        self.affinity_changes = Counter("msixd_affinity_changes", "Vector placements applied", registry=self.registry)
        self.registry.register(VectorCollector(inventory))
        if leases is not None:
            self.registry.register(LeaseCollector(leases))
        if reconciler is not None:
            self.registry.register(PolicyCollector(reconciler))

    def observe(self, rpc: str, code: str, seconds: float) -> None:
        if rpc != "Watch":  # a stream's length is the client's choice, not a latency
            self.rpc_seconds.labels(rpc).observe(seconds)
        if code != "OK":
            self.rpc_errors.labels(code).inc()

    def serve(self, listen: str, max_connections: int = 16) -> MetricsHttp:
        """Start serving on host:port; raises MsixdError when the address cannot be bound."""
        server = MetricsHttp(listen, self.registry, max_connections)
        server.start()
        return server
