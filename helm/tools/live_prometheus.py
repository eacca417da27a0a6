#!/usr/bin/env python3
"""Evaluates every dashboard panel query and every alert expression of the chart against a real
Prometheus scraping live workers, so that a renamed metric or label can never leave a panel blank
or an alert blind. Parsing (check_promql.py) proves an expression is PromQL; this proves it
returns data.

usage: live_prometheus.py --target HOST:PORT [--target …] --rendered RENDERED.yaml
                          [--dashboard DASHBOARD.json] [--keda KEDA_RENDERED.yaml]
                          [--adapter ADAPTER_VALUES.yaml] [--namespace webhooks]
                          [--job rel-webhook-delivery] [--prometheus /usr/bin/prometheus]
                          [--timeout 90] [--settle 5] [--exempt METRIC …]
                          [--api-target HOST:PORT …] [--api-job rel-webhook-delivery-api]

It writes a Prometheus configuration (scrape_interval 1s) with one static target per --target,
labelled as the chart's ServiceMonitor labels a pod (job = the Service = --job, namespace, pod,
instance), and one per --api-target as the chart labels its management API pods (job = the API
Service = --api-job, default <--job>-api), starts Debian's `prometheus` on 127.0.0.1:<free port> with a throwaway storage
directory, waits until every target is up with a few samples, then queries the HTTP API:

  * every target of every dashboard panel (the dashboard of the rendered ConfigMap, else
    --dashboard), Grafana's variables replaced: $namespace, $job, $pod (all pods: ".*"),
    $__rate_interval (10s), $__interval (2s), $__range (1m); and each query variable's selector;
  * every alert of the rendered PrometheusRule, as its signals: an alert's expression is made to
    be empty when all is well, so it is the parts below its threshold comparisons that must
    return data. `a > 5` → `a`; `a > b` → `a` and `b`; `x and y`, `x or y`, `x unless y` → the
    signals of x and of y; `absent(s)` → `s`; anything else → itself. (Whether the alert as a
    whole would fire is printed, not judged.)
  * the ScaledObject's Prometheus trigger queries (--keda) and the prometheus-adapter rules'
    metricsQuery (--adapter), with the adapter's template fields filled in.

Run it while the workers deliver: panels over rate() (the success ratio, for one) are empty when
nothing happened in the last seconds, which is what a blank panel would show an operator too.
Each is reported non-empty (ok) or empty (FAIL). Signals that read only series the workers do not
export — kube-state-metrics' replicas and HPA conditions (EXEMPT below, plus --exempt) — cannot be
present here and are reported as skipped. So are those that read only the management API's series
(API_SERIES below: the API's panels and WebhookApiErrorRatioHigh, with api.enabled) when no
--api-target is given: the API is optional, and a Prometheus that scrapes no API has none. With an
--api-target they are checked like the rest. The last line is 'N passed, N failed, N skipped'; the
exit status is non-zero if anything failed or Prometheus could not be brought up.

Prometheus is stopped on every exit (normal, error, SIGINT/SIGTERM), dies with this process
(PR_SET_PDEATHSIG) and everything is bounded by --timeout.
"""
import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import promql_parser
import yaml

# Series that only kube-state-metrics provides: a Prometheus that scrapes workers alone has none.
EXEMPT = {
    "kube_deployment_spec_replicas": "kube-state-metrics",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_condition": "kube-state-metrics",
}
# The management API's series (`webhook-worker api`, the chart's api.enabled): checked only when an
# --api-target is scraped.
API_SERIES = {
    f"{base}{suffix}"
    for base in ("webhook_api_requests_total", "webhook_api_request_duration_seconds")
    for suffix in ("", "_bucket", "_sum", "_count")
}
COMPARISONS = {">", "<", ">=", "<=", "==", "!="}
SET_OPERATORS = {"and", "or", "unless"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    """Runs in the child before exec: SIGKILL it when this process dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Prometheus:
    def __init__(self, binary, targets, namespace, job, deadline, api_targets=(), api_job=None):
        self.dir = tempfile.mkdtemp(prefix="live-prometheus-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.deadline = deadline
        static = [
            {"targets": [t], "labels": {"namespace": namespace, "pod": f"{job}-{i}"}}
            for i, t in enumerate(targets)
        ]
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": static}],
        }
        if api_targets:
            config["scrape_configs"].append({"job_name": api_job, "static_configs": [
                {"targets": [t], "labels": {"namespace": namespace, "pod": f"{api_job}-{i}"}}
                for i, t in enumerate(api_targets)
            ]})
        with open(os.path.join(self.dir, "prometheus.yml"), "w") as fh:
            yaml.safe_dump(config, fh)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w+")
        self.process = subprocess.Popen(
            [binary, f"--config.file={self.dir}/prometheus.yml", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
             "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tail(self):
        self.log.flush()
        self.log.seek(0)
        return "".join(self.log.readlines()[-20:])

    def get(self, path, **params):
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=max(1.0, min(10.0, self.deadline - time.time()))) as answer:
            return answer.read()

    def query(self, expr):
        """(result list, None) or (None, error text)."""
        try:
            body = json.loads(self.get("/api/v1/query", query=expr))
        except urllib.error.HTTPError as err:
            try:
                return None, json.loads(err.read()).get("error", str(err))
            except ValueError:
                return None, str(err)
        if body.get("status") != "success":
            return None, body.get("error", "query failed")
        return body["data"]["result"], None

    def wait_ready(self, targets, samples):
        """Ready, every target up, and at least `samples` scrapes of each stored."""
        while time.time() < self.deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.tail()}")
            try:
                self.get("/-/ready")
                result, _ = self.query("count_over_time(up[1m]) and up == 1")
                if result is not None and len(result) == len(targets) and all(
                    float(r["value"][1]) >= samples for r in result
                ):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.3)
        result, _ = self.query("up") if self.process.poll() is None else (None, None)
        raise RuntimeError(f"targets not up with {samples} samples before the deadline; up = {result}\n{self.tail()}")


def names_in(node):
    """Metric names of every vector selector in a parsed expression."""
    if type(node).__name__ == "VectorSelector":
        return {node.name}
    found = set()
    for attr in dir(node):
        if attr.startswith("_"):
            continue
        value = getattr(node, attr)
        for child in value if isinstance(value, list) else [value]:
            if type(child).__module__.startswith("promql_parser") and type(child).__name__.endswith(
                ("Expr", "Selector", "Call", "Literal")
            ):
                found |= names_in(child)
    return found


def is_literal(node):
    return type(node).__name__ in ("NumberLiteral", "StringLiteral")


def signals(node):
    """The sub-expressions that must return data for the alert to be able to fire (see above)."""
    kind = type(node).__name__
    if kind == "ParenExpr":
        return signals(node.expr)
    if kind == "BinaryExpr":
        op = str(node.op)
        if op in SET_OPERATORS:
            return signals(node.lhs) + signals(node.rhs)
        if op in COMPARISONS:
            return [side for side in (node.lhs, node.rhs) if not is_literal(side)]
    if kind == "Call" and node.func.name in ("absent", "absent_over_time"):
        return signals(node.args[0]) if node.args else []
    return [node]


def grafana(expr, namespace, job):
    for variable, value in (("$__rate_interval", "10s"), ("$__interval", "2s"), ("$__range", "1m"),
                            ("${namespace}", namespace), ("$namespace", namespace), ("${job}", job), ("$job", job),
                            ("${pod}", ".*"), ("$pod", ".*")):
        expr = expr.replace(variable, value)
    return expr


def dashboard_of(rendered, fallback):
    for doc in rendered:
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboard"):
            return json.loads(next(iter(doc["data"].values())))
    if fallback:
        return json.load(open(fallback))
    return None


def adapter_queries(path, namespace, pods):
    values = yaml.safe_load(open(path))
    out = []
    for kind in ("custom", "external"):
        for rule in values.get("rules", {}).get(kind, []):
            series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
            resources = list(rule.get("resources", {}).get("overrides", {}))
            matchers = {"namespace": f'namespace="{namespace}"', "pod": f'pod=~"{"|".join(pods)}"'}
            query = (rule["metricsQuery"].replace("<<.Series>>", series)
                     .replace("<<.LabelMatchers>>", ",".join(matchers[r] for r in resources))
                     .replace("<<.GroupBy>>", ", ".join(resources)))
            out.append((f"adapter {kind} rule {rule['name']['as']}", query))
            out.append((f"adapter {kind} seriesQuery", rule["seriesQuery"]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", action="append", required=True, help="HOST:PORT of a worker's metrics endpoint")
    ap.add_argument("--rendered", required=True, help="helm template output with the PrometheusRule (and dashboard)")
    ap.add_argument("--dashboard", help="dashboard JSON when RENDERED has no dashboard ConfigMap")
    ap.add_argument("--keda", help="helm template output with the ScaledObject")
    ap.add_argument("--adapter", help="prometheus-adapter values with the chart's rules")
    ap.add_argument("--namespace", default="webhooks", help="namespace label the chart was rendered for")
    ap.add_argument("--job", default="rel-webhook-delivery", help="job label: the chart's fullname (its Service)")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument("--timeout", type=float, default=90, help="seconds for everything")
    ap.add_argument("--settle", type=float, default=5, help="seconds of scraping before the queries")
    ap.add_argument("--exempt", action="append", default=[], help="another metric that workers do not export")
    ap.add_argument("--api-target", action="append", default=[], help="HOST:PORT of a management API's metrics endpoint")
    ap.add_argument("--api-job", help="job label of the API targets: the chart's API Service (default <--job>-api)")
    args = ap.parse_args()
    args.api_job = args.api_job or f"{args.job}-api"
    exempt = dict(EXEMPT, **{m: "--exempt" for m in args.exempt})
    deadline = time.time() + args.timeout

    rendered = [d for d in yaml.safe_load_all(open(args.rendered)) if d]
    checks = []  # (where, expression, exempt metrics or None)
    rules = [r for d in rendered if d.get("kind") == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"]]
    if not rules:
        sys.exit(f"no PrometheusRule in {args.rendered}")
    alerts = []
    for rule in rules:
        name = rule.get("alert") or rule.get("record")
        tree = promql_parser.parse(rule["expr"])
        alerts.append((name, rule["expr"]))
        for i, signal_node in enumerate(signals(tree), 1):
            checks.append((f"alert {name} signal {i}", signal_node.prettify(), names_in(signal_node)))
    dashboard = dashboard_of(rendered, args.dashboard)
    if dashboard is None:
        sys.exit(f"no dashboard ConfigMap in {args.rendered} and no --dashboard")
    panels = list(dashboard["panels"])
    for panel in list(panels):
        panels += panel.get("panels", [])
    for panel in panels:
        for target in panel.get("targets", []):
            expr = grafana(target["expr"], args.namespace, args.job)
            checks.append((f"panel {panel['title']!r} {target.get('refId', '')}", expr, names_in(promql_parser.parse(expr))))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query
        if variable.get("type") == "query" and query:
            selector = grafana(re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip()).group(1), args.namespace, args.job)
            checks.append((f"variable {variable['name']}", selector, names_in(promql_parser.parse(selector))))
    if args.keda:
        for doc in yaml.safe_load_all(open(args.keda)):
            if doc and doc.get("kind") == "ScaledObject":
                for trigger in doc["spec"]["triggers"]:
                    if trigger["type"] == "prometheus":
                        q = trigger["metadata"]["query"]
                        checks.append((f"keda trigger {trigger.get('name', '')}", q, names_in(promql_parser.parse(q))))
    if args.adapter:
        pods = [f"{args.job}-{i}" for i in range(len(args.target))]
        for where, q in adapter_queries(args.adapter, args.namespace, pods):
            checks.append((where, q, names_in(promql_parser.parse(q))))

    prometheus = None

    def stop(*_):
        raise SystemExit(130)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    passed = failed = skipped = 0
    try:
        if not os.access(args.prometheus, os.X_OK):
            sys.exit(f"no prometheus binary at {args.prometheus} (apt-get install prometheus)")
        prometheus = Prometheus(args.prometheus, args.target, args.namespace, args.job, deadline,
                                args.api_target, args.api_job)
        print(f"prometheus on {prometheus.url}, scraping {', '.join(args.target)} every 1s as "
              f"job={args.job} namespace={args.namespace}"
              + (f", and {', '.join(args.api_target)} as job={args.api_job}" if args.api_target else
                 "; no management API (--api-target): its panels and alert are skipped"))
        prometheus.wait_ready(args.target + args.api_target, samples=3)
        time.sleep(max(0.0, min(args.settle, deadline - time.time() - 5)))
        for where, expr, names in checks:
            needs = sorted(n for n in names if n in exempt)
            if needs and set(needs) == names:
                skipped += 1
                print(f"skip {where}: reads only {', '.join(f'{n} ({exempt[n]})' for n in needs)}")
                continue
            if not args.api_target and names and names <= API_SERIES:
                skipped += 1
                print(f"skip {where}: reads only the management API's series (api.enabled); no --api-target scraped")
                continue
            result, error = prometheus.query(expr)
            flat = " ".join(expr.split())
            if error:
                failed += 1
                print(f"FAIL {where}: {error}\n  {flat}")
            elif not result:
                failed += 1
                print(f"FAIL {where}: empty\n  {flat}")
            else:
                passed += 1
                print(f"ok   {where}: {len(result)} series")
        for name, expr in alerts:
            result, error = prometheus.query(expr)
            state = f"error {error}" if error else (f"would fire ({len(result)} series)" if result else "quiet")
            print(f"     alert {name} as a whole: {state}")
    except RuntimeError as err:
        failed += 1
        print(f"FAIL {err}")
    finally:
        if prometheus:
            prometheus.stop()
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
