"""pushi itself (PyPI `pushi-service` 0.6.10) as a test oracle.

`PushiService.start()` runs a MongoDB-wire server (jongodb, from
protocol-tests/node_modules, the one the persistence suites use) and
`python -m pushi.base` from its own venv (PUSHI_VENV, default
protocol-tests/.venv-pushi, made by protocol-tests/run from
requirements-pushi.txt: pushi-service installs a top-level `pushi` package,
as the PyPI client does, so they cannot share a venv). Both on free ports,
their files in a temp dir; `stop()` ends both.

pushi-service reads its settings from the environment: APP_HOST / APP_PORT
(its HTTP API), SERVER_HOST / SERVER_PORT (its WebSocket, `ws://host:port/{app_key}`),
MONGO_URL (the database is the URL's path), SESSION_FILE_PATH (appier's
file sessions; by default it writes them inside the installed package).
An app is created with its own `POST /apps {"name"}`, without logging in.

Usable from other suites (a node suite can spawn the same command line).
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PT = os.path.dirname(HERE)
JONGODB_BIN = os.environ.get(
    "JONGODB_BIN",
    os.path.join(PT, "node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb"),
)
PUSHI_VENV = os.environ.get("PUSHI_VENV", os.path.join(PT, ".venv-pushi"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=30.0):
    """Waits until `port` accepts connections; fails early if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited (%s) before listening on %d" % (what, proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("%s did not listen on %d within %.0f s" % (what, port, timeout))


def request(method, url, body=None):
    """(status, parsed JSON or text) of one HTTP call; errors are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, method=method, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class PushiService:
    """jongodb + pushi-service on free ports; see the module doc."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pushi-oracle-")
        self.procs = []
        self.logs = []
        self.mongo_port = self.app_port = self.ws_port = None

    @property
    def base_url(self):
        """What the PyPI client takes as `base_url`."""
        return "http://127.0.0.1:%d/" % self.app_port

    def ws_url(self, app_key):
        """pushi's WebSocket URL for an app (pushi.js dialect)."""
        return "ws://127.0.0.1:%d/%s" % (self.ws_port, app_key)

    def _spawn(self, name, argv, env=None):
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        self.logs.append(log.name)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        log.close()
        self.procs.append(proc)
        return proc

    def log_tail(self, chars=3000):
        out = []
        for path in self.logs:
            with open(path, "rb") as f:
                out.append("--- %s\n%s" % (os.path.basename(path), f.read()[-chars:].decode(errors="replace")))
        return "\n".join(out)

    def start(self):
        python = os.path.join(PUSHI_VENV, "bin", "python")
        if not os.path.exists(python):
            raise RuntimeError("no pushi-service venv at %s (protocol-tests/run creates it)" % PUSHI_VENV)
        if not os.path.exists(JONGODB_BIN):
            raise RuntimeError("jongodb not found at %s (npm ci in protocol-tests installs it)" % JONGODB_BIN)
        try:
            self.mongo_port = free_port()
            mongo = self._spawn("jongodb", [JONGODB_BIN, "--host=127.0.0.1", "--port=%d" % self.mongo_port])
            wait_port(self.mongo_port, mongo, "jongodb")
            self.app_port, self.ws_port = free_port(), free_port()
            env = dict(
                os.environ,
                APP_HOST="127.0.0.1",
                APP_PORT=str(self.app_port),
                SERVER_HOST="127.0.0.1",
                SERVER_PORT=str(self.ws_port),
                MONGO_URL="mongodb://127.0.0.1:%d/pushi_oracle?directConnection=true" % self.mongo_port,
                SESSION_FILE_PATH=os.path.join(self.dir, "sessions"),
                LEVEL="WARNING",
            )
            pushi = self._spawn("pushi-service", [python, "-m", "pushi.base"], env=env)
            wait_port(self.app_port, pushi, "pushi-service (HTTP)")
            wait_port(self.ws_port, pushi, "pushi-service (WebSocket)")
        except Exception as error:
            logs = self.log_tail()
            self.stop()
            raise RuntimeError("%s\n%s" % (error, logs))
        return self

    def create_app(self, name=None):
        """`POST /apps` (pushi needs no login for it): the app's map, with
        `ident` (its id), `key` and `secret`."""
        status, app = request("POST", self.base_url + "apps", {"name": name or "oracle-" + uuid.uuid4().hex[:12]})
        if status != 200:
            raise RuntimeError("pushi-service POST /apps answered %s: %r" % (status, app))
        return app

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)
