#!/usr/bin/env python3
"""Every PromQL expression in the rendered alerts and the dashboard must parse (with a real PromQL
parser, the `promql-parser` package) and name only metrics the worker exports.

usage: check_promql.py RENDERED.yaml DASHBOARD.json [--metrics-file SCRAPE] [--out promql.txt]
Without --metrics-file the names are checked against EXPORTED below; with it, against the names
present in a real /metrics scrape. Prints 'N passed, N failed'.
"""
import argparse, json, re, sys

import promql_parser
import yaml

EXPORTED = {
    "webhook_deliveries_total", "webhook_attempt_duration_seconds", "webhook_delivery_latency_seconds",
    "webhook_queue_depth", "webhook_dead_letters", "webhook_queue_oldest_ready_age_seconds", "webhook_in_flight",
    "webhook_claim_batch_size", "webhook_breaker_transitions_total", "webhook_breaker_open_endpoints",
    "webhook_database_errors_total", "webhook_workers_live", "webhook_build_info",
    "webhook_dispatcher_last_progress_timestamp_seconds",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def names_in(node, out):
    """Collects metric names of every vector selector in the parsed expression."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        out.add(node.name)
        return
    for attr in ("expr", "lhs", "rhs", "param", "vector_selector", "vs"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            names_in(child, out)
    for arg in getattr(node, "args", None) or []:
        names_in(arg, out)


def scraped_names(path):
    names = set()
    for line in open(path):
        if line and not line.startswith("#"):
            match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
            if match:
                names.add(match.group(1))
    return names


def known(name, exported):
    return name in exported or any(name.endswith(s) and name[: -len(s)] in exported for s in HISTOGRAM_SUFFIXES)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("dashboard")
    ap.add_argument("--metrics-file")
    ap.add_argument("--out")
    args = ap.parse_args()
    exprs = []
    for doc in yaml.safe_load_all(open(args.rendered)):
        if doc and doc.get("kind") == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                exprs += [("alert " + r["alert"], r["expr"]) for r in group["rules"]]
    dashboard = json.load(open(args.dashboard))
    for panel in dashboard["panels"]:
        exprs += [("panel " + panel["title"], t["expr"]) for t in panel.get("targets", [])]
    exported = scraped_names(args.metrics_file) if args.metrics_file else EXPORTED
    if args.out:
        open(args.out, "w").write("\n".join(" ".join(e.split()) for _, e in exprs) + "\n")
    passed = failed = 0
    for where, expr in exprs:
        # Grafana's interval variable is not PromQL; give it a value the parser accepts.
        text = expr.replace("$__rate_interval", "5m")
        try:
            tree = promql_parser.parse(text)
        except Exception as err:  # the parser raises ValueError with the position
            print(f"FAIL {where}: does not parse: {err}\n  {text}")
            failed += 1
            continue
        names = set()
        names_in(tree, names)
        unknown = sorted(n for n in names if not known(n, exported))
        if not names:
            print(f"FAIL {where}: names no metric")
            failed += 1
        elif unknown:
            print(f"FAIL {where}: unknown metrics {unknown}")
            failed += 1
        else:
            passed += 1
    print(f"promql: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
