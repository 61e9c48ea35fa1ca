"""The PyPI `pushi` client (0.6.x), unmodified, against pushi itself and rusher.

The same script runs against pushi-service (the oracle, started by
pushi_oracle.py) and against rusher's `/pushi/` API; each step's answers
must agree once ids and times are set aside (NOT_COMPARED), except for the
differences the README's "Coming from pushi" section lists (each marked
`documented difference` below).

Receivers: on rusher a pusher-js client (listen.mjs); pusher-js cannot reach
pushi-service (see pushi_listen.mjs), so there a pushi.js-style raw
WebSocket client takes the event.
"""

import os
import subprocess
import threading
import time
import unittest
import urllib.parse
import uuid

import appier
import pushi

from pushi_oracle import PushiService, request
from test_python_sdk import HOST, PORT, AuthServer, Listener

HERE = os.path.dirname(os.path.abspath(__file__))

# The fixture app AuthServer signs for (test_python_sdk), so a pusher-js
# listener can sign in as a user on rusher.
RUSHER_APP = {"ident": "424242", "key": "python-key", "secret": "python-secret"}

# Values that are ids or times: they differ between servers by nature.
NOT_COMPARED = {"_id", "id", "created", "modified", "instance", "mid", "timestamp", "uid", "session", "token"}


def shape(value):
    """`value` without the NOT_COMPARED keys (recursively)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if k not in NOT_COMPARED}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return value


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


class PushiListener(Listener):
    """pushi_listen.mjs: a pushi.js-style raw WebSocket subscriber."""

    def __init__(self, url, channel, event):
        self.channel = channel
        self.proc = subprocess.Popen(
            ["node", os.path.join(HERE, "pushi_listen.mjs"), url, channel, event],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


class Target:
    """One server under test: its client, its app, how to listen."""

    def __init__(self, name, base_url, app, listen):
        self.name = name
        self.base_url = base_url
        self.app = app
        self.listen = listen

    def client(self, secret=None):
        return pushi.API(
            app_id=self.app["ident"],
            app_key=self.app["key"],
            app_secret=secret or self.app["secret"],
            base_url=self.base_url,
        )

    def raw(self, method, path, body=None, **params):
        query = urllib.parse.urlencode(params)
        return request(method, self.base_url + path + ("?" + query if query else ""), body)


def wait_until(probe, what, timeout=10.0):
    """probe() until it returns a true value (pushi stores events after answering)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found or time.monotonic() > deadline:
            if not found:
                raise AssertionError("timed out waiting for " + what)
            return found
        time.sleep(0.1)


class PushiClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.auth = AuthServer()
        cls.oracle = PushiService().start()
        oracle_app = cls.oracle.create_app()
        cls.pushi = Target(
            "pushi",
            cls.oracle.base_url,
            oracle_app,
            lambda channel, event, user=None: PushiListener(cls.oracle.ws_url(oracle_app["key"]), channel, event),
        )
        cls.rusher = Target(
            "rusher",
            "http://%s:%d/pushi/" % (HOST, PORT),
            RUSHER_APP,
            lambda channel, event, user=None: Listener(
                channel, event, key=RUSHER_APP["key"], auth=cls.auth, user=user
            ),
        )

    @classmethod
    def tearDownClass(cls):
        cls.oracle.stop()
        cls.auth.close()

    def listen(self, target, channel, event, user=None):
        listener = target.listen(channel, event, user)
        self.addCleanup(listener.close)
        ready = listener.ready()
        if user is not None:
            listener.wait_for(lambda o: o.get("signed_in"))
        return listener, ready

    def both(self, script):
        """Runs `script(target)` on pushi and on rusher; returns both results."""
        results = {}
        for target in (self.pushi, self.rusher):
            with self.subTest(server=target.name):
                results[target.name] = script(target)
        return results["pushi"], results["rusher"]

    def test_the_client_script_sees_the_same_answers_on_pushi_and_rusher(self):
        channel, user = unique("news"), unique("u")

        def script(target):
            seen = {}
            api = target.client()
            token = api.login()
            self.assertTrue(isinstance(token, str) and token, target.name)
            status, login = target.raw(
                "GET", "login", app_id=target.app["ident"], app_key=target.app["key"], app_secret=target.app["secret"]
            )
            seen["login"] = (status, sorted(login))

            # trigger_event reaches a WebSocket subscriber
            listener, _ = self.listen(target, channel, "greeting")
            seen["trigger"] = api.trigger_event(channel, {"hello": "world", "n": [1, 2]}, event="greeting")
            seen["received"] = listener.event()["data"]

            # a user follows the channel (twice: the same subscription)
            subscription = api.create_subscription(user, channel)
            seen["subscribe"] = shape(subscription)
            seen["subscription_keys"] = sorted(subscription)
            seen["subscribe_again"] = shape(api.create_subscription(user, channel))
            status, listed = target.raw("GET", "subscriptions", sid=api.token, user_id=user)
            seen["subscriptions"] = (status, shape(listed))

            # an event on the followed channel is stored: GET events lists it
            seen["trigger_stored"] = api.trigger_event(channel, "stored for " + user, event="article")

            def stored():
                status, answer = target.raw("GET", "events", sid=api.token, count=50)
                mine = [e for e in answer.get("events", []) if e["data"].get("event") == "article" and e["channel"] == channel]
                return (status, shape(mine), sorted(mine[0])) if mine else None

            seen["events"] = wait_until(stored, "the stored event on " + target.name)

            # unsubscribe: the subscription back; again: success; with force: 404
            seen["unsubscribe"] = shape(api.delete_subscription(user, channel))
            status, answer = target.raw("DELETE", "subscriptions/%s/%s" % (user, channel), sid=api.token)
            seen["unsubscribe_again"] = (status, answer)
            status, answer = target.raw("DELETE", "subscriptions/%s/%s" % (user, channel), sid=api.token, force=1)
            seen["unsubscribe_forced"] = (status, answer.get("result"), answer.get("message"))

            # logout: the token no longer works (403: the client would log in again)
            old = api.token
            api.logout()
            status, answer = target.raw("GET", "events", sid=old)
            seen["after_logout"] = (status, answer.get("result"))
            return seen

        on_pushi, on_rusher = self.both(script)
        self.assertEqual(on_pushi["received"], {"hello": "world", "n": [1, 2]})
        self.assertEqual(on_pushi["subscribe"]["event"], channel)
        self.assertEqual(on_pushi["after_logout"], (403, "error"))
        self.assertEqual(on_pushi["unsubscribe_forced"][0], 404)
        for step in on_pushi:
            self.assertEqual(on_rusher[step], on_pushi[step], "step %r differs" % step)

    def test_the_followers_personal_channel_catches_up_on_rusher(self):
        # pushi delivers a follower's events over its own WebSocket dialect
        # (pushi.js); on rusher they reach personal-{user_id}, for pusher-js.
        channel, user = unique("feed"), unique("u")
        api = self.rusher.client()
        api.create_subscription(user, channel)
        self.addCleanup(api.delete_subscription, user, channel)
        api.trigger_event(channel, {"missed": 1}, event="post")
        listener, ready = self.listen(self.rusher, "personal-" + user, "post", user=user)
        messages = ready["data"]["messages"]
        self.assertEqual([(m["channel"], m["event"]) for m in messages], [(channel, "post")])
        self.assertEqual(messages[0]["data"], '{"missed":1}')
        api.trigger_event(channel, {"live": 2}, event="post")
        self.assertEqual(listener.event()["data"], {"live": 2})
        # persist=False: live on the channel only, not stored for followers
        api.trigger_event(channel, "not kept", event="post", persist=False)
        status, events = self.rusher.raw("GET", "events", sid=api.token, count=1000)
        self.assertEqual(status, 200)
        kept = [e["data"]["data"] for e in events["events"] if e["channel"] == channel]
        self.assertEqual(kept, ['{"live":2}', '{"missed":1}'])

    def test_refusals_have_the_same_status_class_and_a_clear_message(self):
        def script(target):
            seen = {}
            bad = target.client(secret="not-the-secret")
            with self.assertRaises(appier.exceptions.HTTPError) as refused:
                bad.login()
            # documented difference: pushi 404 (App not found), rusher 403
            seen["bad_secret"] = refused.exception.code // 100
            status, answer = target.raw("GET", "events")
            seen["no_sid"] = (status, answer["result"], "not authenticated" in answer["message"])
            status, answer = target.raw("GET", "events", sid="not-a-token")
            seen["bad_sid"] = (status, answer["result"], "not authenticated" in answer["message"])
            api = target.client()
            api.login()
            status, answer = target.raw("POST", "events", {"channel": "c"}, sid=api.token)
            # documented difference: pushi 500 (an uncaught RuntimeError), rusher 400
            seen["no_data"] = (status >= 400, answer["result"], "No data set for event" in answer["message"])
            status, answer = target.raw("POST", "subscriptions", {"user_id": "u1"}, sid=api.token)
            seen["no_event"] = (status, answer["result"], sorted(answer.get("errors", {})))
            return seen

        on_pushi, on_rusher = self.both(script)
        self.assertEqual(on_pushi["no_sid"], (403, "error", True))  # pushi: "User not authenticated"
        for step in ("bad_secret", "no_sid", "bad_sid", "no_data", "no_event"):
            self.assertEqual(on_rusher[step], on_pushi[step], step)

    def test_routes_rusher_does_not_serve_answer_501_with_what_to_use(self):
        api = self.rusher.client()
        api.login()
        for method, path in [
            ("POST", "apps"),
            ("PUT", "apps/424242"),
            ("GET", "webs"),
            ("POST", "smtps"),
            ("GET", "web_pushes"),
            ("GET", "vapid_key"),
            ("GET", "apns"),
            ("POST", "messaging/email"),
        ]:
            status, answer = self.rusher.raw(method, path, {}, sid=api.token)
            self.assertEqual((status, answer["result"]), (501, "error"), (method, path, answer))
            self.assertIn("not", answer["message"])


if __name__ == "__main__":
    unittest.main()
