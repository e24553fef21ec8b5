"""Prefect automations the product relies on, created idempotently on a self-hosted server.

`crash_unresponsive_runs`: when a worker host dies, or a worker is stopped in the middle of
a run, the flow-run process goes away without reporting, and the server would show the run
`Running` forever (measured: a SIGTERM to `prefect worker start` takes the run's process
down with it, the run stays `Running`). Flow runs emit `prefect.flow-run.heartbeat` every
`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (default 180, minimum 30); this proactive
trigger marks a run `Crashed` when its start (`Running`) or a heartbeat is not followed
by another heartbeat or a final state within `grace_seconds`, which frees the
deployment's concurrency slot and lets the health flow and `ingest-ops sources` see the
failure. This is the recipe Prefect documents for self-hosted servers, plus the `Running`
start (Prefect Cloud ships it as a managed automation).
"""

from __future__ import annotations

from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

CRASH_UNRESPONSIVE = "ingest: crash unresponsive flow runs"


def crash_unresponsive_runs(grace_seconds: int = 240) -> Automation:
    """The automation (not saved). `grace_seconds` must exceed the heartbeat frequency."""
    return Automation(
        name=CRASH_UNRESPONSIVE,
        description="Marks a flow run Crashed when its heartbeats stop (worker or host gone).",
        trigger=EventTrigger(
            # Running too: a run killed before its first heartbeat got out (measured: a
            # worker stopped within a second of the run starting) would otherwise never
            # start the clock and stay Running forever.
            after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=grace_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {grace_seconds} s: the worker or its host stopped.",
            )
        ],
    )


def install(grace_seconds: int = 240) -> dict[str, str]:
    """Create or replace the product's automations; returns name -> automation id."""
    if grace_seconds < 31:
        raise ValueError("grace_seconds: must exceed the heartbeat frequency (30 s minimum)")
    wanted = crash_unresponsive_runs(grace_seconds)
    while True:  # replace every copy, so reinstalling with a new grace leaves one
        try:
            Automation.read(name=wanted.name).delete()
        except ValueError:  # none left
            break
    created = wanted.create()
    return {created.name: str(created.id)}
