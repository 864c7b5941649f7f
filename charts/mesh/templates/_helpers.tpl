{{/*
Definitions shared by the templates of the mesh chart.
*/}}

{{/* The chart label's value: <name>-<version>. */}}
{{- define "mesh.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the chart. Call with the root context. */}}
{{- define "mesh.labels" -}}
helm.sh/chart: {{ include "mesh.chart" . }}
app.kubernetes.io/part-of: mesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Labels that select a component's pods. Call with (dict "name" "mesh-pilot"). */}}
{{- define "mesh.selectorLabels" -}}
app: {{ .name }}
app.kubernetes.io/name: {{ .name }}
{{- end }}

{{/*
A component's image: its own override, else <global.hub>/<name>:<global.tag>, the tag
defaulting to the chart's appVersion. Call with
(dict "root" $ "name" "mesh-pilot" "image" .Values.pilot.image).
*/}}
{{- define "mesh.image" -}}
{{- if .image -}}
{{ .image }}
{{- else -}}
{{ required "global.hub is required" .root.Values.global.hub }}/{{ .name }}:{{ .root.Values.global.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The trust domain: meshConfig.trustDomain when set, else global.trustDomain. */}}
{{- define "mesh.trustDomain" -}}
{{ .Values.meshConfig.trustDomain | default (required "global.trustDomain is required" .Values.global.trustDomain) }}
{{- end }}

{{/*
Whether injected pods get a native sidecar: sidecarInjector.nativeSidecar, or with "auto"
whether the cluster runs Kubernetes 1.29 or later ("-0" lets provider versions such as
v1.30.5-gke.1 match).
*/}}
{{- define "mesh.nativeSidecar" -}}
{{- $native := .Values.sidecarInjector.nativeSidecar -}}
{{- if eq (toString $native) "auto" -}}
{{ semverCompare ">=1.29-0" .Capabilities.KubeVersion.Version }}
{{- else if kindIs "bool" $native -}}
{{ $native }}
{{- else -}}
{{ fail (printf "sidecarInjector.nativeSidecar must be true, false or auto, not %v" $native) }}
{{- end -}}
{{- end }}

{{/* The pod security context of the control plane: not root, its own group for the files of its volumes. */}}
{{- define "mesh.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1337
runAsGroup: 1337
fsGroup: 1337
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The container security context of the control plane: no privilege, no capability, a read-only root. */}}
{{- define "mesh.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end }}

{{/* What every entry of the sidecar injector has: mesh-pilot's /inject, pods on creation. */}}
{{- define "mesh.injectorWebhook" -}}
clientConfig:
  service:
    name: mesh-pilot
    namespace: {{ .Release.Namespace }}
    path: /inject
    port: 443
rules:
  - operations: ["CREATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
failurePolicy: {{ .Values.sidecarInjector.failurePolicy }}
sideEffects: None
admissionReviewVersions: ["v1"]
reinvocationPolicy: Never
matchPolicy: Equivalent
timeoutSeconds: 10
{{- end }}
