"""Quick start: land a demo folder with the local folder flow on embedded defaults.

`python -m ops.demo [FOLDER]` creates FOLDER (default ./demo/inbox) with a few CSV files
if it is empty, saves a Local Folder Source block named `demo-inbox` on the configured
Prefect API (Prefect's embedded SQLite API when none is configured), and runs the flow
twice with the default SQLite ledger and landing area under $INGEST_HOME (default
~/.ingest): the first run lands the files, the second lands nothing.

`python -m ops.demo --serve [FOLDER]` (`./quickstart.sh --serve`) shows the same in the
Prefect UI: it starts `prefect server start` on 127.0.0.1 (port $INGEST_DEMO_PORT, default
4200, or a free one when that is taken; PREFECT_HOME=$INGEST_HOME/prefect, its SQLite
database there), registers the block types, saves the demo block, serves prefect.yaml's
`local-folder-demo` deployment on its schedule (every 5 minutes, an overlapping run is
skipped) with a first run at once, prints the UI's URL, and runs until Ctrl-C or SIGTERM,
then stops the server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from blocks import IngestionQueue, Ledger, LocalFolderSource, QueueConsumer
from blocks.core.defaults import ingest_home
from flows.local_folder import ingest_local_folder

DEMO_BLOCK = "demo-inbox"
# prefect.yaml's demo deployment (tests/test_quickstart.py checks the two agree).
DEMO_DEPLOYMENT = "local-folder-demo"
DEMO_ENTRYPOINT = "flows.local_folder:ingest_local_folder"
DEMO_INTERVAL = dt.timedelta(seconds=300)
DEMO_DESCRIPTION = "Watched local folder (the quick start's demo-inbox block), every 5 minutes."
DEMO_TAGS = ["ingest", "local-folder"]


def make_demo_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return
    for day in ("20250110", "20250111", "20250112"):
        rows = "\n".join(f"{day},{i},{i * 7 % 13}" for i in range(100))
        (folder / f"AXIS_RECON_{day}.csv").write_text(f"date,id,amount\n{rows}\n")


def save_demo_block(folder: Path) -> None:
    make_demo_files(folder)
    LocalFolderSource(source_id="demo", directory=str(folder), pattern="*.csv").save(
        DEMO_BLOCK, overwrite=True
    )


def run_twice(folder: Path) -> int:
    save_demo_block(folder)
    first = ingest_local_folder(source_block=DEMO_BLOCK)
    second = ingest_local_folder(source_block=DEMO_BLOCK)
    queue = IngestionQueue()
    pending = QueueConsumer(Ledger(), "demo").pending_count("demo")
    for label, run in (("first run: ", first), ("second run:", second)):
        print(f"{label} landed={run['landed']} skipped={run['skipped']} failed={run['failed']}")
    print(f"landing area: {queue.landing_root}  queue messages waiting: {pending}")
    for path in sorted(queue.landing_root.rglob("*.csv")):
        print("  ", path.relative_to(queue.landing_root))
    print("See it in the Prefect UI: ./quickstart.sh --serve")
    return 0 if first["failed"] == 0 and second["landed"] == 0 else 1


def demo_port() -> int:
    """$INGEST_DEMO_PORT (default 4200) if free on 127.0.0.1, else any free port."""
    wanted = int(os.environ.get("INGEST_DEMO_PORT") or 4200)
    with socket.socket() as s:
        # As the server will: a port in TIME_WAIT after a previous run is free to bind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def start_server(prefect_home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_HOME": str(prefect_home)}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    env.pop("PREFECT_API_URL", None)
    log = open(prefect_home / "server.log", "ab")  # noqa: SIM115 (the child holds it)
    # Own session: the terminal's Ctrl-C reaches only this process, which stops the runner
    # first and then the server (a server gone first would fail the runner's last calls).
    return subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def wait_healthy(api: str, server: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def register_block_types() -> int:
    """`prefect block register -m blocks` in-process (sources whose extra is missing skip)."""
    from prefect.blocks.core import Block, InvalidBlockRegistration

    import blocks

    count = 0
    for _, cls in inspect.getmembers(blocks):
        if cls is not None and Block.is_block_class(cls):
            try:
                cls.register_type_and_schema()
                count += 1
            except InvalidBlockRegistration:
                pass
    return count


def serve_demo(folder: Path) -> int:
    from prefect import serve
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_UI_URL, temporary_settings

    prefect_home = ingest_home() / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    port = demo_port()
    ui = f"http://127.0.0.1:{port}"
    print(f"starting the Prefect server on {ui} (log: {prefect_home / 'server.log'})", flush=True)
    server = start_server(prefect_home, port)
    # SIGTERM (a supervisor) stops like Ctrl-C: runner first, then the server. SIGINT too
    # when started from a backgrounded shell, which starts its children with SIGINT ignored.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if not wait_healthy(f"{ui}/api", server, 180):
            log = (prefect_home / "server.log").read_text(errors="replace")[-3000:]
            print(f"the Prefect server did not start:\n{log}", file=sys.stderr)
            return 1
        settings = {PREFECT_API_URL: f"{ui}/api", PREFECT_UI_URL: ui, PREFECT_HOME: prefect_home}
        with temporary_settings(settings):
            count = register_block_types()
            save_demo_block(folder)
            deployment = ingest_local_folder.to_deployment(
                name=DEMO_DEPLOYMENT,
                interval=DEMO_INTERVAL,
                parameters={"source_block": DEMO_BLOCK},
                description=DEMO_DESCRIPTION,
                tags=DEMO_TAGS,
                concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy="CANCEL_NEW"),
            )
            # prefect.yaml's entrypoint: the flow is built by pipeline.source_flow, so the
            # one Prefect derives from the function's file would not import.
            deployment.entrypoint = DEMO_ENTRYPOINT
            deployment_id = deployment.apply()
            # A first run at once, so the UI shows a run without waiting 5 minutes.
            run_deployment(f"{ingest_local_folder.name}/{DEMO_DEPLOYMENT}", timeout=0)
            print(
                f"registered {count} block types, saved block {DEMO_BLOCK!r} ({folder})\n"
                f"serving {ingest_local_folder.name}/{DEMO_DEPLOYMENT} every "
                f"{int(DEMO_INTERVAL.total_seconds())} s, first run now; landing area "
                f"{IngestionQueue().landing_root}\n"
                f"Prefect UI: {ui}\n"
                f"deployment: {ui}/deployments/deployment/{deployment_id}\n"
                "Ctrl-C stops the deployment and the server.",
                flush=True,
            )
            # The server stops with us: pausing the schedule on the way out would only
            # leave the deployment paused in the UI at the next start.
            serve(deployment, pause_on_shutdown=False, print_starting_message=False)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the Prefect server", flush=True)
        stop_server(server)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="quickstart.sh", description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default="demo/inbox", help="demo input folder")
    parser.add_argument(
        "--serve", action="store_true", help="local Prefect server + UI serving the demo"
    )
    args = parser.parse_args(argv[1:])
    folder = Path(args.folder).absolute()
    return serve_demo(folder) if args.serve else run_twice(folder)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
