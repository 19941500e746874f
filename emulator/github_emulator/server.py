"""HTTP front end: a ThreadingHTTPServer in a background thread around EmulatorApp."""

from __future__ import annotations

import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .app import EmulatorApp, Response
from .config import EmulatorConfig
from .data import Dataset


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients with sessions expect
    server_version = "GitHub.com"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    timeout = 60  # idle keep-alive connections give their thread back eventually

    def _dispatch(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        try:
            resp = server.app.handle(self.command, self.path, headers, body, host=host)
        except Exception:  # answer like GitHub's 500 instead of dropping the connection
            traceback.print_exc()
            resp = Response(
                500,
                {"content-type": "application/json; charset=utf-8"},
                b'{"message":"Server Error","status":"500"}',
            )
        no_body = self.command == "HEAD" or resp.status in (204, 304)
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0" if no_body else str(len(resp.body)))
        if server.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        if resp.drop:
            self.close_connection = True
        try:
            self.end_headers()
            if resp.drop:
                # the dropped_connection answer: half the promised body, then the connection closes
                self.wfile.write(resp.body[: len(resp.body) // 2])
                self.wfile.flush()
            elif not no_body:
                self.wfile.write(resp.body)
        except ConnectionError:  # BrokenPipe, ConnectionReset, ConnectionAborted
            self.close_connection = True  # the client went away (timed out, killed): nothing to tell it

    do_GET = do_POST = do_HEAD = do_PUT = do_PATCH = do_DELETE = _dispatch

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        pass  # the app keeps its own request log


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: EmulatorApp) -> None:
        self.app = app
        self.stopping = False
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (a read timeout against the slow fault, a killed worker) resets the
        # connection while its thread still reads or writes: nothing to report. Anything else is a bug.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class EmulatorServer:
    """Serves a Dataset over HTTP on host:port (port 0 = any free port) from a daemon thread."""

    def __init__(
        self, dataset: Dataset, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.dataset = dataset
        self.config = config or EmulatorConfig()
        self.app = EmulatorApp(dataset, self.config)
        self._host, self._port = host, port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> EmulatorServer:
        if self._httpd is None:
            self.app.stalls_released.clear()
            self._httpd = _Server((self._host, self._port), self.app)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="github-emulator",
                daemon=True,
            )
            self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def stop(self) -> None:
        if self._httpd is not None:
            self.app.stalls_released.set()  # requests held back by the slow fault answer now
            self._httpd.stopping = True
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # control surface, also reachable over HTTP under /_emulator/
    def stats(self) -> dict:
        return self.app.acc.stats()

    def request_log(self) -> list[dict]:
        return self.app.acc.request_log()

    def reset_quota(self, token_name: str | None = None) -> None:
        self.app.acc.reset(token_name)

    def set_faults(self, **settings: object) -> None:
        self.app.set_faults(**settings)

    def revoke_installation(self, installation_id: int) -> None:
        """Uninstall a GitHub App installation: its tokens answer 401, new ones are refused."""
        self.app.apps.revoke_installation(installation_id)

    @property
    def issued_tokens(self) -> list[str]:
        """Every GitHub App installation token handed out so far."""
        with self.app.apps.lock:
            return list(self.app.apps.issued_tokens)

    def inject(self, kind: str, count: int = 1, token: str | None = None, **options: object) -> None:
        """The next `count` requests `kind` applies to (of that token name) get that answer."""
        self.app.inject(kind, count, token, **options)

    def set_token_valid(self, token_name: str, valid: bool) -> None:
        self.app.set_faults(token_valid={token_name: valid})
