{{/*
Names. The base name is at most 43 characters so that the longest suffix ("-controller-metrics",
19 characters) still gives a valid DNS label of at most 63.
*/}}
{{- define "agentgroup.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 43 | trimSuffix "-" }}
{{- end }}

{{- define "agentgroup.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 43 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 43 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 43 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "agentgroup.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agentgroup.webhook.name" -}}{{ include "agentgroup.fullname" . }}-webhook{{- end }}
{{- define "agentgroup.controller.name" -}}{{ include "agentgroup.fullname" . }}-controller{{- end }}
{{/* The ValidatingWebhookConfiguration (cluster-scoped). */}}
{{- define "agentgroup.webhook.configName" -}}{{ include "agentgroup.webhook.name" . }}{{- end }}
{{/* The one webhook in it: a fully qualified name, as the API requires. */}}
{{- define "agentgroup.webhook.hookName" -}}validate.agentgroups.runtime.agentcube.volcano.sh{{- end }}
{{- define "agentgroup.webhook.path" -}}/validate-agentgroup{{- end }}
{{- define "agentgroup.webhook.certDir" -}}/tmp/k8s-webhook-server/serving-certs{{- end }}
{{- define "agentgroup.controller.leaseName" -}}agentgroup-controller{{- end }}

{{/* The Secret with the serving certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "agentgroup.certs.secretName" -}}
{{- if .Values.certificates.secretName }}
{{- .Values.certificates.secretName }}
{{- else if eq .Values.certificates.mode "secret" }}
{{- fail "certificates.secretName is required when certificates.mode is secret: name the kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) in the release namespace" }}
{{- else }}
{{- include "agentgroup.webhook.name" . }}-tls
{{- end }}
{{- end }}

{{/* The webhook's --cert-mode flag for each certificates.mode. */}}
{{- define "agentgroup.certs.flag" -}}
{{- $modes := dict "selfManaged" "self-managed" "certManager" "cert-manager" "secret" "secret" }}
{{- $flag := get $modes .Values.certificates.mode }}
{{- if not $flag }}
{{- fail (printf "certificates.mode %q is not supported: use selfManaged, certManager or secret" .Values.certificates.mode) }}
{{- end }}
{{- $flag }}
{{- end }}

{{- define "agentgroup.certManager.servingCertName" -}}{{ include "agentgroup.webhook.name" . }}-serving{{- end }}

{{/* The image reference: a digest pins it, else the tag, else the chart's appVersion. */}}
{{- define "agentgroup.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Labels. */}}
{{- define "agentgroup.labels" -}}
helm.sh/chart: {{ include "agentgroup.chart" . }}
app.kubernetes.io/name: {{ include "agentgroup.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentcube
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "agentgroup.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentgroup.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "agentgroup.componentLabels" -}}
{{ include "agentgroup.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The caBundle to render into the webhook configuration, so that a `helm upgrade` never replaces a
caBundle that the API server needs with an empty or stale one:
  1. mode secret with certificates.caBundle: that PEM;
  2. otherwise ca.crt of the serving Secret as it is now (the rotator, cert-manager or you keep it
     in step with tls.crt in the same Secret, so it always trusts the served certificate);
  3. otherwise the caBundle the live configuration already has (e.g. the Secret is gone);
  4. otherwise nothing (first install of selfManaged or certManager: the rotator or the cainjector
     injects it within seconds; AgentGroup writes are refused until then, nothing else is affected).
`lookup` returns nothing under `helm template` and `--dry-run=client`, so those render no caBundle.
*/}}
{{- define "agentgroup.webhook.caBundle" -}}
{{- $ns := .Release.Namespace }}
{{- if and (eq .Values.certificates.mode "secret") .Values.certificates.caBundle }}
{{- if not (hasPrefix "-----BEGIN CERTIFICATE-----" (trim .Values.certificates.caBundle)) }}
{{- fail "certificates.caBundle must be the PEM text of the CA (-----BEGIN CERTIFICATE----- ...), not base64 or a path: pass the file with --set-file certificates.caBundle=ca.crt" }}
{{- end }}
{{- .Values.certificates.caBundle | b64enc }}
{{- else }}
{{- $secret := lookup "v1" "Secret" $ns (include "agentgroup.certs.secretName" .) }}
{{- $fromSecret := "" }}
{{- if $secret }}{{ $fromSecret = index ($secret.data | default dict) "ca.crt" | default "" }}{{ end }}
{{- if $fromSecret }}
{{- $fromSecret }}
{{- else }}
{{- $live := lookup "admissionregistration.k8s.io/v1" "ValidatingWebhookConfiguration" "" (include "agentgroup.webhook.configName" .) }}
{{- $bundle := "" }}
{{- range ($live.webhooks | default list) }}
{{- if and (eq .name (include "agentgroup.webhook.hookName" $)) .clientConfig.caBundle }}
{{- $bundle = .clientConfig.caBundle }}
{{- end }}
{{- end }}
{{- $bundle }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod spec parts shared by both Deployments. */}}
{{- define "agentgroup.podSecurityContext" -}}
{{- $ctx := deepCopy .Values.podSecurityContext }}
{{- range $k, $v := .Values.podSecurityContext }}{{ if kindIs "invalid" $v }}{{ $_ := unset $ctx $k }}{{ end }}{{ end }}
{{- toYaml $ctx }}
{{- end }}

{{- define "agentgroup.containerSecurityContext" -}}
{{- $ctx := deepCopy .Values.containerSecurityContext }}
{{- range $k, $v := .Values.containerSecurityContext }}{{ if kindIs "invalid" $v }}{{ $_ := unset $ctx $k }}{{ end }}{{ end }}
{{- toYaml $ctx }}
{{- end }}
