"""Prometheus metrics for `ingest-ops metrics`: read at each scrape from the ledger (runs,
items, bytes, durations, queue backlog) and the Prefect API (runs skipped by the overlap
policy or by `ingest-ops pause`).

Counters are sums over the ledger's run rows (one row per pipeline pass, kept), so they
only grow while the ledger keeps its history; a run still `running` counts under its
state and adds its items when it finishes. Labels are the source id (`source`) and, for
Prefect skips, the deployment and its `source_block` parameter.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select

from blocks.core import ledger_schema as t
from blocks.core.ledger import Ledger

# Run durations: a quick API pull to hours-long file backfills.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

logger = logging.getLogger("ingest.metrics")


class IngestCollector(Collector):
    """Builds every metric from the ledger and the Prefect API when scraped."""

    def __init__(self, ledger: Ledger, prefect: bool = True) -> None:
        self.ledger = ledger
        self.prefect = prefect
        self._lock = threading.Lock()  # one scrape at a time on the ledger's engine

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._ledger_metrics()
            if self.prefect:
                yield from self._prefect_metrics()

    def _ledger_metrics(self) -> Iterator[Metric]:
        runs = t.runs
        by_state = CounterMetricFamily(
            "ingest_runs", "Pipeline runs in the ledger by final state.", labels=["source", "state"]
        )
        landed = CounterMetricFamily("ingest_items_landed", "Items landed.", labels=["source"])
        failed = CounterMetricFamily("ingest_items_failed", "Items failed.", labels=["source"])
        skipped = CounterMetricFamily(
            "ingest_items_skipped", "Items listed but already landed.", labels=["source"]
        )
        size = CounterMetricFamily("ingest_landed_bytes", "Bytes landed.", labels=["source"])
        duration = HistogramMetricFamily(
            "ingest_run_duration_seconds",
            "Duration of finished pipeline runs.",
            labels=["source"],
        )
        backlog = GaugeMetricFamily(
            "ingest_queue_backlog",
            "Queue messages not acknowledged yet (ready or claimed).",
            labels=["source"],
        )
        last_ok = GaugeMetricFamily(
            "ingest_last_success_timestamp_seconds",
            "End of the last completed run (Unix time).",
            labels=["source"],
        )
        with self.ledger.engine.connect() as conn:
            for source, state, n in conn.execute(
                select(runs.c.source, runs.c.status, func.count()).group_by(
                    runs.c.source, runs.c.status
                )
            ):
                by_state.add_metric([source, state], n)
            for source, n_landed, n_failed, n_skipped, n_bytes in conn.execute(
                select(
                    runs.c.source,
                    func.coalesce(func.sum(runs.c.landed), 0),
                    func.coalesce(func.sum(runs.c.failed), 0),
                    func.coalesce(func.sum(runs.c.skipped), 0),
                    func.coalesce(func.sum(runs.c.bytes), 0),
                ).group_by(runs.c.source)
            ):
                landed.add_metric([source], int(n_landed))
                failed.add_metric([source], int(n_failed))
                skipped.add_metric([source], int(n_skipped))
                size.add_metric([source], int(n_bytes))
            seconds: dict[str, list[float]] = defaultdict(list)
            for source, value in conn.execute(
                select(runs.c.source, runs.c.seconds).where(
                    runs.c.status != "running", runs.c.seconds.is_not(None)
                )
            ):
                try:
                    seconds[source].append(float(value))
                except ValueError:
                    continue
            for source, n in conn.execute(
                select(t.queue.c.source, func.count())
                .where(t.queue.c.status != "acked")
                .group_by(t.queue.c.source)
            ):
                backlog.add_metric([source], n)
            for source, finished in conn.execute(
                select(runs.c.source, func.max(runs.c.finished_at))
                .where(runs.c.status == "completed")
                .group_by(runs.c.source)
            ):
                if finished is not None:
                    last_ok.add_metric([source], finished.timestamp())
        for source, values in sorted(seconds.items()):
            buckets = [
                [floatToGoString(b), sum(1 for v in values if v <= b)] for b in DURATION_BUCKETS
            ]
            buckets.append(["+Inf", len(values)])
            duration.add_metric([source], buckets, sum(values))
        yield from (by_state, landed, failed, skipped, size, duration, backlog, last_ok)

    def _prefect_metrics(self) -> Iterator[Metric]:
        skipped = CounterMetricFamily(
            "ingest_runs_skipped",
            "Deployment runs cancelled before starting: reason 'overlap' (the deployment's "
            "concurrency limit, CANCEL_NEW) or 'paused' (ingest-ops pause).",
            labels=["deployment", "source_block", "reason"],
        )
        up = GaugeMetricFamily("ingest_prefect_api_up", "1 when the Prefect API answered.")
        try:
            counts = skipped_runs()
        except Exception as exc:  # noqa: BLE001 (the ledger's metrics are still worth serving)
            logger.warning("Prefect API not readable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for (deployment, block, reason), n in sorted(counts.items()):
            skipped.add_metric([deployment, block, reason], n)
        yield from (skipped, up)


def skipped_runs(page: int = 200) -> dict[tuple[str, str, str], int]:
    """{(flow/deployment, source_block parameter, reason): n} over the Cancelled flow runs
    the Prefect API keeps."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    from ops.cli import skip_reason

    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        deployments = {
            d.id: (
                f"{flows.get(d.flow_id, '?')}/{d.name}",
                str(d.parameters.get("source_block", "")),
            )
            for d in client.read_deployments()
        }
        offset = 0
        while True:
            batch = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["CANCELLED"]))
                ),
                limit=page,
                offset=offset,
            )
            for run in batch:
                reason = skip_reason(run)
                if reason is None:
                    continue
                name, block = deployments.get(run.deployment_id, ("?", ""))
                counts[(name, block, reason)] += 1
            if len(batch) < page:
                return dict(counts)
            offset += page


def registry(ledger: Ledger, prefect: bool = True) -> CollectorRegistry:
    """A registry with only the ingest metrics (no process or Python ones)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(IngestCollector(ledger, prefect))
    return reg


def serve(ledger: Ledger, host: str, port: int, prefect: bool = True) -> Any:
    """Serve /metrics on host:port in a background thread; returns (server, thread)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=registry(ledger, prefect))
