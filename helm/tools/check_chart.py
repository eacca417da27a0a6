#!/usr/bin/env python3
"""Consistency and policy checks of the webhook-delivery chart that schemas cannot express.

usage:
  check_chart.py values CHART_DIR
      values.yaml, values.schema.json and the README's values table agree: every value is in the
      schema (objects strict, each value described) and in the table with its exact default.
  check_chart.py dashboard DASHBOARD.json RENDERED.yaml
      the dashboard's structure (data source variable, ids), and the rendered ConfigMap carries it
      unchanged with the sidecar label.
  check_chart.py alerts RENDERED.yaml RUNBOOK.md
      the six alerts, each with severity, summary, description and a runbook_url whose anchor is a
      heading of the runbook.
  check_chart.py workload RENDERED.yaml [RENDERED.yaml…]
      the Deployment, migration Job and autoscaler keep their contract (security context, probes,
      ports, environment variable names, drain deadline below the grace period).
Prints one line per problem and exits non-zero if there is any.
"""
import json
import re
import sys

import yaml

ANCHORS = {
    "WebhookBacklogAgeHigh": "backlog-age-high",
    "WebhookSuccessRatioLow": "success-ratio-low",
    "WebhookNoProgress": "no-progress",
    "WebhookBreakerStorm": "breaker-storm",
    "WebhookWorkersDown": "workers-down",
    "WebhookDeadLettersGrowing": "dead-letters-growing",
}
WORKER_ENV = {
    "DATABASE_URL", "WEBHOOK_ENCRYPTION_KEYS", "WEBHOOK_HTTPS_ONLY", "WEBHOOK_ALLOW_PRIVATE_CIDRS",
    "WEBHOOK_WORKER_ID", "WEBHOOK_CONCURRENCY", "WEBHOOK_BATCH_SIZE", "WEBHOOK_POLL_INTERVAL",
    "WEBHOOK_LEASE_DURATION", "WEBHOOK_HTTP_TIMEOUT", "WEBHOOK_CONNECT_TIMEOUT", "WEBHOOK_RETRY_SCHEDULE",
    "WEBHOOK_RETRY_AFTER_MAX", "WEBHOOK_MAX_PAYLOAD_BYTES", "WEBHOOK_MAX_RESPONSE_BYTES", "WEBHOOK_DRAIN_DEADLINE",
    "WEBHOOK_METRICS_ADDR", "WEBHOOK_DB_POOL_SIZE", "WEBHOOK_LOG_FORMAT", "RUST_LOG",
    "WEBHOOK_RATE_LIMIT_PER_SECOND", "WEBHOOK_RATE_LIMIT_BURST", "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT",
    "WEBHOOK_BREAKER_FAILURE_THRESHOLD", "WEBHOOK_BREAKER_FAILURE_RATIO", "WEBHOOK_BREAKER_WINDOW",
    "WEBHOOK_BREAKER_COOLDOWN", "WEBHOOK_BREAKER_MAX_COOLDOWN", "WEBHOOK_ATTEMPT_RETENTION",
    "WEBHOOK_DEAD_LETTER_RETENTION", "WEBHOOK_IDEMPOTENCY_RETENTION",
}
OPTIONAL_ENV = {"WEBHOOK_CA_BUNDLE"}

problems = []


def problem(text):
    problems.append(text)
    print("FAIL " + text)


def docs(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]


def check_values(chart):
    values = yaml.safe_load(open(f"{chart}/values.yaml"))
    schema = json.load(open(f"{chart}/values.schema.json"))
    rows = {}
    for line in open(f"{chart}/README.md"):
        m = re.match(r"\| `([^`]+)` \| `(.*)` \| (.*) \|\s*$", line)
        if m:
            if m.group(1) in rows:
                problem(f"README lists {m.group(1)} twice")
            rows[m.group(1)] = (m.group(2), m.group(3).strip())
    leaves = []

    def walk(value, node, path):
        # A described node is one value (a row of the table), even when it is an object such as
        # `resources`; an undescribed object is a group whose members are values.
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties") is not False:
                problem(f"schema {path or '(root)'}: objects with properties must set additionalProperties: false")
            if not isinstance(value, dict):
                problem(f"values {path}: expected a map")
                return
            for key in value.keys() - node["properties"].keys():
                problem(f"values {path}.{key} is not in the schema")
            for key in node["properties"].keys() - value.keys():
                problem(f"schema {path}.{key} has no default in values.yaml")
            if not node.get("description"):
                for key in value.keys() & node["properties"].keys():
                    walk(value[key], node["properties"][key], f"{path}.{key}" if path else key)
                return
        leaves.append(path)
        if not node.get("description"):
            problem(f"schema {path}: no description")
        if path not in rows:
            problem(f"README values table lacks {path}")
            return
        default, meaning = rows[path]
        if default != json.dumps(value, ensure_ascii=False):
            problem(f"README default of {path} is {default}, values.yaml has {json.dumps(value, ensure_ascii=False)}")
        if not meaning:
            problem(f"README gives no meaning for {path}")

    walk(values, schema, "")
    for path in rows.keys() - set(leaves):
        problem(f"README lists {path}, which is not a value")
    print(f"values: {len(leaves)} values in values.yaml, the schema and the README")


def check_dashboard(path, rendered):
    dashboard = json.load(open(path))
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problem("dashboard: no `datasource` variable of type datasource/prometheus")
    for key in ("uid", "title", "schemaVersion"):
        if not dashboard.get(key):
            problem(f"dashboard: no {key}")
    ids = [p.get("id") for p in dashboard["panels"]]
    if len(ids) != len(set(ids)) or None in ids:
        problem(f"dashboard: panel ids missing or repeated: {ids}")
    for panel in dashboard["panels"]:
        where = f"dashboard panel {panel.get('title')!r}"
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"{where}: datasource is not ${{datasource}}")
        if not panel.get("gridPos") or not panel.get("targets"):
            problem(f"{where}: no gridPos or no targets")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if len(refs) != len(set(refs)):
            problem(f"{where}: repeated refIds {refs}")
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problem(f"{where} {target.get('refId')}: datasource is not ${{datasource}}")
    maps = [d for d in docs(rendered) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    if len(maps) != 1:
        problem(f"{rendered}: expected one dashboard ConfigMap, found {len(maps)}")
        return
    if maps[0]["metadata"]["labels"].get("grafana_dashboard") != "1":
        problem("dashboard ConfigMap: no label grafana_dashboard: \"1\"")
    (name, text), = maps[0]["data"].items()
    if json.loads(text) != dashboard:
        problem(f"dashboard ConfigMap: {name} differs from {path}")
    print(f"dashboard: {len(dashboard['panels'])} panels, variables {sorted(variables)}")


def check_alerts(rendered, runbook):
    rules = {}
    for doc in docs(rendered):
        if doc["kind"] == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                rules.update({r["alert"]: r for r in group["rules"] if "alert" in r})
    if set(rules) != set(ANCHORS):
        problem(f"alerts: expected {sorted(ANCHORS)}, found {sorted(rules)}")
    headings = set()
    for line in open(runbook):
        m = re.match(r"#+\s+(.*?)\s*$", line)
        if m:  # GitHub's anchor: lower case, punctuation dropped, spaces to dashes
            headings.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    for name, rule in rules.items():
        if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
            problem(f"alert {name}: severity label missing or not warning/critical")
        notes = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not notes.get(key):
                problem(f"alert {name}: no {key} annotation")
        anchor = ANCHORS.get(name)
        url = notes.get("runbook_url", "")
        if anchor and not url.endswith("/docs/runbook.md#" + anchor):
            problem(f"alert {name}: runbook_url {url} does not end in /docs/runbook.md#{anchor}")
        if anchor and anchor not in headings:
            problem(f"alert {name}: {runbook} has no heading for #{anchor}")
        if not rule.get("for"):
            problem(f"alert {name}: no `for`")
    print(f"alerts: {len(rules)} alerts, anchors {sorted(ANCHORS.values())}")


def duration_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", text))


def check_container(where, container, pod):
    sc = container.get("securityContext", {})
    expected = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True, "runAsUser": 65532}
    for key, value in expected.items():
        if sc.get(key) != value:
            problem(f"{where}: securityContext.{key} is {sc.get(key)!r}, expected {value!r}")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        problem(f"{where}: capabilities do not drop ALL")
    if (sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile", {})).get("type") != "RuntimeDefault":
        problem(f"{where}: seccompProfile is not RuntimeDefault")
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if "emptyDir" not in volumes.get(mounts.get("/tmp"), {}):
        problem(f"{where}: /tmp is not an emptyDir")
    env = {e["name"]: e for e in container.get("env", [])}
    for name in ("DATABASE_URL", "WEBHOOK_ENCRYPTION_KEYS"):
        if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
            problem(f"{where}: {name} does not come from a Secret")
    return env


def check_workload(paths):
    for path in paths:
        rendered = docs(path)
        kinds = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
        deployments = [d for d in rendered if d["kind"] == "Deployment"]
        if len(deployments) != 1:
            problem(f"{path}: expected one Deployment")
            continue
        pod = deployments[0]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        where = f"{path} Deployment"
        if container.get("args") != ["run"]:
            problem(f"{where}: args are {container.get('args')}, expected ['run']")
        if not container["image"].split("/")[-1].startswith("webhook-worker:"):
            problem(f"{where}: image {container['image']} is not webhook-worker")
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if ports != {"metrics": 9090}:
            problem(f"{where}: ports {ports}, expected metrics: 9090")
        for probe, route in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != route or get.get("port") != "metrics":
                problem(f"{where}: {probe} is not GET {route} on port metrics")
        env = check_container(where, container, pod)
        missing = WORKER_ENV - env.keys()
        extra = env.keys() - WORKER_ENV - OPTIONAL_ENV
        if missing:
            problem(f"{where}: environment lacks {sorted(missing)}")
        if extra and not all(n.startswith("WEBHOOK_") for n in extra):
            problem(f"{where}: unexpected environment {sorted(extra)}")
        if env.get("WEBHOOK_WORKER_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
            problem(f"{where}: WEBHOOK_WORKER_ID is not the pod name")
        drain = duration_seconds(env.get("WEBHOOK_DRAIN_DEADLINE", {}).get("value", "0s"))
        if not drain < pod.get("terminationGracePeriodSeconds", 30):
            problem(f"{where}: drain deadline {drain}s is not below terminationGracePeriodSeconds")
        anti = pod.get("affinity", {}).get("podAntiAffinity", {}).get("preferredDuringSchedulingIgnoredDuringExecution", [])
        if not any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname" for t in anti):
            problem(f"{where}: no preferred pod anti-affinity by hostname")
        jobs = [d for d in rendered if d["kind"] == "Job"]
        for job in jobs:
            jwhere = f"{path} Job {job['metadata']['name']}"
            hooks = set(job["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
            if hooks != {"pre-install", "pre-upgrade"}:
                problem(f"{jwhere}: hooks are {hooks}")
            jpod = job["spec"]["template"]["spec"]
            (jcontainer,) = jpod["containers"]
            if jcontainer.get("args") != ["migrate"]:
                problem(f"{jwhere}: args are {jcontainer.get('args')}, expected ['migrate']")
            check_container(jwhere, jcontainer, jpod)
        selector = deployments[0]["spec"]["selector"]["matchLabels"]
        for job in jobs:
            labels = job["spec"]["template"]["metadata"]["labels"]
            if all(labels.get(k) == v for k, v in selector.items()):
                problem(f"{path}: the migration Job's pods match the Deployment's selector")
        scalers = [d for d in rendered if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
        if len(scalers) > 1:
            problem(f"{path}: both an HPA and a ScaledObject")
        for hpa in (d for d in rendered if d["kind"] == "HorizontalPodAutoscaler"):
            metrics = hpa["spec"]["metrics"]
            names = {m.get(m["type"].lower(), {}).get("metric", {}).get("name") for m in metrics}
            if "webhook_queue_oldest_ready_age_seconds" not in names or not any(
                m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics
            ):
                problem(f"{path}: the HPA does not scale on CPU and webhook_queue_oldest_ready_age_seconds")
            if not {"scaleUp", "scaleDown"} <= hpa["spec"].get("behavior", {}).keys():
                problem(f"{path}: the HPA has no scaleUp/scaleDown behavior")
        if scalers and "replicas" in deployments[0]["spec"]:
            problem(f"{path}: the Deployment sets replicas although an autoscaler owns them")
        print(f"workload: {path.rsplit('/', 1)[-1]}: {len(kinds)} objects checked")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "values":
        check_values(*args)
    elif command == "dashboard":
        check_dashboard(*args)
    elif command == "alerts":
        check_alerts(*args)
    elif command == "workload":
        check_workload(args)
    else:
        sys.exit(__doc__)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
