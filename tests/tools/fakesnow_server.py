"""Runs fakesnow's Snowflake HTTP server for the tests, with one narrow login patch.

Run with the fakesnow venv's Python (its pins clash with the product's):

    /work/tools/fakesnow/bin/python tests/tools/fakesnow_server.py --port P [--password PW]

What is patched, and why (everything else is fakesnow 0.12.1 as published):

- fakesnow's login response lacks `masterToken`, `validityInSeconds`,
  `masterValidityInSeconds` and `sessionId`; snowflake-connector-python 5.x refuses the
  login without them ("Missing response field: master token"). The wrapper adds them.
- fakesnow accepts any user/password. With `--password`, a login with another password gets
  the answer real Snowflake gives (code 390100, "Incorrect username or password was
  specified."), so the product's bad-credentials path runs through the real connector.

Prints `READY <port>` on stdout once the server listens.
"""

from __future__ import annotations

import argparse
import gzip
import json
import secrets

import fakesnow.server as fs_server
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_original_login = fs_server.login_request


def make_login(password: str | None):
    async def login_request(request: Request) -> JSONResponse:
        if password is not None:
            body = await request.body()
            if request.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            given = json.loads(body).get("data", {}).get("PASSWORD")
            if given != password:
                return JSONResponse(
                    {
                        "data": {"nextAction": "RETRY_LOGIN", "authnMethod": "PASSWORD"},
                        "code": "390100",
                        "message": "Incorrect username or password was specified.",
                        "success": False,
                    }
                )
        response = await _original_login(request)
        payload = json.loads(response.body)
        if payload.get("success"):
            data = payload["data"]
            data.setdefault("masterToken", secrets.token_urlsafe(32))
            data.setdefault("validityInSeconds", 3600)
            data.setdefault("masterValidityInSeconds", 14400)
            data.setdefault("sessionId", secrets.randbits(48))
        return JSONResponse(payload)

    return login_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", default=None)
    args = parser.parse_args()

    routes = [
        Route(r.path, make_login(args.password), methods=["POST"])
        if r.path == "/session/v1/login-request"
        else r
        for r in fs_server.routes
    ]
    app = Starlette(routes=routes)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)

    # uvicorn has no "started" callback: print READY from its startup hook.
    original_startup = server.startup

    async def startup(sockets=None):
        await original_startup(sockets=sockets)
        print(f"READY {args.port}", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run()


if __name__ == "__main__":
    main()
