{{- define "wd.name" -}}{{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "wd.fullname" -}}
{{- if .Values.fullnameOverride -}}{{ .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name (include "wd.name" .) | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- define "wd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "wd.labels" -}}
{{ include "wd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "wd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "wd.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}
{{- define "wd.secretName" -}}
{{- if .Values.secrets.create -}}{{ include "wd.fullname" . }}{{- else -}}{{ required "secrets.existingSecret is required unless secrets.create is true" .Values.secrets.existingSecret }}{{- end -}}
{{- end -}}
{{- define "wd.image" -}}{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}{{- end -}}
{{/* Environment shared by the worker and the migration Job. */}}
{{- define "wd.env" -}}
- name: DATABASE_URL
  valueFrom: { secretKeyRef: { name: {{ include "wd.secretName" . }}, key: {{ .Values.secrets.databaseUrlKey }} } }
- name: WEBHOOK_ENCRYPTION_KEYS
  valueFrom: { secretKeyRef: { name: {{ include "wd.secretName" . }}, key: {{ .Values.secrets.encryptionKeysKey }} } }
- name: WEBHOOK_DB_POOL_SIZE
  value: {{ .Values.worker.dbPoolSize | quote }}
- name: WEBHOOK_LOG_FORMAT
  value: {{ .Values.worker.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.worker.logLevel | quote }}
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
