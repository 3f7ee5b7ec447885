{{/*
Pieces shared by the server container, the migration init container and the migration Job.
*/}}

{{/* Flags every command takes (they are global in the binary). */}}
{{- define "sessionkeeper.commonArgs" -}}
- --log-format={{ .Values.server.logFormat }}
{{- if include "sessionkeeper.database" . }}
- --db-acquire-timeout={{ .Values.database.acquireTimeout }}
- --db-lock-timeout={{ .Values.database.lockTimeout }}
- --db-statement-timeout={{ .Values.database.statementTimeout }}
{{- end }}
{{- end }}

{{/* Environment every command gets: the log level and the database URL (only from the Secret). */}}
{{- define "sessionkeeper.commonEnv" -}}
- name: RUST_LOG
  value: {{ .Values.server.logLevel | quote }}
{{- if include "sessionkeeper.database" . }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- end }}
{{- end }}

{{/* `sessionkeeper migrate`: the init container and the Job run the same container. */}}
{{- define "sessionkeeper.migrateContainer" -}}
name: migrate
image: {{ include "sessionkeeper.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args:
  - migrate
  {{- include "sessionkeeper.commonArgs" . | nindent 2 }}
env:
  {{- include "sessionkeeper.commonEnv" . | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
resources:
  {{- toYaml .Values.migrations.resources | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- with .Values.extraVolumeMounts }}
  {{- tpl (toYaml .) $ | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "sessionkeeper.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}
