#!/usr/bin/env python3
"""A process joins a Roster cluster over HTTP, with Python's standard library only.

It registers itself on a server, heartbeats while it works, and deregisters with its
exit status when done. Every write is exactly once: the script opens a session and
numbers its writes, so a write repeated after a lost answer is applied once.

    python3 examples/member.py --url http://127.0.0.1:7501 --token-file roster-data/token \
        --server 1 --name py-worker --beats 5

Exit status: 0 when it registered, heartbeat and left; 1 with a one-line error otherwise.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


class Roster:
    def __init__(self, url, token, timeout_s=10.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.session = None
        self.seq = 0

    def call(self, method, path, body=None, session=False):
        """One request; returns the JSON answer or raises RuntimeError naming the error."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"}
        if session:
            self.seq += 1
            headers["Roster-Session"] = str(self.session)
            headers["Roster-Seq"] = str(self.seq)
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        # A write that timed out may or may not have happened: repeat it with the same
        # session and sequence number, and the cluster answers the stored reply.
        last = None
        for attempt in range(5):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                    return json.loads(answer.read() or b"{}")
            except urllib.error.HTTPError as e:
                error = json.loads(e.read() or b"{}").get("error", {})
                # 503: no leader right now; 504: no answer in time. Every call here is
                # safe to repeat: session writes, heartbeats and opening a session.
                if e.code in (503, 504):
                    last = f"{e.code} {error.get('kind')}: {error.get('message')}"
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise RuntimeError(f"{method} {path}: {e.code} {error.get('kind')}: {error.get('message')}")
            except (urllib.error.URLError, TimeoutError) as e:
                last = e
                time.sleep(0.2 * (attempt + 1))
                continue
        raise RuntimeError(f"{method} {path}: no answer after 5 attempts (last: {last})")

    def open_session(self):
        self.session = self.call("POST", "/v1/sessions")["session"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="a node's HTTP address, e.g. http://127.0.0.1:7501")
    p.add_argument("--token-file", required=True, help="file holding the cluster token")
    p.add_argument("--server", type=int, required=True, help="id of the server this process runs on")
    p.add_argument("--name", default="py-worker")
    p.add_argument("--port", type=int, help="the port this process serves on, if any")
    p.add_argument("--beats", type=int, default=3, help="heartbeats to send before leaving")
    p.add_argument("--interval-s", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--exit-status", type=int, default=0, help="the exit status to leave with")
    args = p.parse_args()

    with open(args.token_file) as f:
        roster = Roster(args.url, f.read().strip())
    try:
        roster.open_session()
        body = {"name": args.name, "server": args.server, "labels": {"lang": "python"}}
        if args.port is not None:
            body["port"] = args.port
        registered = roster.call("POST", "/v1/processes", body, session=True)
        pid = registered["id"]
        print(f"registered process-{pid} at revision {registered['revision']}", flush=True)
        for beat in range(args.beats):
            roster.call("PUT", f"/v1/processes/{pid}/heartbeat", {"cpu_percent": 1, "mem_bytes": 10 << 20})
            print(f"heartbeat {beat + 1}", flush=True)
            time.sleep(args.interval_s)
        left = roster.call("DELETE", f"/v1/processes/{pid}?exit={args.exit_status}", session=True)
        print(f"deregistered process-{pid} at revision {left['revision']}", flush=True)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
