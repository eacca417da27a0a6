{{- define "wd.name" -}}{{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}{{- end -}}

{{- define "wd.fullname" -}}
{{- if .Values.fullnameOverride -}}{{ .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name (include "wd.name" .) | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "wd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The worker pods only (the migration Job's pods carry component: migrate). */}}
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

{{- define "wd.image" -}}{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}{{- end -}}

{{/* Prometheus label matchers selecting this release's series (alerts, KEDA). */}}
{{- define "wd.seriesSelector" -}}
{{- if .Values.seriesSelector -}}{{ .Values.seriesSelector }}
{{- else -}}namespace="{{ .Release.Namespace }}",job="{{ include "wd.fullname" . }}"
{{- end -}}
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
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas)) }}
{{- fail "keda.minReplicas must not exceed keda.maxReplicas" }}
{{- end }}
{{- $_ := include "wd.secretName" . }}
{{- end -}}

{{/* Environment shared by the worker and the migration Job. */}}
{{- define "wd.env" -}}
- name: DATABASE_URL
  valueFrom: { secretKeyRef: { name: {{ include "wd.secretName" . }}, key: {{ .Values.secrets.databaseUrlKey | quote }} } }
- name: WEBHOOK_ENCRYPTION_KEYS
  valueFrom: { secretKeyRef: { name: {{ include "wd.secretName" . }}, key: {{ .Values.secrets.encryptionKeysKey | quote }} } }
- { name: WEBHOOK_DB_POOL_SIZE, value: {{ .Values.worker.dbPoolSize | quote }} }
- { name: WEBHOOK_LOG_FORMAT, value: {{ .Values.worker.logFormat | quote }} }
- { name: RUST_LOG, value: {{ .Values.worker.logLevel | quote }} }
{{- end -}}

{{- define "wd.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile: { type: RuntimeDefault }
{{- end -}}

{{- define "wd.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities: { drop: [ALL] }
seccompProfile: { type: RuntimeDefault }
{{- end -}}
