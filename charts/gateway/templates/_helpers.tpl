{{/*
Definitions shared by the templates of the gateway chart.
*/}}

{{/* The gateway's name: .Values.name, else the release name. */}}
{{- define "gateway.name" -}}
{{ .Values.name | default .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the gateway's pods: `app` and Istio's `istio` (the name without "mesh-"). */}}
{{- define "gateway.selectorLabels" -}}
app: {{ include "gateway.name" . }}
istio: {{ include "gateway.name" . | trimPrefix "mesh-" }}
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: mesh
app.kubernetes.io/name: {{ include "gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "gateway.selectorLabels" . }}
{{- range $key, $value := .Values.labels }}
{{ $key }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* The proxy image: .Values.image, else global.proxy.image, else <global.hub>/mesh-proxy:<tag>. */}}
{{- define "gateway.image" -}}
{{- if .Values.image -}}
{{ .Values.image }}
{{- else if .Values.global.proxy.image -}}
{{ .Values.global.proxy.image }}
{{- else -}}
{{ required "global.hub is required" .Values.global.hub }}/mesh-proxy:{{ .Values.global.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}
