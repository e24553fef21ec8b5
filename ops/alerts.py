"""Alert automations: Prefect automations that send through a Prefect notification block.

`ingest-ops install-automations --notify-block <block-type-slug>/<name>` installs one
automation per alert, each with a `SendNotification` action on the named block (a Custom
Webhook, Slack Webhook, Microsoft Teams, email... any block with the `notify` capability):

- failed or crashed flow runs of the product's flows (`ingest-*`, `process-items`,
  `process-item`);
- `ingest.source.missing`: an expected daily file did not land (the health flow);
- `ingest.source.stale`: a source landed nothing new for its freshness limit (health);
- `ingest.source.connection-failed`: a source's `test_connection` failed or timed out (health).

The server sends the notifications (its automations service loads the block), so alerts go
out even when no worker runs. Installing is idempotent: an automation of the same name is
updated in place (extra copies deleted), never duplicated. The notification block is
checked before anything is changed.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.automations import Automation, AutomationCore
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from blocks.core.errors import ConfigError
from flows.health import MISSING_EVENT
from flows.source_checks import CONNECTION_FAILED_EVENT, STALE_EVENT

FAILED_RUNS = "ingest: alert on failed or crashed runs"
MISSING_FILES = "ingest: alert on missing files"
STALE_SOURCES = "ingest: alert on stale sources"
CONNECTION_FAILED = "ingest: alert on failed connection checks"
# The product's flows: ingest-<source>, ingest-health/-backfill/-retention/..., and the
# processor job's process-items and process-item (flows/processor.py).
PRODUCT_FLOWS = ["ingest-*", "process-items", "process-item"]

_RUN_BODY = (
    "Flow run {{ flow.name }}/{{ flow_run.name }} entered {{ flow_run.state.name }} at "
    "{{ flow_run.state.timestamp }}.\n"
    "Message: {{ flow_run.state.message }}\n"
    "Parameters: {{ flow_run.parameters }}\n"
    "Flow run: {{ flow_run|ui_url }}"
)
_EVENT_BODY = "{{ event.payload.message }}\nEvent: {{ event.event }} at {{ event.occurred }}"


def notification_block_id(ref: str, option: str = "--notify-block") -> UUID:
    """The block document id of a saved notification block named `<slug>/<name>`;
    ConfigError naming `option` when it is malformed, missing or not a notification block."""
    from prefect.blocks.abstract import NotificationBlock
    from prefect.blocks.core import Block

    from blocks.core import block_lookup

    if not isinstance(ref, str) or ref.count("/") != 1 or not all(ref.split("/")):
        raise ConfigError(option, f"{ref!r}: expected '<block-type-slug>/<block-name>'")
    block_lookup.install()
    try:
        block = Block.load(ref)
    except Exception as exc:  # noqa: BLE001 (one clear line)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConfigError(option, f"cannot load block {ref!r}: {first}") from None
    if not isinstance(block, NotificationBlock):
        raise ConfigError(
            option,
            f"{ref!r} is a {type(block).__name__} block, not a notification block "
            "(e.g. custom-webhook/<name>, slack-webhook/<name>)",
        )
    block_id = getattr(block, "_block_document_id", None)
    if block_id is None:
        raise ConfigError(option, f"{ref!r} has no saved block document")
    return block_id


def alert_automations(block_document_id: UUID) -> list[Automation]:
    """The alert automations (not saved), each notifying through the block."""

    def notify(subject: str, body: str) -> list[Any]:
        return [SendNotification(block_document_id=block_document_id, subject=subject, body=body)]

    def on_event(name: str, description: str, event: str, subject: str) -> Automation:
        return Automation(
            name=name,
            description=description,
            trigger=EventTrigger(
                expect={event},
                match=ResourceSpecification({"prefect.resource.id": "ingest.source.*"}),
                for_each={"prefect.resource.id"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=notify(subject, _EVENT_BODY),
        )

    source = "{{ event.resource['prefect.resource.name'] }}"
    return [
        Automation(
            name=FAILED_RUNS,
            description="Notifies when a run of an ingest-*, process-items or process-item "
            "flow ends Failed or Crashed.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
                match_related=ResourceSpecification(
                    {"prefect.resource.role": "flow", "prefect.resource.name": PRODUCT_FLOWS}
                ),
                for_each={"prefect.resource.id"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=notify(
                "ingest: {{ flow.name }}/{{ flow_run.name }} {{ flow_run.state.name }}", _RUN_BODY
            ),
        ),
        on_event(
            MISSING_FILES,
            "Notifies when the health flow finds an expected daily file missing.",
            MISSING_EVENT,
            f"ingest: file missing for {source}",
        ),
        on_event(
            STALE_SOURCES,
            "Notifies when a source landed nothing new within its freshness limit.",
            STALE_EVENT,
            f"ingest: {source} is stale",
        ),
        on_event(
            CONNECTION_FAILED,
            "Notifies when a source's connection check fails or times out.",
            CONNECTION_FAILED_EVENT,
            f"ingest: connection check failed for {source}",
        ),
    ]


def install_alerts(notify_block: str) -> dict[str, str]:
    """Create or update the alert automations; returns name -> automation id.

    The block is checked first: a bad `notify_block` changes nothing."""
    from prefect.client.orchestration import get_client

    block_id = notification_block_id(notify_block)
    installed: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for wanted in alert_automations(block_id):
            # owner_resource: the update endpoint refuses the field (as Automation.update)
            core = AutomationCore(**wanted.model_dump(exclude={"id", "owner_resource"}))
            existing = client.read_automations_by_name(wanted.name)
            if existing:
                keep, *extra = sorted(existing, key=lambda a: str(a.id))
                client.update_automation(keep.id, core)
                for automation in extra:  # copies from a race or an older install
                    client.delete_automation(automation.id)
                installed[wanted.name] = str(keep.id)
            else:
                installed[wanted.name] = str(client.create_automation(core))
    return installed
