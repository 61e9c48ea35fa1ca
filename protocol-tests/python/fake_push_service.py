"""A fake Web Push service (RFC 8030) for the tests: it checks what a real
push service checks and decrypts what only the browser could.

For each subscription it makes (a fresh P-256 key pair and 16-byte auth
secret, as a browser's PushManager.subscribe() does) it serves
POST /push/{id}. Each POST is checked:
  - Authorization: vapid t=<JWT>, k=<key> (RFC 8292): ES256 signature
    against k, "aud" equal to this service's origin, "exp" in the future
    and at most 24 h away, "sub" a mailto: or https: URI;
  - TTL present (a non-negative integer), Content-Encoding: aes128gcm;
  - the body decrypted (RFC 8291 key derivation, RFC 8188 record with the
    last-record delimiter) with the subscription's private key.
A request that fails a check is answered 400 (401 for VAPID, as push
services do) and recorded in "rejected" with the reason; one that passes is
recorded in "messages" with its plaintext, and answered with the next
status programmed for the subscription (201 when none is left).

Use it from Python (FakePushService) or as a process for the Node and Rust
tests: `python fake_push_service.py` prints one JSON line {"origin": ...}
on stdout and serves the control API beside the push endpoints:
  POST /control/subscriptions               -> {id, endpoint, p256dh, auth}
  POST /control/subscriptions/{id}/answers  {"statuses": [410], "retry_after": "3"}
  GET  /control/subscriptions/{id}          -> {messages: [...], rejected: [...]}
Standard library and `cryptography` only (the decryption is written here
from the RFCs, independently of the sender under test).
"""

import base64
import json
import os
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAX_BODY = 4096
""" The most body bytes a push service must accept (RFC 8030 §7.2) """


def b64url_decode(text):
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _hmac(key, *parts):
    mac = hmac.HMAC(key, hashes.SHA256())
    for part in parts:
        mac.update(part)
    return mac.finalize()


class Rejected(Exception):
    def __init__(self, status, reason):
        Exception.__init__(self, reason)
        self.status = status
        self.reason = reason


class Subscription:
    def __init__(self, sid, origin, private_key=None, auth=None):
        self.id = sid
        self.private_key = private_key or ec.generate_private_key(ec.SECP256R1())
        self.public_bytes = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.auth = auth or os.urandom(16)
        self.endpoint = "%s/push/%s" % (origin, sid)
        self.answers = []
        self.retry_after = None
        self.messages = []
        self.rejected = []

    def info(self):
        return dict(
            id=self.id,
            endpoint=self.endpoint,
            p256dh=b64url_encode(self.public_bytes),
            auth=b64url_encode(self.auth),
        )

    def decrypt(self, body):
        """RFC 8188 §2.1 header, RFC 8291 §3.3-3.4 keys, one record."""
        if len(body) > MAX_BODY:
            raise Rejected(413, "body of %d bytes is over %d" % (len(body), MAX_BODY))
        if len(body) < 21:
            raise Rejected(400, "body shorter than the aes128gcm header")
        salt = body[:16]
        (rs,) = struct.unpack(">I", body[16:20])
        idlen = body[20]
        keyid = body[21 : 21 + idlen]
        record = body[21 + idlen :]
        if idlen != 65:
            raise Rejected(400, "keyid is %d bytes, not a 65-byte P-256 point" % idlen)
        if len(record) > rs:
            raise Rejected(400, "more than one record (rs=%d, %d bytes)" % (rs, len(record)))
        try:
            as_public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), keyid)
        except ValueError:
            raise Rejected(400, "keyid is not a point on P-256")
        ecdh_secret = self.private_key.exchange(ec.ECDH(), as_public)
        prk_key = _hmac(self.auth, ecdh_secret)
        ikm = _hmac(prk_key, b"WebPush: info\x00", self.public_bytes, keyid, b"\x01")
        prk = _hmac(salt, ikm)
        cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00", b"\x01")[:16]
        nonce = _hmac(prk, b"Content-Encoding: nonce\x00", b"\x01")[:12]
        try:
            padded = AESGCM(cek).decrypt(nonce, record, None)
        except InvalidTag:
            raise Rejected(400, "AES-GCM tag does not verify: wrong keys or corrupt body")
        stripped = padded.rstrip(b"\x00")
        if not stripped.endswith(b"\x02"):
            raise Rejected(400, "last record without the 0x02 delimiter")
        return stripped[:-1]


def verify_vapid(authorization, origin, now=None):
    """Checks an RFC 8292 `vapid t=..., k=...` header; returns the claims."""
    now = time.time() if now is None else now
    if not authorization or not authorization.startswith("vapid "):
        raise Rejected(401, "no `Authorization: vapid t=..., k=...` header")
    params = {}
    for part in authorization[len("vapid ") :].split(","):
        name, _, value = part.strip().partition("=")
        params[name.strip()] = value.strip()
    if "t" not in params or "k" not in params:
        raise Rejected(401, "vapid header without t= or k=")
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(params["k"]))
    except ValueError:
        raise Rejected(401, "k= is not a P-256 public key")
    parts = params["t"].split(".")
    if len(parts) != 3:
        raise Rejected(401, "t= is not a JWS compact serialization")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        raise Rejected(401, "t= is not base64url JSON")
    if header.get("alg") != "ES256":
        raise Rejected(401, "JWT alg is %r, not ES256" % header.get("alg"))
    if len(signature) != 64:
        raise Rejected(401, "ES256 signature is %d bytes, not 64 (r|s)" % len(signature))
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, (parts[0] + "." + parts[1]).encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Rejected(401, "JWT signature does not verify against k=")
    if claims.get("aud") != origin:
        raise Rejected(401, "aud %r is not this push service's origin %r" % (claims.get("aud"), origin))
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= now:
        raise Rejected(401, "exp %r is not in the future" % exp)
    if exp > now + 86400:
        raise Rejected(401, "exp is more than 24 hours away (RFC 8292 §2)")
    sub = claims.get("sub", "")
    if not (isinstance(sub, str) and (sub.startswith("mailto:") or sub.startswith("https:"))):
        raise Rejected(401, "sub %r is not a mailto: or https: URI" % sub)
    return dict(claims=claims, k=params["k"])


class FakePushService:
    """The service on 127.0.0.1 and a free port (port=0)."""

    def __init__(self, host="127.0.0.1", port=0):
        service = self
        self.lock = threading.Condition()
        self.subscriptions = {}
        self.counter = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status, doc=None, headers=None):
                body = b"" if doc is None else json.dumps(doc).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if doc is not None:
                    self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_GET(self):
                parts = self.path.strip("/").split("/")
                if len(parts) == 3 and parts[:2] == ["control", "subscriptions"]:
                    with service.lock:
                        sub = service.subscriptions.get(parts[2])
                        if sub:
                            return self._answer(200, dict(messages=sub.messages, rejected=sub.rejected))
                return self._answer(404, dict(error="not found"))

            def do_POST(self):
                body = self._body()
                parts = self.path.strip("/").split("/")
                if parts == ["control", "subscriptions"]:
                    return self._answer(200, service.new_subscription())
                if len(parts) == 4 and parts[:2] == ["control", "subscriptions"] and parts[3] == "answers":
                    doc = json.loads(body or b"{}")
                    service.program(parts[2], doc.get("statuses", []), doc.get("retry_after"))
                    return self._answer(200, dict(ok=True))
                if len(parts) == 2 and parts[0] == "push":
                    status, headers = service.receive(parts[1], self.headers, body)
                    return self._answer(status, None, headers)
                return self._answer(404, dict(error="not found"))

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.origin = "http://%s:%d" % (host, self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def new_subscription(self):
        """A new subscription: {id, endpoint, p256dh, auth} as a browser gives."""
        with self.lock:
            self.counter += 1
            sub = Subscription("s%d" % self.counter, self.origin)
            self.subscriptions[sub.id] = sub
            return sub.info()

    def program(self, sid, statuses, retry_after=None):
        """The statuses the next accepted POSTs to `sid` get, in order."""
        with self.lock:
            sub = self.subscriptions[sid]
            sub.answers.extend(int(s) for s in statuses)
            sub.retry_after = retry_after

    def receive(self, sid, headers, body):
        with self.lock:
            sub = self.subscriptions.get(sid)
            if sub is None:
                return 404, {}
            entry = dict(ttl=headers.get("TTL"), urgency=headers.get("Urgency"), at=time.time())
            try:
                if headers.get("Content-Encoding", "").lower() != "aes128gcm":
                    raise Rejected(400, "Content-Encoding is %r, not aes128gcm" % headers.get("Content-Encoding"))
                ttl = headers.get("TTL")
                if ttl is None or not ttl.isdigit():
                    raise Rejected(400, "TTL header missing or not a non-negative integer")
                vapid = verify_vapid(headers.get("Authorization"), self.origin)
                plaintext = sub.decrypt(body)
            except Rejected as error:
                entry.update(status=error.status, reason=error.reason)
                sub.rejected.append(entry)
                self.lock.notify_all()
                return error.status, {}
            status = sub.answers.pop(0) if sub.answers else 201
            answer = {}
            if status == 201:
                answer["Location"] = "%s/message/%d" % (self.origin, len(sub.messages))
            if status in (429, 503) and sub.retry_after is not None:
                answer["Retry-After"] = str(sub.retry_after)
            try:
                text = plaintext.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            entry.update(
                status=status,
                plaintext=text,
                plaintext_b64=b64url_encode(plaintext),
                sub=vapid["claims"]["sub"],
                exp=vapid["claims"]["exp"],
                k=vapid["k"],
            )
            sub.messages.append(entry)
            self.lock.notify_all()
            return status, answer

    def wait_for(self, sid, count, timeout=10.0, kind="messages"):
        """Waits until `sid` has `count` entries of `kind`; returns them."""
        deadline = time.time() + timeout
        with self.lock:
            while True:
                entries = getattr(self.subscriptions[sid], kind)
                if len(entries) >= count:
                    return list(entries)
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("%s: %d %s after %.0f s, wanted %d" % (sid, len(entries), kind, timeout, count))
                self.lock.wait(left)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    service = FakePushService(port=port).start()
    print(json.dumps(dict(origin=service.origin)), flush=True)
    try:
        # Ends with its parent: stdin closes when the test process exits.
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    service.stop()


if __name__ == "__main__":
    main()
