#!/usr/bin/env python3
"""Markdown reports of bench/soak.sh: soak.md and frame-fuzz.md from the
rusher-bench JSON results (soak.json, frame-fuzz.json).

Usage: soak_report.py JSON_DIR RESULTS_DIR COMMIT LOAD_AVERAGE
"""
import datetime
import json
import os
import sys


def mib(b):
    return "n/a" if b is None else f"{b / 1048576:.1f}"


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def header(title, commit, load_average):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# {title}",
        "",
        f"Run {now}, rusher {commit}, by `bench/soak.sh` (release build, "
        "`fixtures/test-config.toml`, a fresh server per scenario). The machine has "
        f"2 cores shared with the generator and other jobs (load average {load_average}).",
        "",
    ]


def soak(report, commit, load_average):
    p, d = report["params"], report["details"]
    after = d["after"]
    lines = header("Soak: connect / subscribe / abrupt close cycles", commit, load_average)
    lines += [
        f"{p['cycles']} cycles ({p['warmup']} of them warm-up, before the baseline), "
        f"{p['concurrency']} at once, {p['presence_channels']} presence channels, "
        f"{p['users']} user ids (so one user is a member through several sockets), seed {p['seed']}. "
        "Each cycle: connect, `connection_established`, subscribe to a presence channel "
        "(signed auth + channel_data) and a public channel, both `subscription_succeeded`, "
        "then go away.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| cycles done / failed | {d['cycles_done']} / {d['failed']} |",
        f"| closed with RST (SO_LINGER 0) / FIN without close frame / clean close | "
        f"{d['ended_reset']} / {d['ended_drop']} / {d['ended_clean']} |",
        f"| duration of the measured cycles | {d['cycle_seconds']:.2f} s |",
        f"| cycles/s | {d['cycles_per_s']:.0f} |",
        f"| time until the server was empty | {d['reap_seconds']:.3f} s |",
        f"| `GET /apps/{{id}}/channels` after | {len(after['channels'])} channels |",
        f"| `rusher_connections` after | {after['connections']} |",
        f"| presence members after | {sum(n for _, n in after['members'])} in {len(after['members'])} channels |",
        f"| server RSS baseline (after warm-up) | {mib(d['server_rss_baseline_bytes'])} MiB |",
        f"| server RSS after the cycles | {mib(d['server_rss_after_bytes'])} MiB |",
        f"| RSS after / baseline | {d['server_rss_ratio']:.3f} (limit {1 + p['rss_tolerance']:.2f}) |",
        f"| result | {'OK' if report['ok'] else 'FAILED: ' + '; '.join(report['problems'])} |",
        "",
    ]
    return lines


def fuzz(report, commit, load_average):
    p, d = report["params"], report["details"]
    lines = header("Black-box frame fuzzer", commit, load_average)
    lines += [
        f"{d['frames_sent']} random and mutated frames from {p['connections']} connections "
        f"(seed {p['seed']}, `max_frame_bytes` {p['max_frame_bytes']}), each followed by a "
        f"`pusher:ping` barrier ({d['barrier_pings']} in all) so that \"no answer\" is checked "
        "exactly. Replay: `rusher-bench frame-fuzz --seed N` with the same connection count.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| duration | {d['seconds']:.1f} s |",
        f"| frames/s | {d['frames_per_s']:.0f} |",
        f"| answers of the wrong class | {d['mismatches']} |",
        f"| reconnects (after a close, an open-ended case, or an abrupt drop) | {d['reconnects']} |",
        f"| connection errors | {sum(d['connect_errors'].values())} |",
        f"| server alive afterwards | {'yes' if d['server_alive'] else 'NO'} |",
        f"| normal client afterwards (connect, subscribe, receive) | {d['normal_client']} |",
        f"| channels / connections left | {len((d['after'] or {}).get('channels', [])) if d['after'] else 'n/a'} / "
        f"{(d['after'] or {}).get('connections', 'n/a')} |",
        f"| server RSS baseline / peak / after | {mib(d['server_rss_baseline_bytes'])} / "
        f"{mib(d['server_rss_peak_bytes'])} / {mib(d['server_rss_after_bytes'])} MiB "
        f"(peak growth limit {p['rss_growth_mib']:.0f} MiB) |",
        f"| result | {'OK' if report['ok'] else 'FAILED'} |",
        "",
        "Answers per class:",
        "",
        "| answer | count |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in sorted(d["answers"].items())]
    lines += ["", "Answers per kind of frame:", "", "| frame | sent | answers |", "|---|---|---|"]
    for kind, answers in sorted(d["answers_by_kind"].items()):
        shown = ", ".join(f"{k} {v}" for k, v in sorted(answers.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {kind} | {d['by_kind'].get(kind, 0)} | {shown} |")
    if d["mismatch_examples"]:
        lines += ["", "Wrong answers (first 20):", ""]
        lines += [f"- `{e}`" for e in d["mismatch_examples"]]
    lines.append("")
    return lines


def main():
    src, dst, commit, load_average = sys.argv[1:5]
    os.makedirs(dst, exist_ok=True)
    for name, render in (("soak", soak), ("frame-fuzz", fuzz)):
        path = os.path.join(src, f"{name}.json")
        if not os.path.exists(path):
            print(f"soak_report: no {path}; {name}.md not written", file=sys.stderr)
            continue
        text = "\n".join(render(load(path), commit, load_average))
        with open(os.path.join(dst, f"{name}.md"), "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
