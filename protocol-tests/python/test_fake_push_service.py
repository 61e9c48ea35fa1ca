"""The fake push service (fake_push_service.py) checked against independent
encoders: the RFC 8291 §5 worked example and the PyPI `pywebpush` sender
(http_ece + py_vapid), before the suites trust it to judge rusher's sender."""

import time
import unittest

import pywebpush
from cryptography.hazmat.primitives.asymmetric import ec

from fake_push_service import FakePushService, Subscription, b64url_decode, verify_vapid

# RFC 8291 §5.
RFC_UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
RFC_AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
RFC_BODY = (
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_"
    "yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
)
# The RFC's sender key doubles as a VAPID key here.
VAPID_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
VAPID_PUBLIC = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"


class FakePushServiceTest(unittest.TestCase):
    def setUp(self):
        self.service = FakePushService().start()
        self.addCleanup(self.service.stop)

    def push(self, sub, data, claims=None, **kwargs):
        info = dict(endpoint=sub["endpoint"], keys=dict(p256dh=sub["p256dh"], auth=sub["auth"]))
        return pywebpush.webpush(
            subscription_info=info,
            data=data,
            vapid_private_key=VAPID_PRIVATE,
            vapid_claims=dict(claims or {"sub": "mailto:ops@example.com"}),
            ttl=60,
            **kwargs
        )

    def test_decrypts_the_rfc8291_example(self):
        scalar = int.from_bytes(b64url_decode(RFC_UA_PRIVATE), "big")
        key = ec.derive_private_key(scalar, ec.SECP256R1())
        sub = Subscription("rfc", self.service.origin, private_key=key, auth=b64url_decode(RFC_AUTH))
        self.assertEqual(sub.decrypt(b64url_decode(RFC_BODY)), b"When I grow up, I want to be a watermelon")
        corrupt = bytearray(b64url_decode(RFC_BODY))
        corrupt[-1] ^= 1
        with self.assertRaisesRegex(Exception, "tag does not verify"):
            sub.decrypt(bytes(corrupt))

    def test_accepts_pywebpush_and_records_the_plaintext(self):
        sub = self.service.new_subscription()
        response = self.push(sub, '{"event":"my-event"}', headers={"Urgency": "high"})
        self.assertEqual(response.status_code, 201)
        [message] = self.service.wait_for(sub["id"], 1)
        self.assertEqual(message["plaintext"], '{"event":"my-event"}')
        self.assertEqual(message["k"], VAPID_PUBLIC)
        self.assertEqual(message["sub"], "mailto:ops@example.com")
        self.assertEqual(message["ttl"], "60")
        self.assertEqual(message["urgency"], "high")
        self.assertEqual(self.service.subscriptions[sub["id"]].rejected, [])

    def test_answers_the_programmed_statuses_in_order(self):
        sub = self.service.new_subscription()
        self.service.program(sub["id"], [500, 410])
        with self.assertRaises(pywebpush.WebPushException) as first:
            self.push(sub, "one")
        self.assertEqual(first.exception.response.status_code, 500)
        with self.assertRaises(pywebpush.WebPushException) as second:
            self.push(sub, "two")
        self.assertEqual(second.exception.response.status_code, 410)
        self.assertEqual(self.push(sub, "three").status_code, 201)
        statuses = [(m["plaintext"], m["status"]) for m in self.service.wait_for(sub["id"], 3)]
        self.assertEqual(statuses, [("one", 500), ("two", 410), ("three", 201)])

    def assert_rejected(self, sub, status, reason):
        [entry] = self.service.wait_for(sub["id"], 1, kind="rejected")
        self.assertEqual(entry["status"], status)
        self.assertIn(reason, entry["reason"])
        self.assertEqual(self.service.subscriptions[sub["id"]].messages, [])

    def test_rejects_a_wrong_audience(self):
        sub = self.service.new_subscription()
        with self.assertRaises(pywebpush.WebPushException):
            self.push(sub, "x", claims={"sub": "mailto:a@b.c", "aud": "https://other.example"})
        self.assert_rejected(sub, 401, "aud")

    def test_rejects_an_exp_more_than_a_day_away(self):
        sub = self.service.new_subscription()
        claims = {"sub": "mailto:a@b.c", "exp": int(time.time()) + 2 * 86400}
        with self.assertRaises(pywebpush.WebPushException):
            self.push(sub, "x", claims=claims)
        self.assert_rejected(sub, 401, "24 hours")

    def test_rejects_a_body_for_another_key(self):
        sub = self.service.new_subscription()
        other = self.service.new_subscription()
        with self.assertRaises(pywebpush.WebPushException):
            self.push(dict(sub, p256dh=other["p256dh"]), "x")
        self.assert_rejected(sub, 400, "tag does not verify")

    def test_rejects_the_old_aesgcm_coding(self):
        sub = self.service.new_subscription()
        with self.assertRaises(pywebpush.WebPushException):
            self.push(sub, "x", content_encoding="aesgcm")
        self.assert_rejected(sub, 400, "aes128gcm")

    def test_verify_vapid_refuses_a_forged_signature(self):
        origin = "https://push.example"
        vapid = pywebpush.Vapid.from_string(VAPID_PRIVATE)
        claims = {"sub": "mailto:a@b.c", "aud": origin, "exp": int(time.time()) + 3600}
        header = vapid.sign(claims)["Authorization"]
        self.assertEqual(verify_vapid(header, origin)["claims"]["aud"], origin)
        token = header.split("t=")[1].split(",")[0]
        forged = header.replace(token, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
        with self.assertRaisesRegex(Exception, "signature"):
            verify_vapid(forged, origin)
        with self.assertRaisesRegex(Exception, "not in the future"):
            verify_vapid(header, origin, now=time.time() + 7200)


if __name__ == "__main__":
    unittest.main()
