"""Processor jobs on Kubernetes, checked without a cluster:

- every job variable of every kubernetes-pool deployment (`prefect.processor.yaml`, and
  the `k8s` pool definition in `prefect.yaml`) is a variable of prefect-kubernetes'
  default base job template (`KubernetesWorker`), with a value of a valid type (jsonschema,
  as strict as Prefect's server and unknown keys refused);
- the `process-item` flow's path and command checks refuse what an event must not make it
  run on.

tests/test_processor_e2e.py runs the same deployment on a process pool standing in for
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
from flows.processor import process_item, render_command, resolve_landed

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
    assert any(where.endswith(":process-item") for where, _ in found), found
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


def test_process_item_deployment_matches_the_flow():
    """The deployment's parameters are the flow's, and the trigger passes the payload's
    landed path (the event `ingest.item.landed` as pipeline/engine emits it)."""
    spec = yaml.safe_load((ROOT / "prefect.processor.yaml").read_text())
    (dep,) = [d for d in spec["deployments"] if d["name"] == "process-item"]
    assert dep["entrypoint"] == "flows.processor:process_item"
    flow_params = set(process_item.parameters.properties)
    (trigger,) = dep["triggers"]
    assert trigger["expect"] == ["ingest.item.landed"]
    assert trigger["parameters"]["landed_path"] == "{{ event.payload.landed_path }}"
    assert set(dep["parameters"]) | set(trigger["parameters"]) <= flow_params
    assert set(process_item.parameters.required) <= set(dep["parameters"]) | set(
        trigger["parameters"]
    )


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
