"""The newcomer's two commands.

- README's test command is the one `.ci/run` runs, character for character.
- `./quickstart.sh --serve` (`python -m ops.demo --serve`, the venv being there already):
  a REAL `prefect server start` on a free port under a temp INGEST_HOME, the demo
  deployment on the API with prefect.yaml's schedule, its first run lands the three demo
  files, the UI answers at the printed URL, and SIGINT stops the process and the server.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.settings import PREFECT_API_URL, temporary_settings

from ops import demo
from tests.conftest import server_missing
from tests.test_ops_e2e import free_port, wait_http

ROOT = Path(__file__).resolve().parents[1]


def fenced_commands(markdown: str, heading: str) -> list[str]:
    """The lines of the ```bash blocks in the section under `heading`."""
    section = markdown.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text()
    quick = fenced_commands(readme, "## Quick start (fresh machine, one command)")
    tests = fenced_commands(readme, "## Tests (one command)")
    assert quick[0] == "./quickstart.sh"
    assert len(tests) == 1, f"one test command, not {tests}"
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert tests[0] in ci_lines, f"{tests[0]!r} is not a line of .ci/run"


def test_served_deployment_matches_prefect_yaml():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    entry = next(d for d in spec["deployments"] if d["name"] == demo.DEMO_DEPLOYMENT)
    assert entry["entrypoint"] == demo.DEMO_ENTRYPOINT
    assert entry["parameters"] == {"source_block": demo.DEMO_BLOCK}
    assert dt.timedelta(seconds=entry["schedules"][0]["interval"]) == demo.DEMO_INTERVAL
    assert entry["description"] == demo.DEMO_DESCRIPTION
    assert entry["tags"] == demo.DEMO_TAGS
    assert entry["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.prefect_server
@pytest.mark.timeout(600)
def test_quickstart_serve_shows_the_demo_in_the_ui(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INGEST_"))}
    env.update(INGEST_HOME=str(tmp_path / "home"), INGEST_DEMO_PORT=str(port), DO_NOT_TRACK="1")
    out = tmp_path / "out.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.demo", "--serve", str(tmp_path / "inbox")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_default_sigint, start_new_session=True,
        )  # fmt: skip
    ui = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while "Prefect UI:" not in out.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(1)
        printed = re.search(r"^Prefect UI: (\S+)$", out.read_text(), flags=re.M)
        if printed is None:
            server_missing("prefect server start (quickstart --serve)", out.read_text()[-3000:])
        assert printed.group(1) == ui
        assert wait_http(f"{ui}/api/health", 30, proc)
        page = httpx.get(ui, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()

        with (
            temporary_settings({PREFECT_API_URL: f"{ui}/api"}),
            get_client(sync_client=True) as client,
        ):
            dep = client.read_deployment_by_name(f"ingest-local-folder/{demo.DEMO_DEPLOYMENT}")
            assert dep.entrypoint == demo.DEMO_ENTRYPOINT
            assert dep.parameters == {"source_block": demo.DEMO_BLOCK}
            assert [s.schedule.interval for s in dep.schedules] == [demo.DEMO_INTERVAL]
            assert all(s.active for s in dep.schedules) and not dep.paused
            landing = tmp_path / "home" / "landing" / "demo"
            deadline = time.monotonic() + 240
            states: list[str] = []
            while time.monotonic() < deadline:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        deployment_id=FlowRunFilterDeploymentId(any_=[dep.id])
                    )
                )
                states = [r.state.type.value for r in runs if r.state]
                if "COMPLETED" in states or {"FAILED", "CRASHED"} & set(states):
                    break
                time.sleep(2)
            assert "COMPLETED" in states, f"{states}\n{out.read_text()[-3000:]}"
        landed = sorted(p.name for p in landing.rglob("*.csv"))
        assert landed == [f"AXIS_RECON_2025011{d}.csv" for d in (0, 1, 2)]
        assert (tmp_path / "inbox" / "AXIS_RECON_20250110.csv").read_bytes() == next(
            landing.rglob("AXIS_RECON_20250110.csv")
        ).read_bytes()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0, out.read_text()[-3000:]
        assert "stopping the Prefect server" in out.read_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{ui}/api/health", timeout=5)
    finally:
        if proc.poll() is None:  # a failed assertion: still stop the server through it
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
