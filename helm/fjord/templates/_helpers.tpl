{{/* Names, labels and the pieces every template shares. */}}

{{- define "fjord.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fjord.cp" -}}{{ include "fjord.fullname" . }}-cp{{- end -}}
{{- define "fjord.cpHeadless" -}}{{ include "fjord.fullname" . }}-cp-peers{{- end -}}

{{- define "fjord.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "fjord.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fjord
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fjord.cpSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end -}}

{{/* The control plane's client endpoints, as media nodes and ctl dial them. */}}
{{- define "fjord.cpEndpoints" -}}
{{- $root := . -}}
{{- $eps := list -}}
{{- range $i, $_ := until (int .Values.controlPlane.replicas) -}}
{{- $eps = append $eps (printf "%s-%d.%s.%s.svc:%d" (include "fjord.cp" $root) $i (include "fjord.cpHeadless" $root) $root.Release.Namespace (int $root.Values.controlPlane.ports.client)) -}}
{{- end -}}
{{- join "," $eps -}}
{{- end -}}

{{/* Initial voters: ID=HOST:PEER_PORT for each replica. */}}
{{- define "fjord.cpPeers" -}}
{{- $root := . -}}
{{- $peers := list -}}
{{- range $i, $_ := until (int .Values.controlPlane.replicas) -}}
{{- $peers = append $peers (printf "%d=%s-%d.%s.%s.svc:%d" (add $i 1) (include "fjord.cp" $root) $i (include "fjord.cpHeadless" $root) $root.Release.Namespace (int $root.Values.controlPlane.ports.peer)) -}}
{{- end -}}
{{- join "," $peers -}}
{{- end -}}

{{/* The container security context every Fjord container runs with. */}}
{{- define "fjord.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
