"""A local SMTP server for notifications.test.mjs (aiosmtpd).

    python smtp_sink.py PORT

Listens on 127.0.0.1:PORT, prints {"ready": true} once listening, then one
JSON line per message received: {"from", "to" (list), "subject", "body"}.
Runs until killed.
"""

import asyncio
import email
import email.policy
import json
import sys

from aiosmtpd.controller import Controller


class Sink:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        print(
            json.dumps(
                {
                    "from": envelope.mail_from,
                    "to": list(envelope.rcpt_tos),
                    "subject": str(message["subject"]),
                    "body": body.get_content() if body else "",
                }
            ),
            flush=True,
        )
        return "250 OK"


def main():
    port = int(sys.argv[1])
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    print(json.dumps({"ready": True}), flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
