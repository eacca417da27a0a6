#!/usr/bin/env python3
"""Every PromQL expression of the chart must parse with a real PromQL parser (the `promql-parser`
package: Python bindings of GreptimeTeam's Rust parser, which also type-checks function arguments)
and name only metrics the worker exports.

usage: check_promql.py RENDERED.yaml DASHBOARD.json [--keda KEDA_RENDERED.yaml]
                       [--adapter ADAPTER_VALUES.yaml] [--metrics-file SCRAPE] [--out promql.txt]

Expressions: the `expr` of every rule of the PrometheusRule in RENDERED.yaml and every target of the
dashboard (one line 'promql: N passed, N failed'); with --keda, the queries of the ScaledObject's
prometheus triggers (a second line 'keda promql: …'); with --adapter, the metricsQuery of every
prometheus-adapter rule in that values file, its <<.Series>>, <<.LabelMatchers>> and <<.GroupBy>>
filled in as the adapter would. --out writes them all, one per line.
Without --metrics-file names are checked against EXPORTED below; with it, against the metric names
present in that Prometheus text exposition (a histogram's base name counts for its _bucket, _sum
and _count series).
"""
import argparse
import json
import re
import sys

import promql_parser
import yaml

EXPORTED = {
    "webhook_deliveries_total", "webhook_attempt_duration_seconds", "webhook_delivery_latency_seconds",
    "webhook_queue_depth", "webhook_dead_letters", "webhook_queue_oldest_ready_age_seconds", "webhook_in_flight",
    "webhook_claim_batch_size", "webhook_breaker_transitions_total", "webhook_breaker_open_endpoints",
    "webhook_database_errors_total", "webhook_workers_live", "webhook_build_info",
    "webhook_database_oldest_transaction_age_seconds", "webhook_claim_duration_seconds",
    "webhook_protection_deferred_total",
    "webhook_dispatcher_last_progress_timestamp_seconds",
    # the management API's (`webhook-worker api`, api.enabled)
    "webhook_api_requests_total", "webhook_api_request_duration_seconds",
}
# Series the worker does not export but some alerts read: Prometheus's own `up`, and
# kube-state-metrics' (see prometheusRule.kubeStateMetrics). Accepted by name with or without
# --metrics-file, and listed so a rename there is a deliberate edit.
NON_WORKER = {
    "up": "Prometheus (scrape health)",
    "kube_deployment_spec_replicas": "kube-state-metrics",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_condition": "kube-state-metrics",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana variables are not PromQL: give them values the parser accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def names_in(node, out):
    """Collects the metric name of every vector selector anywhere in the parsed expression."""
    if type(node).__name__ == "VectorSelector":
        out.append(node.name)
        return
    for attr in dir(node):
        if attr.startswith("_"):
            continue
        value = getattr(node, attr)
        for child in value if isinstance(value, list) else [value]:
            if type(child).__module__.startswith("promql_parser") and type(child).__name__.endswith(
                ("Expr", "Selector", "Call", "Literal")
            ):
                names_in(child, out)


def scraped_names(path):
    """Metric names present in a Prometheus text exposition, plus the base names of histograms."""
    names = set()
    for line in open(path):
        line = line.strip()
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4 and parts[3] in ("histogram", "summary"):
                names.add(parts[2])
        elif line and not line.startswith("#"):
            match = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            if match:
                names.add(match.group(0))
                for suffix in HISTOGRAM_SUFFIXES:
                    if match.group(0).endswith(suffix):
                        names.add(match.group(0)[: -len(suffix)])
    return names


def adapter_queries(path):
    """(where, query) for each prometheus-adapter rule, with the adapter's template fields filled in."""
    values = yaml.safe_load(open(path))
    out = []
    for kind in ("custom", "external"):
        for rule in values.get("rules", {}).get(kind, []):
            series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
            resources = list(rule.get("resources", {}).get("overrides", {}))
            query = (rule["metricsQuery"].replace("<<.Series>>", series)
                     .replace("<<.LabelMatchers>>", ",".join(f'{r}=~".+"' for r in resources))
                     .replace("<<.GroupBy>>", ", ".join(resources)))
            out.append((f"adapter {kind} {rule['name']['as']}", query))
            out.append((f"adapter {kind} seriesQuery", rule["seriesQuery"]))
    return out


def known(name, exported):
    return name in NON_WORKER or name in exported or any(name.endswith(s) and name[: -len(s)] in exported for s in HISTOGRAM_SUFFIXES)


def check(label, exprs, exported):
    passed = failed = 0
    for where, expr in exprs:
        text = expr
        for variable, value in GRAFANA_VARIABLES.items():
            text = text.replace(variable, value)
        try:
            tree = promql_parser.parse(text)
        except Exception as err:  # the parser raises ValueError naming the problem
            print(f"FAIL {where}: does not parse: {err}\n  {text}")
            failed += 1
            continue
        names = []
        names_in(tree, names)
        unknown = sorted({n for n in names if n is None or not known(n, exported)}, key=str)
        if not names:
            print(f"FAIL {where}: names no metric\n  {text}")
            failed += 1
        elif unknown:
            print(f"FAIL {where}: unknown metrics {unknown}\n  {text}")
            failed += 1
        else:
            passed += 1
    print(f"{label}: {passed} passed, {failed} failed")
    return failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("dashboard")
    ap.add_argument("--keda")
    ap.add_argument("--metrics-file")
    ap.add_argument("--adapter")
    ap.add_argument("--out")
    args = ap.parse_args()

    exprs = []
    for doc in yaml.safe_load_all(open(args.rendered)):
        if doc and doc.get("kind") == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                exprs += [("alert " + r.get("alert", r.get("record", "?")), r["expr"]) for r in group["rules"]]
    if not exprs:
        print(f"FAIL no PrometheusRule with rules in {args.rendered}")
        return 1
    dashboard = json.load(open(args.dashboard))
    panels = list(dashboard["panels"])
    for panel in list(panels):  # rows may nest panels
        panels += panel.get("panels", [])
    for panel in panels:
        exprs += [(f"panel {panel['title']!r} {t.get('refId', '')}", t["expr"]) for t in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, dict):
            query = query.get("query", "")
        if variable.get("type") == "query" and query:
            match = re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_]\w*\)", query.strip())
            if not match:
                print(f"FAIL variable {variable['name']}: not label_values(selector, label): {query}")
                return 1
            exprs.append((f"variable {variable['name']}", match.group(1)))

    keda = []
    if args.keda:
        for doc in yaml.safe_load_all(open(args.keda)):
            if doc and doc.get("kind") == "ScaledObject":
                keda += [
                    (f"trigger {t.get('name', t['type'])}", t["metadata"]["query"])
                    for t in doc["spec"]["triggers"]
                    if t["type"] == "prometheus"
                ]
        if not keda:
            print(f"FAIL no ScaledObject with prometheus triggers in {args.keda}")
            return 1

    adapter = adapter_queries(args.adapter) if args.adapter else []
    exported = scraped_names(args.metrics_file) if args.metrics_file else EXPORTED
    if args.metrics_file:
        print(f"checking names against {len(exported)} names in {args.metrics_file}")
    if args.out:
        with open(args.out, "w") as out:
            out.write("".join(" ".join(e.split()) + "\n" for _, e in exprs + keda + adapter))
    failed = check("promql", [e for e in exprs if not e[0].startswith("variable ")], exported)
    failed += check("promql (dashboard variables)", [e for e in exprs if e[0].startswith("variable ")], exported)
    if keda:
        failed += check("promql (KEDA triggers)", keda, exported)
    if adapter:
        failed += check("promql (prometheus-adapter rules)", adapter, exported)
    used = {n for _, e in exprs for n in NON_WORKER if re.search(rf"\b{n}\b", e)}
    if used:
        print("not exported by the worker (by name only): " + ", ".join(f"{n} ({NON_WORKER[n]})" for n in sorted(used)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
