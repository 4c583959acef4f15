{{/*
Names and labels. The user daemon builds the same objects in Python
(packages/userd/src/kubepresence/userd/core/manifests.py); keep both in step.
*/}}

{{- define "kubepresence.version" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end }}

{{/* Cluster-scoped objects (and Roles outside the release namespace) name the namespace. */}}
{{- define "kubepresence.clusterName" -}}
kubepresence-manager-{{ .Release.Namespace }}
{{- end }}

{{- define "kubepresence.webhookConfigName" -}}
kubepresence-agent-injector-{{ .Release.Namespace }}
{{- end }}

{{- define "kubepresence.labels" -}}
app.kubernetes.io/name: kubepresence-manager
app.kubernetes.io/part-of: kubepresence
app.kubernetes.io/version: {{ include "kubepresence.version" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end }}

{{- define "kubepresence.selectorLabels" -}}
app.kubernetes.io/name: kubepresence-manager
{{- end }}

{{/* Namespaced scope: the release namespace first, then the listed ones, once each. */}}
{{- define "kubepresence.roleNamespaces" -}}
{{- prepend .Values.rbac.namespaces .Release.Namespace | uniq | toJson -}}
{{- end }}

{{/* Rules for what lives in namespaces (granted cluster-wide or per namespace). */}}
{{- define "kubepresence.namespacedRules" -}}
- apiGroups: [""]
  resources: [pods, services, endpoints]
  verbs: [get, list, watch]
# The manager finds the service CIDR by a dry-run create of an impossible ClusterIP.
- apiGroups: [""]
  resources: [services]
  verbs: [create]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [deployments, replicasets, statefulsets]
  verbs: [get, list, watch, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* Only the install's own webhook configuration: the manager writes its CA bundle there. */}}
{{- define "kubepresence.webhookRule" -}}
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations]
  resourceNames: [{{ include "kubepresence.webhookConfigName" . }}]
  verbs: [get, list, patch]
{{- end }}
