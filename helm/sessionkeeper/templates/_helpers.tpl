{{/* vim: set filetype=mustache: */}}

{{- define "sessionkeeper.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, at most 63 characters (DNS label); "-headless" is appended to it, so
keep room: 54 characters.
*/}}
{{- define "sessionkeeper.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sessionkeeper.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sessionkeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sessionkeeper.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sessionkeeper.labels" -}}
helm.sh/chart: {{ include "sessionkeeper.chart" . }}
{{ include "sessionkeeper.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sessionkeeper
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "sessionkeeper.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sessionkeeper.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sessionkeeper.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when a database Secret is configured, "" otherwise (the embedded store). */}}
{{- define "sessionkeeper.database" -}}
{{- if .Values.database.existingSecret }}true{{ end }}
{{- end }}

{{/* Pods the Deployment asks for: replicaCount, or 1 embedded / 2 with a database. */}}
{{- define "sessionkeeper.replicas" -}}
{{- if not (kindIs "invalid" .Values.replicaCount) }}
{{- .Values.replicaCount }}
{{- else if include "sessionkeeper.database" . }}2
{{- else }}1
{{- end }}
{{- end }}

{{/* The fewest pods that run: the HPA's minimum, or the fixed replica count. */}}
{{- define "sessionkeeper.minPods" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas }}
{{- else }}
{{- include "sessionkeeper.replicas" . }}
{{- end }}
{{- end }}

{{/* hook, initContainer or startup; "" on the embedded store (each pod migrates its file). */}}
{{- define "sessionkeeper.migrationsMode" -}}
{{- if include "sessionkeeper.database" . }}{{ .Values.migrations.mode }}{{ end }}
{{- end }}

{{/* grpc or http: how the probes talk to the pod. */}}
{{- define "sessionkeeper.probeType" -}}
{{- if eq .Values.probes.type "auto" }}
{{- if .Values.tls.enabled }}http{{ else }}grpc{{ end }}
{{- else }}
{{- .Values.probes.type }}
{{- end }}
{{- end }}

{{- define "sessionkeeper.terminationGracePeriodSeconds" -}}
{{- $floor := add .Values.server.shutdownDelaySeconds .Values.server.drainTimeoutSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $floor 10 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* The host part of --listen/--metrics-listen; an IPv6 address gets its brackets ([::]). */}}
{{- define "sessionkeeper.listenHost" -}}
{{- $h := .Values.server.listenHost }}
{{- if and (contains ":" $h) (not (hasPrefix "[" $h)) }}[{{ $h }}]{{ else }}{{ $h }}{{ end }}
{{- end }}

{{/* Paths inside the container. */}}
{{- define "sessionkeeper.configPath" -}}/etc/sessionkeeper/config/policy.toml{{- end }}
{{- define "sessionkeeper.dataDir" -}}/var/lib/sessionkeeper{{- end }}
{{- define "sessionkeeper.tlsDir" -}}/etc/sessionkeeper/tls{{- end }}
{{- define "sessionkeeper.clientCADir" -}}/etc/sessionkeeper/client-ca{{- end }}
{{- define "sessionkeeper.authDir" -}}/etc/sessionkeeper/auth{{- end }}

{{/*
Every combination of values that the schema cannot express; each one fails the render with one
line that names the values to change.
*/}}
{{- define "sessionkeeper.validate" -}}
{{- $db := include "sessionkeeper.database" . }}
{{- if and (not $db) (gt (int (include "sessionkeeper.replicas" .)) 1) }}
{{- fail "replicaCount > 1 needs database.existingSecret: the embedded SQLite store supports one instance only" }}
{{- end }}
{{- if and (not $db) .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled needs database.existingSecret: the embedded SQLite store supports one instance only" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not be above autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (kindIs "invalid" .Values.autoscaling.targetCPUUtilizationPercentage) (kindIs "invalid" .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if and .Values.tls.clientCA.enabled (not .Values.tls.enabled) }}
{{- fail "tls.clientCA.enabled needs tls.enabled" }}
{{- end }}
{{- if and .Values.tls.enabled (eq .Values.probes.type "grpc") }}
{{- fail "probes.type grpc cannot be used with tls.enabled: Kubernetes gRPC probes do not speak TLS; use auto or http" }}
{{- end }}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- $floor := add .Values.server.shutdownDelaySeconds .Values.server.drainTimeoutSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $floor) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be above server.shutdownDelaySeconds + server.drainTimeoutSeconds (%v), or the pod is killed while it drains" .Values.terminationGracePeriodSeconds $floor) }}
{{- end }}
{{- end }}
{{- if eq .Values.server.grpcPort .Values.server.metricsPort }}
{{- fail "server.grpcPort and server.metricsPort must differ" }}
{{- end }}
{{- if and $db .Values.persistence.enabled }}
{{- fail "persistence.enabled is for the embedded store only; with database.existingSecret the data lives in Postgres" }}
{{- end }}
{{- end }}
