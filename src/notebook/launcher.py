"""marimo_rs notebook backend.

Started by the marimo_rs gateway (never by hand): serves ONE notebook with marimo's own
``create_asgi_app`` (run mode) or marimo's edit server (``"mode": "edit"``) on a Unix socket
inside the gateway's private (0700) directory. marimo's auth is off: the gateway authenticates
every request before it gets here.

Start-up comes in two steps, so that the gateway can start this process before it knows which
notebook it will serve (its warm pool):

1. ``argv[1]`` is a JSON object with only the gateway's pid. The process ties its life to the
   gateway's, imports marimo, uvicorn and the server modules a notebook needs (most of the
   time a start takes), and waits.
2. The notebook's configuration arrives as one JSON line on standard input, written at once for
   a fresh start or when the gateway hands this process to a notebook; ``become_backend`` then
   does everything else a start does (working directory, app, socket) and writes
   ``marimo-rs:ready`` on the original standard output once uvicorn listens. Standard output
   itself goes to /dev/null, as before; end of input without a line means the process is no
   longer needed.

The gateway passes the identity of the user
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
        # Starlette user objects: marimo reads them as attributes (`request.user.is_authenticated`)
        # and turns them into the dict `mo.app_meta().request.user` shows.
        from starlette.authentication import SimpleUser, UnauthenticatedUser

        self.app = app
        self.signed_in = SimpleUser
        self.anonymous = UnauthenticatedUser

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
            scope = dict(scope)
            scope["headers"] = kept
            # Without the gateway's header nobody is signed in: say so, rather than letting
            # marimo's disabled auth report everyone as its placeholder "user".
            scope["user"] = self.anonymous()
            if raw is not None:
                try:
                    padded = raw + b"=" * (-len(raw) % 4)
                    identity = json.loads(base64.urlsafe_b64decode(padded))
                    scope["user"] = self.signed_in(str(identity.get("name", "")))
                    meta = identity.get("meta")
                    if isinstance(meta, dict):
                        scope["meta"] = meta
                except Exception:
                    pass
        await self.app(scope, receive, send)


def edit_app(notebook, options):
    """marimo's edit server for ONE notebook, as `marimo edit NOTEBOOK --no-token` builds it.

    Differences from `marimo edit`: no marimo auth (the gateway's), no language servers (they would listen on TCP ports the
    gateway does not guard), no browser, no server registry, no startup banner.
    """
    from marimo._config.manager import get_default_config_manager
    from marimo._server.api import lifespans
    from marimo._server.config import StarletteServerStateInit
    from marimo._server.lsp import NoopLspServer
    from marimo._server.main import create_starlette_app
    from marimo._server.registry import LIFESPAN_REGISTRY
    from marimo._server.session_manager import SessionManager
    from marimo._server.tokens import AuthToken
    from marimo._server.workspace import SingleFileWorkspace
    from marimo._session.model import SessionMode
    from marimo._utils.lifespans import Lifespans
    from marimo._utils.marimo_path import MarimoPath

    config_manager = get_default_config_manager(current_path=notebook)
    if options.get("show_tracebacks"):
        config_manager = config_manager.with_overrides(
            {"runtime": {"show_tracebacks": True}}
        )
    session_manager = SessionManager(
        workspace=SingleFileWorkspace.from_path(MarimoPath(notebook)),
        mode=SessionMode.EDIT,
        quiet=options["quiet"],
        include_code=True,
        lsp_server=NoopLspServer(),
        config_manager=config_manager,
        cli_args={},
        argv=[],
        # An empty token turns marimo's auth off: the gateway authenticates.
        auth_token=AuthToken(""),
        redirect_console_to_browser=True,
        # None (the default): the kernel lives on when the browser tab closes, as in marimo edit.
        ttl_seconds=options.get("session_ttl"),
    )
    app = create_starlette_app(
        base_url="",
        lifespan=Lifespans(
            [
                lifespans.etc,
                lifespans.signal_handler,
                lifespans.tool_manager,
                lifespans.reap_subprocesses,
                *LIFESPAN_REGISTRY.get_all(),
            ]
        ),
        enable_auth=False,
        # marimo edit's default: POSTs need the page's Marimo-Server-Token, which its own
        # frontend sends and a page on another site cannot read.
        skew_protection=True,
    )
    # The server has no TCP address: it is only reached through the gateway's Unix socket.
    StarletteServerStateInit(
        port=0,
        host="127.0.0.1",
        base_url="",
        asset_url=options.get("asset_url"),
        headless=True,
        quiet=options["quiet"],
        session_manager=session_manager,
        config_manager=config_manager,
        remote_url=None,
        mcp_server_enabled=False,
        skew_protection=True,
        enable_auth=False,
    ).apply(app.state)
    app.state.html_head = options.get("html_head")
    return app


# The line the gateway waits for: uvicorn listens on the socket.
READY = b"marimo-rs:ready\n"


def take_stdout():
    """A private copy of standard output for the ready line; fd 1 itself goes to /dev/null.

    Anything else written to standard output (marimo, notebook code) is discarded, as when the
    gateway gave the process no standard output at all; the copy is not inherited by kernels.
    """
    ready = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    return ready


def preload():
    """Imports what serving any notebook needs: the part of a start that does not depend on it."""
    import marimo  # noqa: F401
    import marimo._server.api.lifespans  # noqa: F401
    import marimo._server.api.router  # noqa: F401
    import marimo._server.asgi  # noqa: F401
    import marimo._server.main  # noqa: F401
    import uvicorn

    # uvicorn imports its protocol implementations (h11 or httptools, websockets) when a Config
    # is loaded; loading one now, for no app, does it ahead of time.
    uvicorn.Config(app=None, log_level="warning").load()


def receive_config():
    """The notebook's configuration: one JSON line on standard input (None at end of input).

    Standard input is /dev/null afterwards, as for a process given none.
    """
    line = sys.stdin.buffer.readline()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return json.loads(line) if line.strip() else None


def become_backend(config, ready):
    """Serves ``config["notebook"]`` on ``config["socket"]``; writes READY to ``ready`` once
    uvicorn listens. Whether this process was started a moment ago or waited in the pool, the
    notebook finds what a fresh start gives it: its folder as working directory (marimo adds it
    to ``sys.path`` and sets ``__file__`` for the notebook's code), the gateway's environment
    without ``MARIMO_RS_*`` (scrubbed when the process was started)."""
    import marimo
    import uvicorn

    notebook = config["notebook"]
    os.chdir(os.path.dirname(notebook) or "/")
    options = config["marimo"]
    edit = config.get("mode") == "edit"
    if edit:
        app = edit_app(notebook, options)
    else:
        builder = marimo.create_asgi_app(token=None, **options)
        app = builder.with_app(path="", root=notebook).build()

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                os.write(ready, READY)
                os.close(ready)

    socket_path = config["socket"]
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    try:
        server = Server(
            uvicorn.Config(
                Identity(app),
                uds=socket_path,
                log_level=config.get("log_level", "warning"),
                # Well above the gateway's pool idle timeout, so the gateway closes first.
                timeout_keep_alive=config["keep_alive_secs"],
                # marimo's WebSocket and shutdown settings.
                ws_ping_interval=1.0,
                ws_ping_timeout=60.0,
                timeout_graceful_shutdown=1,
                proxy_headers=False,
                server_header=False,
                # Edit mode watches its kernel's socket with add_reader(), which marimo
                # runs on asyncio's own loop rather than uvloop.
                loop="asyncio" if edit else "auto",
            )
        )
        if edit:
            # The editor's "shut down" action stops this server.
            app.state.server = server
        server.run()
    finally:
        try:
            os.unlink(socket_path)
        except OSError:
            pass


def main():
    boot = json.loads(sys.argv[1])
    die_with_parent(boot["parent_pid"])
    ready = take_stdout()
    preload()
    config = receive_config()
    if config is None:
        return  # the gateway no longer needs this process
    become_backend(config, ready)


if __name__ == "__main__":
    main()
