{{/* Chart name, overridable. */}}
{{- define "mcp-warden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: the release name when it already says mcp-warden. */}}
{{- define "mcp-warden.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "mcp-warden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "mcp-warden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mcp-warden
{{- end }}

{{/* Selector of the operator pods. */}}
{{- define "mcp-warden.operatorSelector" -}}
app.kubernetes.io/name: {{ include "mcp-warden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector of the bundled Redis pod. */}}
{{- define "mcp-warden.redisSelector" -}}
app.kubernetes.io/name: {{ include "mcp-warden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "mcp-warden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mcp-warden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mcp-warden.webhookServiceName" -}}
{{- printf "%s-webhook" (include "mcp-warden.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcp-warden.metricsServiceName" -}}
{{- printf "%s-metrics" (include "mcp-warden.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcp-warden.tlsSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "mcp-warden.fullname" .) | trunc 63 | trimSuffix "-") .Values.webhook.tlsSecretName }}
{{- end }}

{{- define "mcp-warden.redisName" -}}
{{- printf "%s-redis" (include "mcp-warden.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* repository[:tag][@digest] of an image block; `tag` defaults to the appVersion. */}}
{{- define "mcp-warden.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end }}

{{/* Namespaces the webhook never touches. */}}
{{- define "mcp-warden.excludedNamespaces" -}}
{{- $ns := list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace -}}
{{- concat $ns .Values.webhook.excludeNamespaces | uniq | toJson -}}
{{- end }}

{{/*
The `storage` block of a policy, from the redis values: the external Redis, else the bundled one,
else nothing.
*/}}
{{- define "mcp-warden.redisStorage" -}}
{{- $r := .Values.redis -}}
{{- if $r.external.url -}}
{{- $redis := dict "url" $r.external.url "mode" $r.external.mode "timeoutMillis" $r.external.timeoutMillis -}}
{{- with $r.external.sentinelMaster }}{{ $_ := set $redis "sentinelMaster" . }}{{ end -}}
{{- with $r.external.extraNodes }}{{ $_ := set $redis "extraNodes" . }}{{ end -}}
{{- with $r.external.username }}{{ $_ := set $redis "username" . }}{{ end -}}
{{- with $r.external.existingSecret }}{{ $_ := set $redis "passwordSecretRef" (dict "name" . "key" $r.external.existingSecretKey) }}{{ end -}}
{{- toYaml (dict "redis" $redis) -}}
{{- else if $r.bundled.enabled -}}
{{- toYaml (dict "redis" (dict "url" (printf "redis://%s.%s.svc:6379" (include "mcp-warden.redisName" .) .Release.Namespace))) -}}
{{- end -}}
{{- end }}

{{/* Fails rendering with a clear message on value combinations the JSON schema cannot express. */}}
{{- define "mcp-warden.validate" -}}
{{- $r := .Values.redis -}}
{{- if and $r.external.url $r.bundled.enabled -}}
{{- fail "redis: set either redis.external.url or redis.bundled.enabled, not both" -}}
{{- end -}}
{{- if $r.external.url -}}
{{- if and $r.external.tls (not (hasPrefix "rediss://" $r.external.url)) -}}
{{- fail "redis.external.tls is true, so redis.external.url must start with rediss://" -}}
{{- end -}}
{{- if and (not $r.external.tls) (hasPrefix "rediss://" $r.external.url) -}}
{{- fail "redis.external.url starts with rediss:// (TLS): set redis.external.tls to true" -}}
{{- end -}}
{{- if and (eq $r.external.mode "sentinel") (not $r.external.sentinelMaster) -}}
{{- fail "redis.external.mode is sentinel: set redis.external.sentinelMaster" -}}
{{- end -}}
{{- end -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection) -}}
{{- fail "operator.replicas > 1 needs operator.leaderElection: true (replicas would reconcile the same objects at once)" -}}
{{- end -}}
{{- end }}
