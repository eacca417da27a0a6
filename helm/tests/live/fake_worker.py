#!/usr/bin/env python3
"""A stand-in for a worker's /metrics, for testing helm/tools/live_prometheus.py without the Rust
binary: serves worker-metrics.prom (every metric name, label and bucket of
worker/src/observe/metrics.rs, in metrics-exporter-prometheus's format) on 127.0.0.1, with the
counters and histograms growing on every scrape (so rate() has something to see) and the
dispatcher's progress timestamp at the current time. It is not the worker: a renamed metric in the
worker shows only when the live check runs against real workers (bash helm/check.sh --live …).

usage: fake_worker.py PORT_FILE [--lifetime SECONDS] [--metrics FILE]
  Binds a free port, writes it to PORT_FILE, serves until --lifetime (default 120 s) ends.
  --metrics: another exposition beside this file (api-metrics.prom: a fake management API).
"""
import argparse
import http.server
import os
import re
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Label values may hold braces (the API's route templates: /api/v1/app/{app_id}/msg).
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})? (\S+)$')


def load(path=os.path.join(HERE, "worker-metrics.prom")):
    types, lines = {}, []
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        lines.append(line)
    return types, lines


TYPES, LINES = load()
SCRAPES = [0]
LOCK = threading.Lock()


def kind_of(name):
    for suffix in ("_bucket", "_sum", "_count", ""):
        if suffix and name.endswith(suffix) and TYPES.get(name[: -len(suffix)]) == "histogram":
            return "histogram"
        if not suffix:
            return TYPES.get(name, "gauge")
    return "gauge"


def render():
    with LOCK:
        SCRAPES[0] += 1
        factor = SCRAPES[0]
    out = []
    for line in LINES:
        m = LINE.match(line)
        if not m:
            out.append(line)
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name.endswith("_timestamp_seconds"):
            value = time.time()
        elif kind_of(name) in ("counter", "histogram"):
            value *= factor  # every count grows in proportion: histograms stay consistent
        out.append(f"{name}{labels} {value:g}" if value == int(value) else f"{name}{labels} {value}")
    return ("\n".join(out) + "\n").encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = render()
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port_file")
    ap.add_argument("--lifetime", type=float, default=120)
    ap.add_argument("--metrics", help="the exposition to serve (default: worker-metrics.prom)")
    args = ap.parse_args()
    if args.metrics:
        TYPES.clear(), LINES.clear()
        types, lines = load(args.metrics)
        TYPES.update(types), LINES.extend(lines)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.port_file + ".tmp", "w") as fh:
        fh.write(str(server.server_address[1]))
    os.replace(args.port_file + ".tmp", args.port_file)
    # Bounded whatever happens to the caller.
    threading.Timer(args.lifetime, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
