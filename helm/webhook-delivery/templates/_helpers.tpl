{{- define "wd.name" -}}{{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}{{- end -}}

{{/* The usual convention: `helm install webhook-delivery …` (or any release name that already
contains the chart name) gives `webhook-delivery`, not `webhook-delivery-webhook-delivery`. */}}
{{- define "wd.fullname" -}}
{{- if .Values.fullnameOverride -}}{{ .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else -}}
{{- $name := include "wd.name" . -}}
{{- if contains $name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The worker pods only (the migration Job's pods carry component: migrate, the test's: test). */}}
{{- define "wd.workerSelectorLabels" -}}
{{ include "wd.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "wd.labels" -}}
{{ include "wd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "wd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "wd.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* The Secret with the database URL and the key ring: created by the chart, or referenced. */}}
{{- define "wd.secretName" -}}
{{- if .Values.secrets.create -}}{{ include "wd.fullname" . }}
{{- else if .Values.secrets.existingSecret -}}{{ .Values.secrets.existingSecret }}
{{- else -}}{{ fail "no database secret: set secrets.existingSecret to a Secret with the keys secrets.databaseUrlKey and secrets.encryptionKeysKey, or set secrets.create=true with secrets.databaseUrl and secrets.encryptionKeys" }}
{{- end -}}
{{- end -}}

{{/* An image reference from {registry, repository, tag}; the registry falls back to
global.imageRegistry (the Bitnami convention an umbrella chart sets once for every dependency). */}}
{{- define "wd.imageRef" -}}
{{- $registry := .image.registry | default (.root.Values.global).imageRegistry | default "" | trimSuffix "/" -}}
{{- $ref := printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion) -}}
{{- if $registry }}{{ printf "%s/%s" $registry $ref }}{{ else }}{{ $ref }}{{ end -}}
{{- end -}}

{{- define "wd.image" -}}{{ include "wd.imageRef" (dict "image" .Values.image "root" .) }}{{- end -}}

{{/* imagePullSecrets of the chart plus global.imagePullSecrets (names or {name: …}). */}}
{{- define "wd.imagePullSecrets" -}}
{{- $names := list -}}
{{- range concat .Values.imagePullSecrets ((.Values.global).imagePullSecrets | default list) -}}
{{- if kindIs "string" . }}{{ $names = append $names . }}{{ else }}{{ $names = append $names .name }}{{ end -}}
{{- end -}}
{{- with $names | uniq }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Prometheus label matchers selecting this release's series (alerts, KEDA). */}}
{{- define "wd.seriesSelector" -}}
{{- if .Values.seriesSelector -}}{{ .Values.seriesSelector }}
{{- else -}}namespace="{{ .Release.Namespace }}",job="{{ include "wd.fullname" . }}"
{{- end -}}
{{- end -}}

{{/* Where the key ring file is when it is mounted from the Secret (secrets.encryptionKeysSource: file). */}}
{{- define "wd.keyRingDir" -}}/etc/webhook-delivery/keys{{- end -}}

{{/* The worker refuses WEBHOOK_ENCRYPTION_KEYS and WEBHOOK_ENCRYPTION_KEYS_FILE together, so
exactly one of them is set, by secrets.encryptionKeysSource:
  env:  WEBHOOK_ENCRYPTION_KEYS from the Secret's key;
  file: the Secret's key mounted as a file (volume "encryption-keys"), WEBHOOK_ENCRYPTION_KEYS_FILE
        pointing at it;
  path: WEBHOOK_ENCRYPTION_KEYS_FILE = secrets.encryptionKeysPath, a file on a volume the operator
        brings (extraVolumes + extraVolumeMounts with a CSI driver, a Vault agent's shared volume…). */}}
{{- define "wd.keyRingEnv" -}}
{{- $s := .Values.secrets -}}
{{- if eq $s.encryptionKeysSource "env" }}
- name: WEBHOOK_ENCRYPTION_KEYS
  valueFrom: { secretKeyRef: { name: {{ include "wd.secretName" . }}, key: {{ $s.encryptionKeysKey | quote }} } }
{{- else if eq $s.encryptionKeysSource "file" }}
- { name: WEBHOOK_ENCRYPTION_KEYS_FILE, value: {{ printf "%s/%s" (include "wd.keyRingDir" .) $s.encryptionKeysKey | quote }} }
{{- else }}
- { name: WEBHOOK_ENCRYPTION_KEYS_FILE, value: {{ $s.encryptionKeysPath | quote }} }
{{- end }}
{{- end -}}

{{/* Rendering guards: settings that would deploy something broken. */}}
{{- define "wd.validate" -}}
{{- if ge (int .Values.worker.drainDeadlineSeconds) (int .Values.terminationGracePeriodSeconds) }}
{{- fail (printf "worker.drainDeadlineSeconds (%d) must be shorter than terminationGracePeriodSeconds (%d), or pods are killed mid-drain" (int .Values.worker.drainDeadlineSeconds) (int .Values.terminationGracePeriodSeconds)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled (HPA) and keda.enabled (KEDA ScaledObject) are mutually exclusive: enable one" }}
{{- end }}
{{- if and .Values.worker.caBundle.configMap .Values.worker.caBundle.secret }}
{{- fail "worker.caBundle: set configMap or secret, not both" }}
{{- end }}
{{- if and .Values.worker.proxy.url .Values.worker.proxy.existingSecret }}
{{- fail "worker.proxy: set url or existingSecret, not both" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas)) }}
{{- fail "keda.minReplicas must not exceed keda.maxReplicas" }}
{{- end }}
{{- $s := .Values.secrets }}
{{- if and (eq $s.encryptionKeysSource "path") (not $s.encryptionKeysPath) }}
{{- fail "secrets.encryptionKeysSource=path needs secrets.encryptionKeysPath: the absolute path of the key-ring file on a volume you add (extraVolumes and extraVolumeMounts, a CSI driver, a Vault agent)" }}
{{- end }}
{{- if and $s.encryptionKeysPath (ne $s.encryptionKeysSource "path") }}
{{- fail (printf "secrets.encryptionKeysPath is only read with secrets.encryptionKeysSource=path (it is %s): set one key source" $s.encryptionKeysSource) }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if has .name (list "WEBHOOK_ENCRYPTION_KEYS" "WEBHOOK_ENCRYPTION_KEYS_FILE") }}
{{- fail (printf "extraEnv sets %s, but the chart already sets the key ring (the worker refuses both variables at once): use secrets.encryptionKeysSource (env, file or path) instead" .name) }}
{{- end }}
{{- if eq .name "DATABASE_URL" }}
{{- fail "extraEnv sets DATABASE_URL, which the chart sets from secrets.existingSecret: name the Secret there (and its key in secrets.databaseUrlKey)" }}
{{- end }}
{{- end }}
{{- if and (or .Values.prometheusRule.enabled .Values.dashboard.enabled) (not .Values.runbookUrl) }}
{{- fail "runbookUrl is required with prometheusRule.enabled or dashboard.enabled: the URL where your team reads this repository's docs/runbook.md (e.g. https://github.com/<org>/webhook-delivery/blob/main/docs/runbook.md); alerts and panels link to its sections" }}
{{- end }}
{{- $_ := include "wd.secretName" . }}
{{- end -}}

{{/* Environment shared by the worker, the migration Job and the test: the database, logging. The
key ring is the worker's alone (wd.keyRingEnv): `migrate` and `queue stats` do not read it. */}}
{{- define "wd.env" -}}
- name: DATABASE_URL
  valueFrom: { secretKeyRef: { name: {{ include "wd.secretName" . }}, key: {{ .Values.secrets.databaseUrlKey | quote }} } }
- { name: WEBHOOK_DB_POOL_SIZE, value: {{ .Values.worker.dbPoolSize | quote }} }
- { name: WEBHOOK_LOG_FORMAT, value: {{ .Values.worker.logFormat | quote }} }
- { name: RUST_LOG, value: {{ .Values.worker.logLevel | quote }} }
{{- end -}}

{{- define "wd.runbookLink" -}}{{ printf "%s#%s" .root.Values.runbookUrl .anchor }}{{- end -}}

{{/* Grafana uids are at most 40 characters and unique per Grafana: the full name plus a hash of
namespace/fullname, so that releases of the same name in two namespaces differ too. */}}
{{- define "wd.dashboardUid" -}}
{{- if .Values.dashboard.uid -}}{{ .Values.dashboard.uid }}
{{- else -}}{{ printf "%s-%s" (include "wd.fullname" . | trunc 31 | trimSuffix "-") (printf "%s/%s" .Release.Namespace (include "wd.fullname" .) | sha256sum | trunc 8) }}
{{- end -}}
{{- end -}}

{{/* The management API (`webhook-worker api`, api.enabled): its own Deployment, Service and
scraping job. Its name leaves room for the suffix within 63 characters. */}}
{{- define "wd.apiFullname" -}}{{ printf "%s-api" (include "wd.fullname" . | trunc 59 | trimSuffix "-") }}{{- end -}}

{{- define "wd.apiSelectorLabels" -}}
{{ include "wd.selectorLabels" . }}
app.kubernetes.io/component: api
{{- end -}}

{{/* Prometheus label matchers selecting this release's API series (its alert). Empty
api.seriesSelector: namespace="<release namespace>",job="<fullname>-api", the API Service's name,
which is the job the chart's ServiceMonitor gives the API pods. */}}
{{- define "wd.apiSeriesSelector" -}}
{{- if .Values.api.seriesSelector -}}{{ .Values.api.seriesSelector }}
{{- else -}}namespace="{{ .Release.Namespace }}",job="{{ include "wd.apiFullname" . }}"
{{- end -}}
{{- end -}}

{{/* Rendering guards of the API. */}}
{{- define "wd.validateApi" -}}
{{- $a := .Values.api }}
{{- if and $a.autoscaling.enabled (gt (int $a.autoscaling.minReplicas) (int $a.autoscaling.maxReplicas)) }}
{{- fail "api.autoscaling.minReplicas must not exceed api.autoscaling.maxReplicas" }}
{{- end }}
{{- if and $a.ingress.enabled (not $a.ingress.hosts) }}
{{- fail "api.ingress.enabled needs api.ingress.hosts: at least one {host, paths}" }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if eq .name "WEBHOOK_API_BOOTSTRAP_TOKEN" }}
{{- fail "extraEnv sets WEBHOOK_API_BOOTSTRAP_TOKEN: name its Secret in api.bootstrapToken.existingSecret (and its key in api.bootstrapToken.key) instead" }}
{{- end }}
{{- end }}
{{- end -}}
