#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (bench/fuzz/corpus/<target>/):
real frames as pusher-js, the server SDKs and peer nodes send them, so the
fuzzer starts from inputs that reach deep into each parser. Run by run.sh;
the seeds are small and committed, this script is how they were made.
The signatures use the `rusher::fuzzing` app (key `key`, secret `secret`,
server time 1000000)."""
import hashlib, hmac, json, os, shutil, sys

ROOT = os.path.dirname(os.path.abspath(__file__))
SEP = "\x1f"


def sign(data):
    return hmac.new(b"secret", data.encode(), hashlib.sha256).hexdigest()


def signed_query(method, path, params, body=""):
    params = dict(params, auth_key="key", auth_timestamp="1000000", auth_version="1.0")
    if body:
        params["body_md5"] = hashlib.md5(body.encode()).hexdigest()
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    signature = sign("\n".join([method, path, query]))
    return f"{query}&auth_signature={signature}"


presence_data = json.dumps({"user_id": "1", "user_info": {"name": "Ada"}}, separators=(",", ":"))
user_data = json.dumps({"id": "u1", "user_info": {"name": "Ada"}, "watchlist": ["u2", 3]}, separators=(",", ":"))
frames = [
    {"event": "pusher:subscribe", "data": {"auth": "", "channel": "my-channel"}},
    {"event": "pusher:subscribe", "data": {"auth": "key:" + sign("123.456:private-chat"), "channel": "private-chat"}},
    {"event": "pusher:subscribe", "data": {"auth": "key:" + sign(f"123.456:presence-room:{presence_data}"),
                                           "channel_data": presence_data, "channel": "presence-room"}},
    {"event": "pusher:subscribe", "data": {"channel": "history-news", "since": 41}},
    {"event": "pusher:subscribe", "data": {"channel": "peer-room:a&b"}},
    {"event": "pusher:unsubscribe", "data": {"channel": "my-channel"}},
    {"event": "pusher:ping", "data": {}},
    {"event": "pusher:pong", "data": {}},
    {"event": "pusher:signin", "data": {"auth": "key:" + sign(f"123.456::user::{user_data}"), "user_data": user_data}},
    {"event": "client-typing", "channel": "private-chat", "data": {"who": "Ada", "n": [1, 2.5, None, True]}},
    {"event": "pusher:ack", "data": {"message_ids": ["m-1", "m-2"]}},
    {"event": "pusher:ack", "data": {"message_id": "m-1"}},
]
frame_texts = [json.dumps(f, separators=(",", ":")) for f in frames]
frame_texts.append('{"event":"pusher:subscribe","data":"{\\"channel\\":\\"a\\"}"}')

event_body = '{"name":"e","data":"{\\"x\\":1}","channels":["a","private-b"],"socket_id":"1.2","info":"subscription_count"}'
batch_body = '{"batch":[{"name":"e","data":"d","channel":"presence-a","info":"user_count,subscription_count","idempotency_key":"k-1"}]}'
follow_body = '{"user_id":"u1","event":"news"}'
http = [
    f"POST\n/apps/1/events\n{signed_query('POST', '/apps/1/events', {}, event_body)}\n{event_body}",
    f"POST\n/apps/1/batch_events\n{signed_query('POST', '/apps/1/batch_events', {}, batch_body)}\n{batch_body}",
    "GET\n/apps/1/channels\n" + signed_query("GET", "/apps/1/channels",
                                              {"info": "user_count,subscription_count", "filter_by_prefix": "presence-"}),
    "GET\n/apps/1/channels/news/history\n" + signed_query("GET", "/apps/1/channels/news/history",
                                                          {"since": "3", "limit": "10"}),
    "GET\n/apps/1/channels\nauth_key=key&auth_timestamp=1000000&info=user_count%2Csubscription_count&auth_signature=00",
    "GET\n/app/key\nprotocol=7&client=js&version=8.4.0&flash=false\n",
    f"POST\n/apps/1/persistence/subscribe\nuser_id=u1\n{follow_body}",
]

sse = [
    "news=42,a%2Cb%3Dc%25d=0\nnews,a\n",
    "12\nnews\n",
    "\npresence-a\nkey:" + sign('sse:1:presence-a:4000000000:{"id":"u1"}') + '\n4000000000\n{"id":"u1"}',
    "\nprivate-a,news\nkey:" + sign("sse:1:private-a,news:4000000000") + "\n4000000000\n",
]

frame = '{"event":"e","channel":"news","data":"{}"}'
redis = [
    f"P{SEP}node-1{SEP}1{SEP}news{SEP}{SEP}{frame}",
    f"P{SEP}node-1{SEP}1{SEP}private-a{SEP}1.2{SEP}{frame}",
    f'H{SEP}node-1{SEP}1{SEP}news{SEP}{SEP}1{SEP}7{SEP}{{"event":"e","channel":"news","data":"{{}}","serial":7}}',
    f"M{SEP}node-1{SEP}42",
    f"T{SEP}node-1{SEP}1{SEP}u1",
    f'node-1{SEP}1.2{SEP}news{SEP}0{SEP}1000{SEP}{{"message_id":"m-1","channel":"news","event":"e","data":"{{}}"}}',
]

corpora = {
    "client_frame": frame_texts,
    "xhr_send": [json.dumps(frame_texts[:3]), "[]", json.dumps([frame_texts[6]])],
    "channel_name": ["my-channel", "private-chat", "presence-room", "private-encrypted-x", "#server-to-user-u1",
                     "peer-room:a&b", "personal-u1", "private-cache-x", "cache-x", "a-Z_0=@,.;", "x" * 164],
    "member_data": [presence_data, '{"user_id":42}', user_data, '{"user_id":"a","peer":true,"user_info":null}'],
    "http_request": http,
    "sse_request": sse,
    "redis_message": redis,
}

def main():
    out = os.path.join(ROOT, "corpus")
    for target, seeds in corpora.items():
        folder = os.path.join(out, target)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for i, seed in enumerate(seeds):
            with open(os.path.join(folder, f"seed-{i:02}"), "w") as f:
                f.write(seed)
    config = os.path.join(out, "config")
    shutil.rmtree(config, ignore_errors=True)
    os.makedirs(config)
    repo = os.path.dirname(os.path.dirname(ROOT))
    shutil.copy(os.path.join(repo, "config.example.toml"), os.path.join(config, "seed-example"))
    shutil.copy(os.path.join(repo, "fixtures", "test-config.toml"), os.path.join(config, "seed-fixture"))
    with open(os.path.join(config, "seed-apps"), "w") as f:
        f.write('[server]\nport = 6001\n[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\nhistory = true\n'
                'history_channels = ["history-"]\n[apps.delivery]\nenabled = true\nretry_backoff = 2.0\n'
                '[[apps.webhooks]]\nurl = "http://127.0.0.1:9/hook"\nevent_types = ["channel_occupied"]\n')


if __name__ == "__main__":
    sys.exit(main())
