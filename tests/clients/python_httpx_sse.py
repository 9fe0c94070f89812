"""The server against a Python SSE client: httpx with httpx-sse.

    python3 tests/clients/python_httpx_sse.py http://127.0.0.1:PORT

Run by tests/clients.rs against a server started with `--interval 300ms --retry 300ms`.
Prints `ok <check>` per check and `@@ pass` at the end; exits non-zero on failure.
"""

import json
import sys
import threading
import time
import os

import httpx
from httpx_sse import connect_sse

BASE = sys.argv[1] if len(sys.argv) > 1 else sys.exit("usage: python_httpx_sse.py http://HOST:PORT")
TIMEOUT = httpx.Timeout(5.0)


def watchdog(limit: float) -> None:
    """Exits the process if the checks take longer than `limit` seconds."""

    def fire() -> None:
        print(f"FAIL: overall time limit ({limit:.0f} s) passed", file=sys.stderr, flush=True)
        os._exit(1)

    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()


def publish(client: httpx.Client, data: str, **params: str) -> str:
    r = client.post(f"{BASE}/publish", params=params, content=data.encode())
    assert r.status_code == 200, f"publish: {r.status_code} {r.text}"
    return r.text.strip()


_iterators = {}
retries = []  # `retry:` values seen


def collect(event_source, until, limit: float = 8.0):
    """Reads events (as (event, data, id) tuples) until `until(events)` holds. One iterator
    per stream: an httpx response body can be iterated only once."""
    it = _iterators.setdefault(id(event_source), event_source.iter_sse())
    events = []
    deadline = time.monotonic() + limit
    for sse in it:
        if sse.retry is not None:
            retries.append(sse.retry)
        if sse.data == "":
            # httpx-sse yields a field block without data (the `retry:` prelude); the
            # EventSource algorithm dispatches nothing for it.
            continue
        events.append((sse.event, sse.data, sse.id))
        if until(events):
            return events
        assert time.monotonic() < deadline, f"timed out; got {events[-10:]}"
    raise AssertionError(f"the stream ended early; got {events[-10:]}")


def with_ids(events):
    return [e for e in events if e[2]]


def main() -> None:
    watchdog(60)
    with httpx.Client(timeout=TIMEOUT) as client, httpx.Client(timeout=TIMEOUT) as pub:
        # Ticks: unnamed events, no id.
        with connect_sse(client, "GET", f"{BASE}/events") as es:
            assert es.response.status_code == 200
            assert es.response.headers["content-type"].startswith("text/event-stream")
            events = collect(es, lambda ev: any(d.startswith("the time is") for _, d, _ in ev))
            tick = next(e for e in events if e[1].startswith("the time is"))
            assert tick[0] == "message" and tick[2] == "", tick
            print("ok ticks", flush=True)
            assert retries == [300], f"the server's retry: 300 (from --retry 300ms); got {retries}"
            print("ok retry", flush=True)

            # A named event and multi-line data, published while the stream is open.
            alert = publish(pub, "fire", event="alert")
            text = "line one\nline two\n\n  indented\r\nafter a CRLF"
            multi = publish(pub, text)
            events = collect(es, lambda ev: any(i == multi for _, _, i in ev))
            got = with_ids(events)
            assert got == [
                ("alert", "fire", alert),
                ("message", "line one\nline two\n\n  indented\nafter a CRLF", multi),
            ], got
            print("ok named event", flush=True)
            print("ok multi-line data", flush=True)

        # Resume with a Last-Event-ID header: exactly the missed events, then live ones.
        missed = [publish(pub, f"missed {i}") for i in range(1, 4)]
        with connect_sse(client, "GET", f"{BASE}/events", headers={"Last-Event-ID": multi}) as es:
            events = collect(es, lambda ev: len(with_ids(ev)) >= 3)
            live = publish(pub, "live after resume")
            events += collect(es, lambda ev: any(i == live for _, _, i in ev))
            ids = [i for _, _, i in with_ids(events)]
            assert ids == missed + [live], ids
            assert not any(e[0] == "reset" for e in events), events
        print("ok resume with Last-Event-ID", flush=True)

        # The same with `?lastEventId=` (for clients that cannot set headers).
        with connect_sse(client, "GET", f"{BASE}/events", params={"lastEventId": missed[0]}) as es:
            events = collect(es, lambda ev: any(i == live for _, _, i in ev))
            ids = [i for _, _, i in with_ids(events)]
            assert ids == missed[1:] + [live], ids
        print("ok resume with ?lastEventId=", flush=True)

        # An unknown id: the gap signal first.
        with connect_sse(client, "GET", f"{BASE}/events", headers={"Last-Event-ID": "nosuchid"}) as es:
            first = collect(es, lambda ev: len(ev) >= 1)[0]
            assert first[0] == "reset" and json.loads(first[1]) == {"reason": "unknown-id"}, first
        print("ok reset for an unknown id", flush=True)

        # Topics: a stream of two topics gets both, and not the default stream's events.
        with connect_sse(client, "GET", f"{BASE}/events", params=[("topic", "a"), ("topic", "b")]) as es:
            ea = publish(pub, "to a", topic="a")
            publish(pub, "to the default stream")
            eb = publish(pub, "to b", topic="b", event="note")
            events = collect(es, lambda ev: any(i == eb for _, _, i in ev))
            assert with_ids(events) == [("message", "to a", ea), ("note", "to b", eb)], events
        print("ok topics", flush=True)

    print("@@ pass", flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL: {e!r}", file=sys.stderr, flush=True)
        raise
