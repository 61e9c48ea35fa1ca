"""The official Python server SDK (PyPI `pusher`) against rusher.

The WebSocket side is a real pusher-js client: listen.mjs (beside this file),
run with node, prints what it receives as JSON lines.
"""

import http.server
import json
import os
import subprocess
import threading
import time
import unittest
import urllib.parse
import uuid

import pusher
import pusher.errors

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = os.environ.get("RUSHER_HOST", "127.0.0.1")
PORT = int(os.environ.get("RUSHER_PORT", "6001"))

# A numeric id: the Python SDK refuses any other (as hosted Pusher only issues numeric ids).
APP_ID, KEY, SECRET = "424242", "python-key", "python-secret"


def client(secret=SECRET, app_id=APP_ID, key=KEY):
    """A pusher.Pusher for the test server.

    The Python SDK only accepts numeric app ids (`app_id_re = \\A[0-9]+\\Z`)
    while the fixture's apps have ids like "app-id". For those, build the
    client with a numeric placeholder and then put the real id back: the SDK
    uses it only to build the request paths (/apps/{app_id}/...).
    """
    if app_id.isdigit():
        return pusher.Pusher(app_id, key, secret, host=HOST, port=PORT, ssl=False)
    p = pusher.Pusher("1", key, secret, host=HOST, port=PORT, ssl=False)
    p._pusher_client._app_id = app_id
    p._authentication_client._app_id = app_id
    assert p._pusher_client.app_id == app_id
    return p


def unique(prefix):
    return "%s-py-%s" % (prefix, uuid.uuid4().hex[:10])


class AuthServer:
    """The backend's auth endpoints, signing with the PyPI SDK as an app would.

    POST /pusher/auth (socket_id, channel_name, user_id): `authenticate`, with
    presence data {"user_id", "user_info"} for presence channels.
    POST /pusher/user-auth (socket_id, user_id): `authenticate_user`.
    """

    def __init__(self):
        sdk = client()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                field = lambda name: form.get(name, [None])[0]
                if self.path == "/pusher/auth":
                    channel = field("channel_name")
                    custom = None
                    if channel.startswith("presence-"):
                        custom = {"user_id": field("user_id"), "user_info": {"via": "python"}}
                    answer = sdk.authenticate(channel=channel, socket_id=field("socket_id"), custom_data=custom)
                elif self.path == "/pusher/user-auth":
                    answer = sdk.authenticate_user(field("socket_id"), {"id": field("user_id")})
                else:
                    self.send_error(404)
                    return
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Listener:
    """node listen.mjs <channel> <event>: a pusher-js subscriber in a subprocess.

    With `auth` (an AuthServer) it can join private and presence channels;
    with `user` as well it signs in as that user.
    """

    def __init__(self, channel, event, key=KEY, auth=None, user=None):
        self.channel = channel
        env = dict(os.environ, RUSHER_HOST=HOST, RUSHER_PORT=str(PORT))
        if auth is not None:
            env["LISTEN_AUTH_URL"] = auth.url
        if user is not None:
            env["LISTEN_USER"] = user
        self.proc = subprocess.Popen(
            ["node", os.path.join(HERE, "listen.mjs"), channel, event, key],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            with self._cv:
                self.lines.append(json.loads(line))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def wait_for(self, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for obj in self.lines:
                    if pred(obj):
                        return obj
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        "listener: nothing matching after %.1fs; lines=%r stderr=%r"
                        % (timeout, self.lines, self._stderr())
                    )
                self._cv.wait(min(left, 0.2))

    def ready(self, timeout=10.0):
        return self.wait_for(lambda o: o.get("ready"), timeout)

    def event(self, timeout=10.0):
        return self.wait_for(lambda o: "event" in o, timeout)

    def _stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except Exception:
                pass


class PythonSdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.auth = AuthServer()

    @classmethod
    def tearDownClass(cls):
        cls.auth.close()

    def listen(self, channel, event, user=None):
        listener = Listener(channel, event, auth=self.auth, user=user)
        self.addCleanup(listener.close)
        listener.ready()
        if user is not None:
            listener.wait_for(lambda o: o.get("signed_in"))
        return listener

    def test_trigger_reaches_a_pusher_js_subscriber(self):
        channel = unique("pysdk")
        listener = self.listen(channel, "py-event")
        payload = {"message": "from python", "unicode": "ünïcødé ✓", "n": [1, 2, 3]}
        result = client().trigger(channel, "py-event", payload)
        self.assertEqual(result, {})
        got = listener.event()
        self.assertEqual(got["data"], payload)

    def test_trigger_to_several_channels(self):
        a, b = unique("pymulti"), unique("pymulti")
        la, lb = self.listen(a, "multi"), self.listen(b, "multi")
        client().trigger([a, b], "multi", {"both": True})
        self.assertEqual(la.event()["data"], {"both": True})
        self.assertEqual(lb.event()["data"], {"both": True})

    def test_trigger_batch(self):
        a, b = unique("pybatch"), unique("pybatch")
        la, lb = self.listen(a, "batched"), self.listen(b, "batched")
        result = client().trigger_batch(
            [
                {"channel": a, "name": "batched", "data": {"to": "a"}},
                {"channel": b, "name": "batched", "data": {"to": "b"}},
            ]
        )
        self.assertEqual(result, {})
        self.assertEqual(la.event()["data"], {"to": "a"})
        self.assertEqual(lb.event()["data"], {"to": "b"})

    def test_trigger_batch_items_with_an_idempotency_key_are_answered_once(self):
        # The PyPI SDK passes batch items through, so each can carry a key
        # (README "Idempotent publish"); its trigger() has no way to add one.
        channel = unique("pyidem")
        key = unique("pykey")

        def batch():
            return [{"channel": channel, "name": "paid", "data": {"n": 1}, "idempotency_key": key,
                     "info": "subscription_count"}]

        first = client().trigger_batch(batch())
        self.assertEqual(first, {"batch": [{"subscription_count": 0}]})
        # listen.mjs prints the first "paid" it gets: a delivered repeat
        # would come before the marker.
        listener = self.listen(channel, "paid")
        self.assertEqual(client().trigger_batch(batch()), first, "the first answer, not a new count")
        client().trigger(channel, "paid", {"n": "marker"})
        self.assertEqual(listener.event()["data"], {"n": "marker"})

    def test_trigger_with_socket_id_excludes_that_socket(self):
        channel = unique("pyexcl")
        excluded = self.listen(channel, "ev")
        other = self.listen(channel, "ev")
        socket_id = excluded.ready()["socket_id"]
        client().trigger(channel, "ev", {"n": 1}, socket_id=socket_id)
        self.assertEqual(other.event()["data"], {"n": 1})
        time.sleep(0.3)
        self.assertFalse(any("event" in o for o in excluded.lines), excluded.lines)

    def test_channel_info_reports_occupied_and_subscription_count(self):
        channel = unique("pyinfo")
        self.listen(channel, "never")
        self.listen(channel, "never")
        info = client().channel_info(channel, ["subscription_count"])
        self.assertEqual(info.get("occupied"), True, info)
        self.assertEqual(info.get("subscription_count"), 2, info)

    def test_channel_info_of_an_empty_channel(self):
        info = client().channel_info(unique("pyempty"))
        self.assertEqual(info.get("occupied"), False, info)

    def test_channels_info_with_prefix_filter(self):
        prefix = "pyprefix-%s" % uuid.uuid4().hex[:6]
        mine = prefix + "-one"
        other = unique("pynotmine")
        self.listen(mine, "never")
        self.listen(other, "never")
        result = client().channels_info(prefix_filter=prefix)
        self.assertIn("channels", result)
        self.assertEqual(list(result["channels"].keys()), [mine], result)
        everything = client().channels_info()
        self.assertIn(mine, everything["channels"])
        self.assertIn(other, everything["channels"])

    def test_authenticate_signs_a_private_channel_pusher_js_joins(self):
        channel = unique("private-pyauth")
        listener = self.listen(channel, "secret")
        client().trigger(channel, "secret", {"ok": True})
        self.assertEqual(listener.event()["data"], {"ok": True})

    def test_presence_authenticate_and_users_info(self):
        channel = unique("presence-pyusers")
        self.listen(channel, "never", user="py-member")
        self.assertEqual(client().users_info(channel), {"users": [{"id": "py-member"}]})
        info = client().channel_info(channel, ["user_count", "subscription_count"])
        self.assertEqual(info, {"occupied": True, "user_count": 1, "subscription_count": 1})

    def test_send_to_user_reaches_the_signed_in_user(self):
        user = unique("pyuser")
        listener = self.listen(unique("pyuserch"), "for-you", user=user)
        self.assertEqual(client().send_to_user(user, "for-you", {"n": 7}), {})
        self.assertEqual(listener.event()["data"], {"n": 7})

    def test_terminate_user_connections_closes_that_user_with_4009(self):
        # The SDK posts to /users/{id}/terminate_connections, without /apps/{id}:
        # rusher finds the app from the signed auth_key.
        user, bystander = unique("pyterm"), unique("pykeep")
        target = self.listen(unique("pytermch"), "never", user=user)
        other = self.listen(unique("pytermch"), "after", user=bystander)
        self.assertEqual(client().terminate_user_connections(user), {})
        error = target.wait_for(lambda o: "error" in o)["error"]
        self.assertEqual(error["code"], 4009, error)
        # Only that user: the other signed-in socket still receives.
        client().send_to_user(bystander, "after", {"still": "here"})
        self.assertEqual(other.event()["data"], {"still": "here"})
        self.assertFalse(any("error" in o for o in other.lines), other.lines)

    def test_terminate_user_connections_with_a_wrong_secret_raises_bad_auth(self):
        with self.assertRaises(pusher.errors.PusherBadAuth):
            client(secret="not-the-secret").terminate_user_connections(unique("pyterm"))

    def test_wrong_secret_raises_bad_auth(self):
        with self.assertRaises(pusher.errors.PusherBadAuth):
            client(secret="not-the-secret").trigger(unique("pyauth"), "ev", {"x": 1})

    def test_unknown_app_raises(self):
        with self.assertRaises(pusher.errors.PusherError):
            client(app_id="no-such-app").trigger(unique("pyapp"), "ev", {"x": 1})

    def test_disabled_app_raises_forbidden(self):
        with self.assertRaises(pusher.errors.PusherForbidden):
            client(app_id="disabled-app", key="disabled-key", secret="disabled-secret").trigger(
                unique("pydis"), "ev", {"x": 1}
            )


if __name__ == "__main__":
    unittest.main()
