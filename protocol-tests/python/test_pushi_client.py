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

import hashlib
import hmac
import http.server
import os
import queue
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
        for method, path in [("GET", "apns"), ("POST", "apns"), ("POST", "messaging/email")]:
            status, answer = self.rusher.raw(method, path, {}, sid=api.token)
            self.assertEqual((status, answer["result"]), (501, "error"), (method, path, answer))
            self.assertIn("not", answer["message"])
        # documented difference: pushi creates apps for anyone; rusher only
        # through its admin API, and says so
        status, answer = self.rusher.raw("POST", "apps", {"name": "x"}, sid=api.token)
        self.assertEqual(status, 403, answer)
        self.assertIn("/admin/apps", answer["message"])

    def test_associations_see_the_same_answers_on_pushi_and_rusher(self):
        channel, other = unique("news"), unique("sports")
        url = "http://127.0.0.1:9/%s" % unique("hook")
        email = unique("reader") + "@example.com"
        endpoint = "https://push.example/%s" % unique("sub")

        def by_event(answer):
            return sorted(shape(answer["subscriptions"]), key=lambda s: s["event"])

        def script(target):
            seen = {}
            api = target.client()
            api.login()
            # webs: the client's unsubscribe=True moves the URL to the new event
            seen["web"] = shape(api.create_web(url, channel))
            seen["web_keys"] = sorted(api.create_web(url, other))
            status, answer = target.raw("GET", "webs", sid=api.token, url=url)
            seen["webs_moved"] = (status, by_event(answer))
            status, answer = target.raw("POST", "webs", {"url": url, "event": channel}, sid=api.token, unsubscribe=0)
            seen["web_kept"] = (status, shape(answer))
            status, answer = target.raw("GET", "webs", sid=api.token, url=url)
            seen["webs_both"] = (status, by_event(answer))

            # smtps
            seen["smtp"] = shape(api.create_smtp(email, channel))
            seen["smtps"] = by_event(api.list_smtps(email=email))
            seen["smtp_deleted"] = shape(api.delete_smtp(email, channel))
            with self.assertRaises(appier.exceptions.HTTPError) as missing:
                api.delete_smtp(email, channel, force=True)
            seen["smtp_forced"] = missing.exception.code
            api.create_smtp(email, channel, unsubscribe=False)
            api.create_smtp(email, other, unsubscribe=False)
            seen["smtps_deleted"] = by_event(api.delete_smtps(email))
            seen["smtps_after"] = api.list_smtps(email=email)

            # web_pushes
            seen["web_push"] = shape(api.create_web_push(endpoint, P256DH, AUTH, channel))
            seen["web_pushes"] = by_event(api.list_web_pushes(endpoint=endpoint))
            seen["web_push_deleted"] = shape(api.delete_web_push(endpoint, event=channel))
            seen["web_push_again"] = api.delete_web_push(endpoint, event=channel)
            api.create_web_push(endpoint, P256DH, AUTH, channel, unsubscribe=False)
            api.create_web_push(endpoint, P256DH, AUTH, other, unsubscribe=False)
            seen["web_pushes_deleted"] = by_event(api.delete_web_pushes(endpoint))
            seen["web_pushes_after"] = api.list_web_pushes(endpoint=endpoint)
            return seen

        on_pushi, on_rusher = self.both(script)
        self.assertEqual(on_pushi["webs_moved"], (200, [dict(on_pushi["web"], event=other)]))
        self.assertEqual(len(on_pushi["webs_both"][1]), 2)
        self.assertEqual(on_pushi["smtp_forced"], 404)
        self.assertEqual(on_pushi["web_push"]["p256dh"], P256DH)
        self.assertEqual(len(on_pushi["web_pushes_deleted"]), 2)
        for step in on_pushi:
            self.assertEqual(on_rusher[step], on_pushi[step], "step %r differs" % step)

    def test_vapid_key_is_the_same_public_point_on_pushi_and_rusher(self):
        def script(target):
            api = target.client()
            api.login()
            if target is self.pushi:
                # a new pushi app has no key: the same error class as rusher's keyless app
                bare = self.oracle.create_app()
                keyless = Target("pushi", target.base_url, bare, None).client()
                # rusher's fixture app has the key in its config; pushi's gets it through update_app
                api.update_app(vapid_key=VAPID_PRIVATE_KEY, vapid_email="mailto:ops@example.com")
            else:
                keyless = Target("rusher", target.base_url, OTHER_RUSHER_APP, None).client()
            with self.assertRaises(appier.exceptions.HTTPError) as refused:
                keyless.get_vapid_public_key()
            return {"vapid": api.get_vapid_public_key(), "keyless": refused.exception.code}

        on_pushi, on_rusher = self.both(script)
        self.assertEqual(on_pushi["keyless"], 500)  # pushi's OperationalError
        self.assertEqual(on_rusher, on_pushi)

    def test_a_web_on_a_followers_personal_channel_gets_the_signed_post_on_rusher(self):
        # rusher-only: pushi-service needs a reachable loop per request (netius) and
        # signs nothing; rusher POSTs JSON signed like its webhooks.
        channel, user = unique("feed"), unique("u")
        receiver = Receiver()
        self.addCleanup(receiver.close)
        api = self.rusher.client()
        api.create_subscription(user, channel)
        self.addCleanup(api.delete_subscription, user, channel)
        personal = "personal-" + user
        signature = hmac.new(
            RUSHER_APP["secret"].encode(), ("%s:%s" % (receiver.url, personal)).encode(), hashlib.sha256
        ).hexdigest()
        bad = self.rusher.raw(
            "POST", "webs", {"url": receiver.url, "event": personal}, sid=api.token, auth=RUSHER_APP["key"] + ":00"
        )
        self.assertEqual(bad[0], 403, bad)
        created = api.create_web(receiver.url, personal, auth="%s:%s" % (RUSHER_APP["key"], signature))
        self.assertEqual((created["url"], created["event"]), (receiver.url, personal))
        api.trigger_event(channel, {"n": 1}, event="post")
        body, headers = receiver.next()
        self.assertEqual(headers.get("x-pusher-key"), RUSHER_APP["key"])
        expected = hmac.new(RUSHER_APP["secret"].encode(), body, hashlib.sha256).hexdigest()
        self.assertEqual(headers.get("x-pusher-signature"), expected)
        self.assertIn(channel, body.decode())
        self.assertIn('"post"', body.decode())
        # the client's delete_web sends the URL unencoded: the last segment is the event
        deleted = api.delete_web(receiver.url, personal)
        self.assertEqual((deleted["url"], deleted["event"]), (receiver.url, personal))
        status, answer = self.rusher.raw("GET", "webs", sid=api.token, url=receiver.url)
        self.assertEqual((status, answer), (200, {"subscriptions": []}))

    def test_a_web_push_registered_by_the_client_is_a_native_registration_on_rusher(self):
        channel = unique("alerts")
        endpoint = "https://push.example/%s" % unique("sub")
        api = self.rusher.client()
        api.create_web_push(endpoint, P256DH, AUTH, channel)
        self.addCleanup(api.delete_web_pushes, endpoint)
        status, listed = signed_get(RUSHER_APP, "/apps/%s/notifications" % RUSHER_APP["ident"], channel=channel)
        self.assertEqual(status, 200, listed)
        self.assertEqual(listed["notifications"], [{"channel": channel, "kind": "web_push", "endpoint": endpoint}])
        # refused like the native route: the same validation
        status, answer = self.rusher.raw(
            "POST", "web_pushes", {"endpoint": endpoint, "p256dh": "AAAA", "auth": AUTH, "event": channel}, sid=api.token
        )
        self.assertEqual((status, answer["result"]), (400, "error"), answer)
        self.assertIn("decodes to 3 bytes, expected 65", answer["message"])
        api.delete_web_push(endpoint, event=channel)
        status, listed = signed_get(RUSHER_APP, "/apps/%s/notifications" % RUSHER_APP["ident"], channel=channel)
        self.assertEqual(listed["notifications"], [])

    def test_an_app_changes_its_own_name_and_vapid_key_only(self):
        api = self.rusher.client()
        api.login()
        status, shown = self.rusher.raw("GET", "apps/" + RUSHER_APP["ident"], sid=api.token)
        self.assertEqual((status, shown["ident"], shown["key"]), (200, RUSHER_APP["ident"], RUSHER_APP["key"]))
        self.assertEqual(shown["vapid_key"], "[redacted]")
        status, listed = self.rusher.raw("GET", "apps", sid=api.token)
        self.assertEqual([a["ident"] for a in listed["apps"]], [RUSHER_APP["ident"]])
        status, answer = self.rusher.raw("PUT", "apps/app-id", {"name": "x"}, sid=api.token)
        self.assertEqual(status, 404, answer)  # as pushi: another app is not found
        status, answer = self.rusher.raw("PUT", "apps/" + RUSHER_APP["ident"], {"max_connections": 1}, sid=api.token)
        self.assertEqual(status, 400, answer)
        # a config-file app is changed in the file (runtime apps: see the unit tests)
        status, answer = self.rusher.raw("PUT", "apps/" + RUSHER_APP["ident"], {"name": "x"}, sid=api.token)
        self.assertEqual(status, 409, answer)
        self.assertIn("config file", answer["message"])


# A P-256 point (RFC 8291 section 5's user agent key) and a 16-byte auth secret.
P256DH = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
AUTH = "AQEBAQEBAQEBAQEBAQEBAQ"
# The vapid_private_key of the fixture app 424242 (fixtures/test-config.toml).
VAPID_PRIVATE_KEY = "thZxbmgB46ISnWUJi2zJgEkCXpw5vxKpAFDr_l2VVeA"
# A fixture app without a VAPID key.
OTHER_RUSHER_APP = {"ident": "app-id", "key": "app-key", "secret": "app-secret"}


def signed_get(app, path, **params):
    """A signed GET on rusher's Pusher HTTP API (auth_version 1.0)."""
    params = dict(params, auth_key=app["key"], auth_timestamp=str(int(time.time())), auth_version="1.0")
    query = "&".join("%s=%s" % (k, params[k]) for k in sorted(params))
    signature = hmac.new(app["secret"].encode(), ("GET\n%s\n%s" % (path, query)).encode(), hashlib.sha256)
    url = "http://%s:%d%s?%s&auth_signature=%s" % (HOST, PORT, path, query, signature.hexdigest())
    return request("GET", url)


class Receiver:
    """A local HTTP server that records each POST (body, lowercase headers)."""

    def __init__(self):
        received = self.received = queue.Queue()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.put((body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout=10.0):
        return self.received.get(timeout=timeout)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    unittest.main()
