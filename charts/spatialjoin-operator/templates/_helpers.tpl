{{/* Names, labels and the decisions every template shares. */}}

{{- define "spatialjoin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "spatialjoin.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "spatialjoin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spatialjoin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "spatialjoin.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "spatialjoin.selectorLabels" . }}
app.kubernetes.io/part-of: spatialjoin
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "spatialjoin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "spatialjoin.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "spatialjoin.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* "true" when the operator watches every namespace (no watch.namespaces). */}}
{{- define "spatialjoin.clusterwide" -}}
{{- if not .Values.watch.namespaces -}}true{{- end -}}
{{- end -}}

{{/* "true" when kopf peering is on (the default; required with more than one replica). */}}
{{- define "spatialjoin.peering" -}}
{{- if and (not .Values.peering.enabled) (gt (int .Values.replicaCount) 1) -}}
{{- fail "peering.enabled=false (standalone) needs replicaCount 1: several standalone operators would all reconcile" -}}
{{- end -}}
{{- if .Values.peering.enabled -}}true{{- end -}}
{{- end -}}

{{/* "true" when several pods peer: each then needs its own kopf priority. */}}
{{- define "spatialjoin.multiPod" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}

{{/* The arguments of `spatialjoin operator` (standalone) or `kopf run` (peering), as a YAML list. */}}
{{- define "spatialjoin.operatorArgs" -}}
{{- $args := list -}}
{{- if include "spatialjoin.peering" . -}}
{{- $args = append $args (printf "--peering=%s" .Values.peering.name) -}}
{{- else -}}
{{- $args = append $args "--standalone" -}}
{{- end -}}
{{- if include "spatialjoin.clusterwide" . -}}
{{- $args = append $args "--all-namespaces" -}}
{{- else -}}
{{- range .Values.watch.namespaces -}}
{{- $args = append $args (printf "--namespace=%s" .) -}}
{{- end -}}
{{- end -}}
{{- if .Values.liveness.enabled -}}
{{- $args = append $args (printf "--liveness=http://0.0.0.0:%d/healthz" (int .Values.liveness.port)) -}}
{{- end -}}
{{- if eq (upper .Values.logLevel) "DEBUG" -}}
{{- $args = append $args "--verbose" -}}
{{- end -}}
{{- toYaml $args -}}
{{- end -}}
