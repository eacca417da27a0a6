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
      the alerts, each with severity, summary, description and a runbook_url whose anchor is a
      heading of the runbook.
  check_chart.py workload RENDERED.yaml [RENDERED.yaml…]
      the Deployment, migration Job and autoscaler keep their contract (security context, probes,
      ports, environment variable names, one key-ring source, drain deadline below the grace period);
      with api.enabled, the API Deployment's (`webhook-worker api`: same image, Secret, key ring and
      delivery policy, probes on metrics, its own selector, Service, PDB, HPA and NetworkPolicy).
  check_chart.py pods RENDERED.yaml [RENDERED.yaml…]
      the pods of any render (umbrella charts, README examples) would start as far as the chart
      decides: one key-ring source, its file mounted where WEBHOOK_ENCRYPTION_KEYS_FILE says,
      every volume mount backed by a volume.
  check_chart.py extensions RENDERED.yaml VALUES.yaml SUBCHART_KEY
      every extension point set in VALUES.yaml (under SUBCHART_KEY, as an umbrella chart passes
      them) reached the rendered worker pod, migration Job and test pod.
  check_chart.py rules RENDERED.yaml OUT.yaml
      writes the PrometheusRule's spec as a plain Prometheus rules file (for promtool).
  check_chart.py alert-tests RULES.yaml TESTS.yaml
      every alerting rule has a promtool test case where it fires and one where it stays quiet.
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
    "WebhookDispatcherStalled": "dispatcher-stalled",
    "WebhookWorkerScrapeFailing": "worker-scrape-failing",
    "WebhookDatabaseErrors": "database-errors",
    "WebhookDeliveryLatencyHigh": "delivery-latency-high",
    "WebhookLongTransaction": "long-transaction",
    "WebhookReplicasUnavailable": "replicas-unavailable",
    "WebhookScalingMetricAbsent": "scaling-metric-absent",
    "WebhookApiErrorRatioHigh": "api-error-ratio-high",
}
# Values owned by someone else: the parent chart's globals (any key; Helm passes them down).
OPEN_OBJECTS = {"global"}
# Dashboard panel id -> the prometheusRule value its threshold line shows (the template sets it).
PANEL_LEVELS = {
    2: "successRatioMin", 3: "latencyP99Seconds", 6: "backlogAgeSeconds", 8: "breakerStormOpenEndpoints",
    10: "deadLettersPerHour", 14: "dispatcherStallSeconds", 15: "databaseErrorsPerSecond",
    20: "longTransactionSeconds",
}
KEY_VARS = ("WEBHOOK_ENCRYPTION_KEYS", "WEBHOOK_ENCRYPTION_KEYS_FILE")
WORKER_ENV = {
    "DATABASE_URL", "WEBHOOK_HTTPS_ONLY", "WEBHOOK_ALLOW_PRIVATE_CIDRS",
    "WEBHOOK_WORKER_ID", "WEBHOOK_CONCURRENCY", "WEBHOOK_BATCH_SIZE", "WEBHOOK_POLL_INTERVAL",
    "WEBHOOK_LEASE_DURATION", "WEBHOOK_HTTP_TIMEOUT", "WEBHOOK_STALL_TIMEOUT", "WEBHOOK_CONNECT_TIMEOUT", "WEBHOOK_RETRY_SCHEDULE",
    "WEBHOOK_RETRY_AFTER_MAX", "WEBHOOK_MAX_PAYLOAD_BYTES", "WEBHOOK_MAX_RESPONSE_BYTES", "WEBHOOK_DRAIN_DEADLINE",
    "WEBHOOK_METRICS_ADDR", "WEBHOOK_DB_POOL_SIZE", "WEBHOOK_LOG_FORMAT", "RUST_LOG",
    "WEBHOOK_RATE_LIMIT_PER_SECOND", "WEBHOOK_RATE_LIMIT_BURST", "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT",
    "WEBHOOK_BREAKER_FAILURE_THRESHOLD", "WEBHOOK_BREAKER_FAILURE_RATIO", "WEBHOOK_BREAKER_WINDOW",
    "WEBHOOK_BREAKER_COOLDOWN", "WEBHOOK_BREAKER_MAX_COOLDOWN", "WEBHOOK_ATTEMPT_RETENTION",
    "WEBHOOK_DEAD_LETTER_RETENTION", "WEBHOOK_IDEMPOTENCY_RETENTION",
}
OPTIONAL_ENV = {"WEBHOOK_CA_BUNDLE", *KEY_VARS}
# The management API (`webhook-worker api`, api.enabled): what worker/src/config/api.rs reads.
API_ENV = {
    "DATABASE_URL", "WEBHOOK_DB_POOL_SIZE", "WEBHOOK_LOG_FORMAT", "RUST_LOG", "WEBHOOK_API_ADDR",
    "WEBHOOK_METRICS_ADDR", "WEBHOOK_API_MAX_BODY_BYTES", "WEBHOOK_HTTPS_ONLY", "WEBHOOK_ALLOW_PRIVATE_CIDRS",
    "WEBHOOK_API_RATE_LIMIT", "WEBHOOK_API_RATE_LIMIT_BURST",
}
API_OPTIONAL_ENV = {"WEBHOOK_API_BOOTSTRAP_TOKEN", *KEY_VARS}

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
    in_values = False  # the table under "## Values" (other tables, e.g. the seed migration, look alike)
    for line in open(f"{chart}/README.md"):
        if line.startswith("## "):
            in_values = line.strip() == "## Values"
        m = re.match(r"\| `([^`]+)` \| `(.*)` \| (.*) \|\s*$", line)
        if m and in_values:
            if m.group(1) in rows:
                problem(f"README lists {m.group(1)} twice")
            rows[m.group(1)] = (m.group(2), m.group(3).strip())
    leaves = []

    def walk(value, node, path):
        # A described node is one value (a row of the table), even when it is an object such as
        # `resources`; an undescribed object is a group whose members are values.
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties") is not False and path not in OPEN_OBJECTS:
                problem(f"schema {path or '(root)'}: objects with properties must set additionalProperties: false")
            if not isinstance(value, dict):
                problem(f"values {path}: expected a map")
                return
            for key in value.keys() - node["properties"].keys():
                problem(f"values {path}.{key} is not in the schema")
            if not node.get("description"):
                # A group: each member is a value with a default. (A described object is one value
                # whose fields are optional, e.g. podSecurityContext.)
                for key in node["properties"].keys() - value.keys():
                    problem(f"schema {path}.{key} has no default in values.yaml")
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


def merged(base, *overrides):
    """values.yaml with -f files on top, as Helm merges them (maps deep, everything else replaced)."""
    out = json.loads(json.dumps(base))
    for override in overrides:
        for key, value in (override or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


def threshold_objects(panel):
    """Every thresholds object of a panel: its defaults' and its overrides'."""
    field = panel.get("fieldConfig", {})
    found = [field.get("defaults", {}).get("thresholds")]
    for override in field.get("overrides", []):
        found += [p["value"] for p in override.get("properties", []) if p.get("id") == "thresholds"]
    return [t for t in found if t and len(t.get("steps", [])) > 1]


def check_dashboard(path, rendered, values_file, *override_files):
    dashboard = json.load(open(path))
    defaults = yaml.safe_load(open(values_file))
    values = merged(defaults, *(yaml.safe_load(open(f)) for f in override_files))
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problem("dashboard: no `datasource` variable of type datasource/prometheus")
    if variables.get("runbook", {}).get("type") != "constant":
        problem("dashboard: no constant `runbook` variable (the chart sets it from runbookUrl)")
    for key in ("uid", "title", "schemaVersion"):
        if not dashboard.get(key):
            problem(f"dashboard: no {key}")
    ids = [p.get("id") for p in dashboard["panels"]]
    if len(ids) != len(set(ids)) or None in ids:
        problem(f"dashboard: panel ids missing or repeated: {ids}")
    anchors = set(ANCHORS.values())
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
        for link in panel.get("links", []):
            url = link.get("url", "")
            if not url.startswith("${runbook}#") or url.split("#", 1)[1] not in anchors:
                problem(f"{where}: link {url} is not ${{runbook}}#<an alert's anchor>")
        levels = threshold_objects(panel)
        name = PANEL_LEVELS.get(panel["id"])
        if name is None and levels:
            problem(f"{where}: thresholds that no alert level sets (add it to PANEL_LEVELS and the template)")
        if name is not None:
            if not levels:
                problem(f"{where}: no threshold line for prometheusRule.{name}")
            if not panel.get("links"):
                problem(f"{where}: shows an alert level but links to no runbook section")
            for t in levels:
                if t["steps"][-1]["value"] != defaults["prometheusRule"][name]:
                    problem(f"{where}: threshold {t['steps'][-1]['value']} in the JSON file is not the default "
                            f"prometheusRule.{name} ({defaults['prometheusRule'][name]})")
    maps = [d for d in docs(rendered) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    if len(maps) != 1:
        problem(f"{rendered}: expected one dashboard ConfigMap, found {len(maps)}")
        return
    if maps[0]["metadata"]["labels"].get("grafana_dashboard") != "1":
        problem("dashboard ConfigMap: no label grafana_dashboard: \"1\"")
    (name, text), = maps[0]["data"].items()
    shipped = json.loads(text)
    # What the chart changes per release, checked, then put back to compare the rest with the file.
    uid = values["dashboard"]["uid"]
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", shipped["uid"]) or (uid and shipped["uid"] != uid):
        problem(f"dashboard ConfigMap: uid {shipped['uid']!r} is not a Grafana uid (<= 40 characters) or not dashboard.uid")
    if shipped["uid"] == dashboard["uid"] and not uid:
        problem("dashboard ConfigMap: the default uid is the file's, shared by every release")
    shipped["uid"], shipped["title"] = dashboard["uid"], dashboard["title"]
    for var in shipped["templating"]["list"]:
        original = variables.get(var["name"], {})
        if var["name"] == "runbook":
            if var.get("query") != values["runbookUrl"]:
                problem(f"dashboard ConfigMap: runbook variable is {var.get('query')!r}, not runbookUrl")
            var["query"] = original.get("query")
        if var["name"] in ("runbook", "namespace", "job"):
            var["current"] = original.get("current")
            if var["current"] is None:
                del var["current"]
    for panel in shipped["panels"]:
        name = PANEL_LEVELS.get(panel["id"])
        for t in threshold_objects(panel):
            if t["steps"][-1]["value"] != values["prometheusRule"][name]:
                problem(f"dashboard ConfigMap panel {panel['title']!r}: threshold {t['steps'][-1]['value']} "
                        f"is not prometheusRule.{name} ({values['prometheusRule'][name]})")
            t["steps"][-1]["value"] = defaults["prometheusRule"][name]
    if shipped != dashboard:
        problem(f"dashboard ConfigMap: {name} differs from {path} beyond uid, title, variables and thresholds")
    print(f"dashboard: {len(dashboard['panels'])} panels, variables {sorted(variables)}, uid {maps[0] and json.loads(text)['uid']}")


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
    if "secretKeyRef" not in env.get("DATABASE_URL", {}).get("valueFrom", {}):
        problem(f"{where}: DATABASE_URL does not come from a Secret")
    return env


def check_key_ring(where, container, pod):
    """The worker refuses no key ring and two key rings: exactly one of the variables, from a
    Secret, or naming a file that a mount of this container provides."""
    env = {e["name"]: e for e in container.get("env", [])}
    names = [e["name"] for e in container.get("env", []) if e["name"] in KEY_VARS]
    if len(names) != 1:
        problem(f"{where}: the key ring is set by {names or 'nothing'}; the worker needs exactly one of {KEY_VARS}")
        return
    if names == ["WEBHOOK_ENCRYPTION_KEYS"]:
        if "secretKeyRef" not in env[names[0]].get("valueFrom", {}):
            problem(f"{where}: WEBHOOK_ENCRYPTION_KEYS does not come from a Secret")
        return
    path = env["WEBHOOK_ENCRYPTION_KEYS_FILE"].get("value", "")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    if not path.startswith("/") or not mounts:
        problem(f"{where}: WEBHOOK_ENCRYPTION_KEYS_FILE={path!r} is on no volume mount of the container")
        return
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = volumes.get(mount["name"])
    if volume is None:
        problem(f"{where}: the key ring's mount {mount['name']} has no volume")
        return
    relative = path[len(mount["mountPath"].rstrip("/")) + 1:]
    items = (volume.get("secret") or volume.get("configMap") or {}).get("items")
    if items is not None and relative not in {i["path"] for i in items}:
        problem(f"{where}: {path} is not among the files of volume {mount['name']} ({[i['path'] for i in items]})")


def check_mounts(where, container, pod):
    volumes = {v["name"] for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in volumes:
            problem(f"{where}: volume mount {mount['name']} has no volume")


def pods_of(rendered):
    """(kind/name container, container, pod spec) for every container of every pod template."""
    for doc in rendered:
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") if doc["kind"] in ("Deployment", "Job") else (
            spec if doc["kind"] == "Pod" else None)
        if pod:
            for container in pod.get("initContainers", []) + pod["containers"]:
                yield f"{doc['kind']}/{doc['metadata']['name']} {container['name']}", container, pod


def check_pods(paths):
    for path in paths:
        rendered = docs(path)
        count = 0
        for where, container, pod in pods_of(rendered):
            count += 1
            check_mounts(f"{path} {where}", container, pod)
            env = {e["name"] for e in container.get("env", [])}
            if where.startswith("Deployment/") and container.get("args") in (["run"], ["api"]):
                check_key_ring(f"{path} {where}", container, pod)
            elif env & set(KEY_VARS):
                problem(f"{path} {where}: sets {sorted(env & set(KEY_VARS))}, which only the worker reads")
        print(f"pods: {path.rsplit('/', 1)[-1]}: {count} containers checked")


def check_workload(paths):
    for path in paths:
        rendered = docs(path)
        kinds = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
        all_deployments = [d for d in rendered if d["kind"] == "Deployment"]
        apis = [d for d in all_deployments if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "api"]
        deployments = [d for d in all_deployments if d not in apis]
        if len(deployments) != 1 or len(apis) > 1:
            problem(f"{path}: expected one worker Deployment and at most one API Deployment")
            continue
        for api in apis:
            check_api(path, api, deployments[0], rendered)
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
        check_key_ring(where, container, pod)
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
        # The worker refuses a stall timeout within its own waits (an attempt's HTTP timeout, the
        # 10-s back-off after a failing claim): such a pod would never start.
        value = lambda name: duration_seconds(env.get(name, {}).get("value", "0s"))
        stall, http = value("WEBHOOK_STALL_TIMEOUT"), value("WEBHOOK_HTTP_TIMEOUT")
        if not stall > max(http, 10, 1.2 * value("WEBHOOK_POLL_INTERVAL")):
            problem(f"{where}: stall timeout {stall}s is not above the HTTP timeout ({http}s), 10 s and the poll interval")
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
            jenv = check_container(jwhere, jcontainer, jpod)
            if jenv.keys() & set(KEY_VARS):
                problem(f"{jwhere}: the migration Job gets the key ring, which `migrate` does not read")
        selector = deployments[0]["spec"]["selector"]["matchLabels"]
        for job in jobs:
            labels = job["spec"]["template"]["metadata"]["labels"]
            if all(labels.get(k) == v for k, v in selector.items()):
                problem(f"{path}: the migration Job's pods match the Deployment's selector")
        scalers = [d for d in rendered if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
        api_names = {d["metadata"]["name"] for d in apis}
        scalers = [d for d in scalers if d["spec"]["scaleTargetRef"]["name"] not in api_names]
        if len(scalers) > 1:
            problem(f"{path}: both an HPA and a ScaledObject for the workers")
        for hpa in (d for d in scalers if d["kind"] == "HorizontalPodAutoscaler"):
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


def check_api(path, api, worker, rendered):
    """The API Deployment (api.enabled): `webhook-worker api` from the workers' image, Secret, key
    ring and security context; probes on metrics; its own selector, Service, PDB and HPA."""
    where = f"{path} API Deployment"
    pod = api["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "api"]
    if container.get("args") != ["api"]:
        problem(f"{where}: args are {container.get('args')}, expected ['api']")
    (wcontainer,) = [c for c in worker["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
    if container["image"] != wcontainer["image"]:
        problem(f"{where}: image {container['image']} is not the workers' {wcontainer['image']}")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports != {"http": 8071, "metrics": 9090}:
        problem(f"{where}: ports {ports}, expected http: 8071 and metrics: 9090")
    for probe, route in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != route or get.get("port") != "metrics":
            problem(f"{where}: {probe} is not GET {route} on port metrics")
    env = check_container(where, container, pod)
    check_key_ring(where, container, pod)
    if missing := API_ENV - env.keys():
        problem(f"{where}: environment lacks {sorted(missing)}")
    if extra := {n for n in env.keys() - API_ENV - API_OPTIONAL_ENV if not n.startswith("WEBHOOK_")} - WORKER_ENV:
        problem(f"{where}: unexpected environment {sorted(extra)}")
    if env.get("WEBHOOK_API_ADDR", {}).get("value") != "0.0.0.0:8071":
        problem(f"{where}: WEBHOOK_API_ADDR is not 0.0.0.0:8071")
    token = env.get("WEBHOOK_API_BOOTSTRAP_TOKEN")
    if token is not None and "secretKeyRef" not in token.get("valueFrom", {}):
        problem(f"{where}: WEBHOOK_API_BOOTSTRAP_TOKEN does not come from a Secret")
    for name in ("DATABASE_URL", "WEBHOOK_HTTPS_ONLY", "WEBHOOK_ALLOW_PRIVATE_CIDRS"):
        wenv = {e["name"]: e for e in wcontainer.get("env", [])}
        if env.get(name) != wenv.get(name):
            problem(f"{where}: {name} differs from the workers'")
    selector = api["spec"]["selector"]["matchLabels"]
    wselector = worker["spec"]["selector"]["matchLabels"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    if all(labels.get(k) == v for k, v in wselector.items()) or not all(labels.get(k) == v for k, v in selector.items()):
        problem(f"{where}: its pods match the workers' selector, or not their own")
    name = api["metadata"]["name"]
    by = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
    service = by.get(("Service", name))
    if not service or service["spec"]["selector"] != selector or \
            {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} != {"http": "http", "metrics": "metrics"}:
        problem(f"{path}: no Service {name} selecting the API pods with ports http and metrics")
    pdb = by.get(("PodDisruptionBudget", name))
    if pdb and pdb["spec"]["selector"]["matchLabels"] != selector:
        problem(f"{path}: PodDisruptionBudget {name} does not select the API pods")
    hpa = by.get(("HorizontalPodAutoscaler", name))
    if hpa:
        if hpa["spec"]["scaleTargetRef"]["name"] != name or not any(
                m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"]):
            problem(f"{path}: the API HPA does not scale {name} on CPU")
        if "replicas" in api["spec"]:
            problem(f"{where}: sets replicas although an HPA owns them")
    for policy in (d for d in rendered if d["kind"] == "NetworkPolicy"):
        sel = policy["spec"]["podSelector"]
        picks = all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items()) and all(
            (labels.get(e["key"]) in e["values"]) == (e["operator"] == "In") for e in sel.get("matchExpressions", []))
        if picks and policy["metadata"]["name"] != name:
            problem(f"{path}: NetworkPolicy {policy['metadata']['name']} (the workers', with egress to receivers) applies to the API pods")


def check_extensions(path, values_file, key):
    """Each extension point the umbrella's values set reached the pods it is meant for."""
    top = yaml.safe_load(open(values_file))
    values = top[key]
    rendered = docs(path)
    by_kind = {}
    for doc in rendered:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (deployment,) = by_kind["Deployment"]
    (job,) = [j for j in by_kind.get("Job", []) if j["metadata"]["name"].endswith("-migrate")]
    (test,) = [p for p in by_kind.get("Pod", []) if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    pod, jpod, tpod = deployment["spec"]["template"], job["spec"]["template"], test
    worker = {c["name"]: c for c in pod["spec"]["containers"]}["worker"]
    migrate = jpod["spec"]["containers"][0]
    stats = {c["name"]: c for c in tpod["spec"]["containers"]}["queue-stats"]
    checked = []

    def expect(what, ok):
        checked.append(what)
        if not ok:
            problem(f"{path}: {what} did not reach the rendered manifests")

    def names(items):
        return {i["name"] for i in items or []}

    def has_all(got, want):
        return all(got.get(k) == v for k, v in want.items())

    def security(got, want):  # null in values removes the field
        return all((k not in got) if v is None else got.get(k) == v for k, v in want.items())

    for target in (worker, migrate, stats):
        expect(f"extraEnv in {target['name']}", names(values.get("extraEnv")) <= names(target.get("env")))
        expect(f"extraEnvFrom in {target['name']}", all(e in target.get("envFrom", []) for e in values.get("extraEnvFrom", [])))
        expect(f"securityContext in {target['name']}", security(target.get("securityContext", {}), values.get("securityContext", {})))
    for spec in (pod["spec"], jpod["spec"], tpod["spec"]):
        expect("podSecurityContext", security(spec.get("securityContext", {}), values.get("podSecurityContext", {})))
        pulls = {p if isinstance(p, str) else p["name"] for p in top.get("global", {}).get("imagePullSecrets", [])}
        expect("global.imagePullSecrets", pulls <= names(spec.get("imagePullSecrets")))
        expect("nodeSelector", has_all(spec.get("nodeSelector", {}), values.get("nodeSelector", {})))
        expect("tolerations", all(t in spec.get("tolerations", []) for t in values.get("tolerations", [])))
        registry = top.get("global", {}).get("imageRegistry")
        if registry:
            expect("global.imageRegistry", all(c["image"].startswith(registry.rstrip("/") + "/")
                                               for c in spec["containers"] if c["name"] in ("worker", "migrate", "queue-stats", "readyz")))
    spec = pod["spec"]
    expect("extraVolumes", names(values.get("extraVolumes")) <= names(spec.get("volumes")))
    expect("extraVolumeMounts", all(m in worker.get("volumeMounts", []) for m in values.get("extraVolumeMounts", [])))
    expect("sidecars", names(values.get("sidecars")) <= names(spec["containers"]))
    expect("initContainers", names(values.get("initContainers")) <= names(spec.get("initContainers")))
    expect("affinity", not values.get("affinity") or spec.get("affinity") == values["affinity"])
    spreads = spec.get("topologySpreadConstraints", [])
    expect("topologySpreadConstraints", len(spreads) == len(values.get("topologySpreadConstraints", []))
           and all(c.get("labelSelector") for c in spreads))
    expect("priorityClassName", spec.get("priorityClassName") == values.get("priorityClassName", spec.get("priorityClassName")))
    expect("podLabels", has_all(pod["metadata"]["labels"], values.get("podLabels", {}))
           and has_all(jpod["metadata"]["labels"], values.get("podLabels", {})))
    expect("podAnnotations", has_all(pod["metadata"].get("annotations", {}), values.get("podAnnotations", {})))
    expect("migrations.podAnnotations", has_all(jpod["metadata"].get("annotations", {}),
                                                values.get("migrations", {}).get("podAnnotations", {})))
    expect("migrations.extraVolumes", names(values.get("migrations", {}).get("extraVolumes")) <= names(jpod["spec"].get("volumes"))
           and names(values.get("migrations", {}).get("extraVolumes")) <= names(tpod["spec"].get("volumes")))
    expect("startupProbe", has_all(worker.get("startupProbe", {}), values.get("startupProbe", {})))
    expect("updateStrategy", deployment["spec"]["strategy"]["type"] == values.get("updateStrategy", {}).get("type", "RollingUpdate"))
    if "serviceAccount" in values:
        (account,) = by_kind["ServiceAccount"]
        expect("serviceAccount.annotations", has_all(account["metadata"].get("annotations", {}),
                                                     values["serviceAccount"].get("annotations", {})))
        if "automountServiceAccountToken" in values["serviceAccount"]:
            expect("serviceAccount.automountServiceAccountToken", spec.get("automountServiceAccountToken")
                   == values["serviceAccount"]["automountServiceAccountToken"])
    print(f"extensions: {len(checked)} checks of {path.rsplit('/', 1)[-1]}")


def write_rules(rendered, out):
    """The PrometheusRule's spec is a Prometheus rules file as it is: promtool reads it."""
    specs = [d["spec"] for d in docs(rendered) if d["kind"] == "PrometheusRule"]
    if len(specs) != 1:
        problem(f"{rendered}: expected one PrometheusRule, found {len(specs)}")
        return
    with open(out, "w") as fh:
        yaml.safe_dump(specs[0], fh, sort_keys=False, width=1000)
    print(f"rules: {sum(len(g['rules']) for g in specs[0]['groups'])} rules -> {out}")


def check_alert_tests(rules_file, tests_file):
    alerts = [r["alert"] for g in yaml.safe_load(open(rules_file))["groups"] for r in g["rules"] if "alert" in r]
    firing, quiet = set(), set()
    for test in yaml.safe_load(open(tests_file))["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    for alert in alerts:
        if alert not in firing:
            problem(f"alert tests: {alert} has no case where it fires")
        if alert not in quiet:
            problem(f"alert tests: {alert} has no case where it stays quiet")
    for alert in (firing | quiet) - set(alerts):
        problem(f"alert tests: {alert} is tested but not a rule of {rules_file}")
    print(f"alert tests: {len(alerts)} alerts, each with a firing and a quiet case" if not problems else "")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    commands = {
        "values": lambda: check_values(*args),
        "dashboard": lambda: check_dashboard(*args),
        "alerts": lambda: check_alerts(*args),
        "workload": lambda: check_workload(args),
        "pods": lambda: check_pods(args),
        "extensions": lambda: check_extensions(*args),
        "rules": lambda: write_rules(*args),
        "alert-tests": lambda: check_alert_tests(*args),
    }
    if command not in commands:
        sys.exit(__doc__)
    commands[command]()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
