"""Processor jobs on Kubernetes, checked without a cluster:

- every job variable of every kubernetes-pool deployment (`prefect.processor.yaml`, and
  the `k8s` pool definition in `prefect.yaml`) is a variable of prefect-kubernetes'
  default base job template (`KubernetesWorker`), with a value of a valid type (jsonschema,
  as strict as Prefect's server and unknown keys refused);
- the `process-items` and `process-item` deployments match their flows and events: their
  trigger parameters, rendered the way Prefect's server renders them for a sample
  `ingest.items.landed` / `ingest.item.landed` event, are the flow's parameters with the
  right types (`items` a list of item payloads, not a string);
- the processor flows' path and command checks refuse what an event must not make them
  run on.

tests/test_processor_e2e.py runs the same deployments on a process pool standing in for
the cluster.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prefect.utilities.schema_tools import validate as prefect_validate
from prefect_kubernetes.worker import KubernetesWorker

from blocks.core.errors import ConfigError
from blocks.core.events import ITEM_LANDED, ITEMS_LANDED, batch_payloads
from flows.processor import process_item, process_items, render_command, resolve_landed

ROOT = Path(__file__).resolve().parents[1]
K8S_TYPE = "kubernetes"


def k8s_variables_schema() -> dict[str, Any]:
    template = KubernetesWorker.get_default_base_job_template()
    assert KubernetesWorker.type == K8S_TYPE
    return template["variables"]


def job_variable_errors(job_variables: dict[str, Any], variables: dict[str, Any]) -> list[str]:
    """Unknown keys and values of a wrong type, one message each (empty: valid)."""
    strict = {**copy.deepcopy(variables), "additionalProperties": False}
    strict.pop("required", None)  # a deployment may leave a variable to the pool
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '<job_variables>'}: {e.message}"
        for e in jsonschema.Draft7Validator(strict).iter_errors(job_variables)
    ]
    # And what Prefect's server checks when the deployment is created.
    errors += [
        f"prefect: {e.message}"
        for e in prefect_validate(job_variables, copy.deepcopy(variables), ignore_required=True)
    ]
    return errors


def k8s_deployments() -> list[tuple[str, dict[str, Any]]]:
    """(where, job_variables) of every kubernetes-pool deployment and pool definition."""
    processor = yaml.safe_load((ROOT / "prefect.processor.yaml").read_text())
    main = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    found = [
        (f"prefect.processor.yaml:{d['name']}", d["work_pool"].get("job_variables") or {})
        for d in processor["deployments"]
        if d["work_pool"]["name"] == "ingest-k8s"
    ]
    k8s_pool = main["definitions"]["work_pools"]["k8s"]
    found.append(("prefect.yaml:definitions.work_pools.k8s", k8s_pool["job_variables"]))
    found += [
        (f"prefect.yaml:{d['name']}", d["work_pool"].get("job_variables") or {})
        for d in main["deployments"]
        if d.get("work_pool", {}).get("name") == k8s_pool["name"]
    ]
    return found


def test_k8s_job_variables_fit_prefect_kubernetes_template():
    variables = k8s_variables_schema()
    found = k8s_deployments()
    for name in ("process-item", "process-items"):
        assert any(where.endswith(f":{name}") for where, _ in found), (name, found)
    for where, job_variables in found:
        assert job_variables, where
        assert job_variable_errors(job_variables, variables) == [], where
        assert job_variables.keys() <= variables["properties"].keys(), where


def test_the_check_refuses_typos_and_bad_types():
    variables = k8s_variables_schema()
    good = dict(k8s_deployments()[0][1])
    assert job_variable_errors(good, variables) == []
    typo = {**good, "imagePullPolicy": "Always"}  # the manifest's spelling, not the variable
    assert any("imagePullPolicy" in e for e in job_variable_errors(typo, variables))
    for key, bad in (
        ("namespace", 5),
        ("image_pull_policy", "Sometimes"),
        ("backoff_limit", -1),
        ("env", "A=1"),
        ("finished_job_ttl", "1h"),
    ):
        errors = job_variable_errors({**good, key: bad}, variables)
        assert any(key in e or repr(bad) in e for e in errors), (key, errors)


PROCESSOR_DEPLOYMENTS = [
    # name, entrypoint, flow, event it triggers on
    ("process-items", "flows.processor:process_items", process_items, ITEMS_LANDED),
    ("process-item", "flows.processor:process_item", process_item, ITEM_LANDED),
]


def processor_deployment(name: str) -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "prefect.processor.yaml").read_text())
    (dep,) = [d for d in spec["deployments"] if d["name"] == name]
    return dep


@pytest.mark.parametrize(("name", "entrypoint", "flow", "event"), PROCESSOR_DEPLOYMENTS)
def test_processor_deployment_matches_its_flow(name, entrypoint, flow, event):
    """The deployment's parameters are its flow's, its required ones are set, and the
    trigger expects the event the pipeline emits for that `event_per` mode."""
    dep = processor_deployment(name)
    assert dep["entrypoint"] == entrypoint
    flow_params = set(flow.parameters.properties)
    (trigger,) = dep["triggers"]
    assert trigger["expect"] == [event]
    assert set(dep["parameters"]) | set(trigger["parameters"]) <= flow_params
    assert set(flow.parameters.required) <= set(dep["parameters"]) | set(trigger["parameters"])


def test_both_processor_deployments_share_parameters_and_job_variables():
    batch, item = processor_deployment("process-items"), processor_deployment("process-item")
    assert batch["parameters"] == item["parameters"]
    assert batch["work_pool"] == item["work_pool"]
    assert batch["triggers"][0]["match"] == item["triggers"][0]["match"]


def render_trigger_parameters(parameters: dict[str, Any], event: Any) -> dict[str, Any]:
    """`parameters` as Prefect's server renders a deployment trigger's for `event`
    (RunDeployment.render_parameters: v1 templates upgraded, then hydrated with Jinja)."""
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    parameters = copy.deepcopy(parameters)
    RunDeployment._upgrade_v1_templates(parameters)
    return hydrate(
        parameters,
        HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"event": event}),
    )


def _event(name: str, payload: dict[str, Any]):
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent(
        occurred="2026-12-02T10:00:00Z",
        event=name,
        resource={"prefect.resource.id": "ingest.source.partner-drop"},
        payload=payload,
        id="00000000-0000-0000-0000-000000000001",
    )


def _item(name: str) -> dict[str, Any]:
    return {
        "landed_path": f"/data/ingest/landing/partner-drop/2026/12/02/{name}",
        "sha256": "a" * 64,
        "size": 3,
        "source": "partner-drop",
        "name": name,
    }


def test_the_batch_trigger_passes_the_items_as_a_list():
    """`{{ event.payload['items'] }}` reaches the flow as the list of item payloads (HTML-ish
    characters intact: Prefect's `tojson` escapes them inside the JSON); `payload.items`
    would be the dict's `items` method, which Prefect fails to render."""
    items = [_item("a.csv"), _item("b&b's <1>.csv"), _item('q"uote.bin')]
    (payload,) = batch_payloads(items)
    (trigger,) = processor_deployment("process-items")["triggers"]
    rendered = render_trigger_parameters(trigger["parameters"], _event(ITEMS_LANDED, payload))
    assert rendered == {"items": items}
    assert process_items.parameters.properties["items"]["type"] == "array"
    from prefect.utilities.schema_tools.hydration import InvalidJinja

    with pytest.raises(InvalidJinja, match="builtin_function_or_method"):
        render_trigger_parameters(
            {"items": "{{ event.payload.items }}"}, _event(ITEMS_LANDED, payload)
        )


def test_the_item_trigger_passes_the_items_fields():
    item = _item("a b.csv")
    (trigger,) = processor_deployment("process-item")["triggers"]
    rendered = render_trigger_parameters(trigger["parameters"], _event(ITEM_LANDED, item))
    assert rendered == {k: item[k] for k in ("landed_path", "sha256", "source", "name")}


def test_resolve_landed_refuses_what_is_not_a_landed_file(tmp_path: Path):
    root = tmp_path / "landing"
    (root / "src").mkdir(parents=True)
    item = root / "src" / "a b.csv"
    item.write_text("x\n")
    outside = tmp_path / "secret.txt"
    outside.write_text("no\n")
    (root / "src" / "link.csv").symlink_to(outside)
    assert resolve_landed(str(item), str(root)) == item
    assert resolve_landed(item.as_uri(), str(root)) == item  # file:// URI, %20 decoded
    for bad, why in (
        ("", "is empty"),
        ("src/a b.csv", "not an absolute path"),
        (str(outside), "not under landing_root"),
        (str(root / "src" / "link.csv"), "not under landing_root"),
        (str(root / "src" / ".." / ".." / "secret.txt"), "not under landing_root"),
        (str(root / "src" / "missing.csv"), "not an existing file"),
        (str(root / "src"), "not an existing file"),
        ("s3://bucket/key.csv", "only local paths and file:// URIs"),
        ("file://otherhost/data/x.csv", "only local paths"),
    ):
        with pytest.raises(ConfigError, match=why) as info:
            resolve_landed(bad, str(root))
        assert info.value.where == "landed_path"


def test_render_command_keeps_one_argument_per_item():
    argv = render_command(
        ["proc", "--in", "{path}", "--tag={source}/{name}"],
        {"path": "/l/a; rm -rf / $(x) {name}.csv", "source": "s", "name": "n"},
    )
    assert argv == ["proc", "--in", "/l/a; rm -rf / $(x) {name}.csv", "--tag=s/n"]
    for bad in ([], ["ok", ""], "proc {path}"):
        with pytest.raises(ConfigError, match="command"):
            render_command(bad, {})  # type: ignore[arg-type]
