"""marimo_rs notebook backend.

Started by the marimo_rs gateway (never by hand): serves ONE notebook with marimo's own
``create_asgi_app`` on a Unix socket inside the gateway's private (0700) directory. marimo's
auth is off: the gateway authenticates every request before it gets here.

The configuration arrives as JSON in ``argv[1]``. The gateway passes the identity of the user
(set by its auth or by the host's middleware) on the ``x-marimo-rs-user`` header, which only it
can set: it removes that header from client requests. This module turns it into ASGI
``scope["user"]`` / ``scope["meta"]`` so ``mo.app_meta().request.user`` sees it.
"""

import base64
import json
import os
import signal
import sys

USER_HEADER = b"x-marimo-rs-user"


def die_with_parent(parent_pid):
    """Ask Linux to SIGTERM us when the gateway dies, even by kill -9 (no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # not Linux, or no prctl: the gateway still kills us on shutdown
        pass
    if os.getppid() != parent_pid:  # the gateway died before prctl took effect
        sys.exit(0)


class Identity:
    """ASGI middleware: the gateway's identity header -> scope["user"], scope["meta"]."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers = scope.get("headers") or []
            raw = None
            kept = []
            for name, value in headers:
                if name == USER_HEADER:
                    raw = value
                else:
                    kept.append((name, value))
            if raw is not None:
                scope = dict(scope)
                scope["headers"] = kept
                try:
                    padded = raw + b"=" * (-len(raw) % 4)
                    identity = json.loads(base64.urlsafe_b64decode(padded))
                    name = str(identity.get("name", ""))
                    scope["user"] = {
                        "username": name,
                        "display_name": name,
                        "is_authenticated": True,
                    }
                    meta = identity.get("meta")
                    if isinstance(meta, dict):
                        scope["meta"] = meta
                except Exception:
                    pass
        await self.app(scope, receive, send)


def main():
    config = json.loads(sys.argv[1])
    die_with_parent(config["parent_pid"])

    import marimo
    import uvicorn

    options = config["marimo"]
    builder = marimo.create_asgi_app(token=None, **options)
    app = builder.with_app(path="", root=config["notebook"]).build()

    socket_path = config["socket"]
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    try:
        uvicorn.run(
            Identity(app),
            uds=socket_path,
            log_level=config.get("log_level", "warning"),
            # Well above the gateway's pool idle timeout, so the gateway closes first.
            timeout_keep_alive=config["keep_alive_secs"],
            # marimo run's WebSocket settings.
            ws_ping_interval=1.0,
            ws_ping_timeout=60.0,
            proxy_headers=False,
            server_header=False,
        )
    finally:
        try:
            os.unlink(socket_path)
        except OSError:
            pass


if __name__ == "__main__":
    main()
