#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Measure rbee-workerd as a service sees it (not a test: figures only).

  tests/bench-worker.py BUILD MODEL [--reps N] [--tokens N] [--streams N] [--threads N]

- cold start: process start to READY=1 on the notify socket, with the model
  file in the page cache (it is read once first), median of --reps runs;
- resident memory (VmRSS, file and anonymous parts) at READY=1 and after a
  run of --streams concurrent requests;
- generation: tokens/s of one request alone and the aggregate tokens/s of
  --streams concurrent requests (greedy, ignore_eos, --tokens each), and
  their ratio. Each stream's text is checked against its text alone.
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=600):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def rss(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) / 1024.0
    return out


def start(build, model, tmp, extra):
    ns = os.path.join(tmp, "notify.sock")
    sock = os.path.join(tmp, "worker.sock")
    for p in (ns, sock):
        if os.path.exists(p):
            os.unlink(p)
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(ns)
    n.settimeout(120)
    env = dict(os.environ, NOTIFY_SOCKET=ns, RBEE_LOG_LEVEL="warning")
    t0 = time.monotonic()
    proc = subprocess.Popen([os.path.join(build, "rbee-workerd"), "--model", model, "--listen", sock] + extra,
                            env=env, stderr=subprocess.DEVNULL)
    while True:
        msg = n.recv(4096)
        if b"READY=1" in msg.split(b"\n"):
            break
    ready = time.monotonic() - t0
    n.close()
    return proc, sock, ready


def infer(sock, prompt, tokens, out, i):
    c = UnixHTTPConnection(sock)
    body = json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True})
    c.request("POST", "/v1/inference", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read())
    if r.status != 200:
        raise SystemExit(f"request failed: {r.status} {data}")
    out[i] = data
    c.close()


def concurrent(sock, prompts, tokens):
    out = [None] * len(prompts)
    th = [threading.Thread(target=infer, args=(sock, p, tokens, out, i)) for i, p in enumerate(prompts)]
    t0 = time.monotonic()
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.monotonic() - t0
    return out, sum(o["tokens_out"] for o in out) / wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("model")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    extra = ["--parallel", str(a.streams)] + (["--threads", str(a.threads)] if a.threads else [])

    with open(a.model, "rb") as f:  # into the page cache
        while f.read(1 << 24):
            pass
    size = os.path.getsize(a.model) / 1048576.0
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for _ in range(a.reps):
            proc, sock, ready = start(a.build, a.model, tmp, extra)
            times.append(ready)
            mem = rss(proc.pid)
            proc.terminate()
            proc.wait()
        print(f"cold start to READY=1: median {statistics.median(times) * 1000:.0f} ms "
              f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}, {a.reps} runs); file {size:.0f} MiB")
        print("RSS at READY=1: %.0f MiB (file %.0f, anon %.0f)" % (mem["VmRSS"], mem["RssFile"], mem["RssAnon"]))

        proc, sock, _ = start(a.build, a.model, tmp, extra)
        try:
            prompts = ["Once upon a time", "The little dog ran", "In a small town there was", "One day, a bird"]
            prompts = (prompts * a.streams)[:a.streams]
            alone = []
            rate1 = []
            for p in prompts:
                out, tps = concurrent(sock, [p], a.tokens)
                alone.append(out[0]["text"])
                rate1.append(tps)
            out, tpsn = concurrent(sock, prompts, a.tokens)
            same = all(o["text"] == t for o, t in zip(out, alone))
            mem = rss(proc.pid)
            one = statistics.median(rate1)
            print(f"generation, 1 stream: {one:.2f} tok/s (median of {len(rate1)} requests, wall clock)")
            print(f"generation, {a.streams} streams: {tpsn:.2f} tok/s aggregate = {tpsn / one:.2f}x; "
                  f"texts identical to alone: {same}")
            print("RSS after: %.0f MiB (file %.0f, anon %.0f)" % (mem["VmRSS"], mem["RssFile"], mem["RssAnon"]))
        finally:
            proc.terminate()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
