{{/* The control plane namespace. */}}
{{- define "conduit.namespace" -}}
{{- .Values.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* The control plane version: controlPlaneVersion, else the chart's appVersion. */}}
{{- define "conduit.version" -}}
{{- .Values.controlPlaneVersion | default .Chart.AppVersion -}}
{{- end -}}

{{/* Inventory labels carried by every object: uninstall and upgrade's prune
find the install by part-of and control-plane-ns. */}}
{{- define "conduit.labels" -}}
app.kubernetes.io/part-of: conduit
app.kubernetes.io/managed-by: conduit
conduit.io/control-plane-ns: {{ include "conduit.namespace" . }}
conduit.io/version: {{ include "conduit.version" . | quote }}
{{- end -}}

{{/* Selector labels of the controller's pods (immutable: no version). */}}
{{- define "conduit.controller.selector" -}}
conduit.io/control-plane-component: controller
conduit.io/control-plane-ns: {{ include "conduit.namespace" . }}
{{- end -}}

{{/* Name of cluster-scoped objects, unique per control plane namespace. */}}
{{- define "conduit.clusterName" -}}
conduit-{{ include "conduit.namespace" . }}-controller
{{- end -}}

{{- define "conduit.controller.image" -}}
{{ .Values.controller.image.name }}:{{ .Values.controller.image.version | default (include "conduit.version" .) }}
{{- end -}}

{{- define "conduit.proxy.version" -}}
{{ .Values.proxy.image.version | default (include "conduit.version" .) }}
{{- end -}}
