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

import asyncio
import base64
import errno
import json
import os
import signal
import sys
import threading
import time
import traceback

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


class GatewayUser(dict):
    """Who signed in, as marimo's ``scope["user"]``.

    A dict, because marimo 0.25 passes a dict ``scope["user"]`` to notebooks as it is
    (``mo.app_meta().request.user["groups"]``) while it reduces any other user object to
    ``username``/``is_authenticated``/``display_name``; with the attributes Starlette code
    reads (``request.user.is_authenticated``) as well. Pickled as a plain dict, so it crosses
    into an editor's kernel process like any other value.
    """

    is_authenticated = True

    @property
    def username(self):
        return self["username"]

    @property
    def display_name(self):
        return self["display_name"]

    def __reduce__(self):
        return (dict, (dict(self),))


def gateway_user(identity):
    """The ``scope["user"]`` for the gateway's decoded identity header."""
    name = str(identity.get("name", ""))
    email = identity.get("email")
    groups = identity.get("groups")
    claims = identity.get("claims")
    return GatewayUser(
        username=name,
        display_name=name,
        is_authenticated=True,
        email=email if isinstance(email, str) else None,
        groups=[g for g in groups if isinstance(g, str)] if isinstance(groups, list) else [],
        claims=claims if isinstance(claims, dict) else {},
    )


class Identity:
    """ASGI middleware: the gateway's identity header -> scope["user"], scope["meta"]."""

    def __init__(self, app):
        from starlette.authentication import UnauthenticatedUser

        self.app = app
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
                    scope["user"] = gateway_user(identity)
                    meta = identity.get("meta")
                    if isinstance(meta, dict):
                        scope["meta"] = meta
                except Exception:
                    pass
        await self.app(scope, receive, send)


def edit_app(notebook, options, argv, watch):
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
    from marimo._cli.parse_args import parse_args
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
        cli_args=parse_args(argv),
        argv=list(argv),
        # marimo edit --watch: marimo reloads the file in the editor (the gateway does not
        # restart an editor, whose kernel holds the user's work).
        watch=watch,
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


def session_managers(app):
    """marimo's session managers in `app`: the editor's, or those of create_asgi_app's apps."""
    found = []
    state = getattr(app, "state", None)
    manager = getattr(state, "session_manager", None) if state is not None else None
    if manager is not None:
        found.append(manager)
    for route in getattr(app, "routes", None) or []:
        inner = getattr(route, "app", None)
        if inner is not None and inner is not app:
            found.extend(session_managers(inner))
    return found


def tell_pages_to_reload(managers):
    """marimo's run-mode --watch message: every open page reloads itself."""
    from marimo._messaging.notification import ReloadNotification

    for manager in managers:
        for session in list(manager.sessions.values()):
            try:
                session.notify(ReloadNotification(), from_consumer_id=None)
            except Exception:
                pass


def pass_cli_args(managers, argv):
    """`marimo run NB -- ARGS`: create_asgi_app gives notebooks no arguments, so its session
    managers get them here, parsed as marimo's command line parses them (`mo.cli_args()`,
    `sys.argv`)."""
    from marimo._cli.parse_args import parse_args

    for manager in managers:
        manager.cli_args = parse_args(argv)
        manager.argv = list(argv)


# How long pages get to receive a reload before the backend exits.
RELOAD_GRACE_SECS = 0.5


def reload_on_signal(server, managers):
    """SIGUSR1 (the gateway saw the notebook file change): tell the open pages to reload, then
    stop; the gateway starts a fresh backend that the pages find on reload."""

    def reload(_signum, _frame):
        loop = asyncio.get_running_loop()

        def stop():
            tell_pages_to_reload(managers)
            loop.call_later(RELOAD_GRACE_SECS, setattr, server, "should_exit", True)

        loop.call_soon_threadsafe(stop)

    signal.signal(signal.SIGUSR1, reload)


def data_segment_bytes():
    """What RLIMIT_DATA counts for this process now (VmData), or None if it cannot be read."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class OutOfMemory:
    """The memory cap (`"memory"` in the configuration), and what happens when it is reached.

    The limit is RLIMIT_DATA of this process (inherited by processes it starts); when the
    gateway made a cgroup v2 group for this start, the process also moves into it, where the
    kernel counts the resident memory of the backend as a whole.

    Run-mode kernels are threads of this process, so a MemoryError in one leaves every session
    short of memory: it is fatal. The backend then answers new requests 503 (marked for the
    gateway, which shows its own page), tells the open pages to reload (they get that page),
    and exits with the status the gateway recognises. As ASGI middleware it does the answering.
    """

    def __init__(self, app, memory, managers):
        self.app = app
        self.limit = memory["bytes"]
        self.exit_status = memory["exit_status"]
        # The field that marks its 503s for the gateway (its name and value come from there).
        name, value = memory["state_header"]
        self.state = (name.encode("ascii"), value.encode("ascii"))
        self.managers = managers
        self.loop = None
        self.tripped = threading.Event()
        cgroup = memory.get("cgroup")
        if cgroup:
            try:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
                    procs.write(str(os.getpid()))
            except OSError as error:
                sys.stderr.write(f"marimo-rs: cannot join cgroup {cgroup}: {error}\n")
        import resource

        # marimo and uvicorn were imported before the cap (this process may have waited in the
        # warm pool): a cap below what the process holds already would leave it unable to
        # allocate anything, answering nothing. That is the start running out of memory.
        held = data_segment_bytes()
        if held is not None and held >= self.limit:
            sys.stderr.write(
                f"marimo-rs: the backend holds {held} bytes before serving, more than its "
                f"memory limit of {self.limit} bytes\n"
            )
            sys.stderr.flush()
            os._exit(self.exit_status)
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        soft = self.limit if hard == resource.RLIM_INFINITY else min(self.limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))

    def watch_run_mode_kernels(self):
        """MemoryError in a kernel thread (cell code) or in any other thread is fatal."""
        from marimo._runtime.runner import hooks_post_execution

        def after_cell(_cell, _ctx, run_result):
            if isinstance(run_result.exception, MemoryError):
                self.trip()

        hooks_post_execution.POST_EXECUTION_HOOKS.append(after_cell)
        previous = threading.excepthook

        def uncaught(args):
            if issubclass(args.exc_type, MemoryError):
                self.trip()
            previous(args)

        threading.excepthook = uncaught

    def trip(self):
        if self.tripped.is_set():
            return
        self.tripped.set()
        try:
            sys.stderr.write(f"marimo-rs: out of memory (limit {self.limit} bytes); exiting\n")
        except Exception:
            pass
        loop = self.loop

        def tell_and_exit():
            tell_pages_to_reload(self.managers)
            loop.call_later(RELOAD_GRACE_SECS, os._exit, self.exit_status)

        try:
            loop.call_soon_threadsafe(tell_and_exit)
        except Exception:  # no loop yet, or it is closed
            os._exit(self.exit_status)
        if threading.current_thread() is not threading.main_thread():
            # Should the server's loop be unable to do it, this thread still ends the process.
            time.sleep(RELOAD_GRACE_SECS + 2)
            os._exit(self.exit_status)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        self.loop = asyncio.get_running_loop()
        if not self.tripped.is_set():
            return await self.app(scope, receive, send)
        if scope["type"] == "http":
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), self.state],
                }
            )
            await send({"type": "http.response.body", "body": b"out of memory"})
        else:
            await send({"type": "websocket.close", "code": 1013})


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


def become_backend(config, ready, memory):
    """Serves ``config["notebook"]`` on ``config["socket"]``; writes READY to ``ready`` once
    uvicorn listens. Whether this process was started a moment ago or waited in the pool, the
    notebook finds what a fresh start gives it: its folder as working directory (marimo adds it
    to ``sys.path`` and sets ``__file__`` for the notebook's code), the gateway's environment
    without ``MARIMO_RS_*`` (scrubbed when the process was started). With a ``memory`` cap, the
    cap applies from here on (imports done in the pool are not counted against RLIMIT_DATA)."""
    import marimo
    import uvicorn

    notebook = config["notebook"]
    os.chdir(os.path.dirname(notebook) or "/")
    options = config["marimo"]
    edit = config.get("mode") == "edit"
    argv = config.get("argv") or []
    if edit:
        app = edit_app(notebook, options, argv, bool(config.get("watch")))
    else:
        builder = marimo.create_asgi_app(token=None, **options)
        app = builder.with_app(path="", root=notebook).build()
    marimo_app = app  # before any wrapping: the editor's shutdown action needs its state
    managers = session_managers(app)
    if not edit:
        pass_cli_args(managers, argv)
    if memory:
        app = OutOfMemory(app, memory, managers)
        if not edit:
            app.watch_run_mode_kernels()

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
            marimo_app.state.server = server
        elif config.get("watch"):
            reload_on_signal(server, managers)
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
    memory = config.get("memory")
    try:
        become_backend(config, ready, memory)
    except (MemoryError, OSError) as error:
        # Serving needs more than the cap (allocations fail with ENOMEM): the gateway says so.
        if memory and (isinstance(error, MemoryError) or error.errno == errno.ENOMEM):
            traceback.print_exc()
            os._exit(memory["exit_status"])
        raise


if __name__ == "__main__":
    main()
