{{/*
Names. The release name alone when it already says moorage, else release-moorage.
*/}}
{{- define "moorage.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "moorage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The registry's Service: its names are what image references and clients write. */}}
{{- define "moorage.registryService" -}}
{{- include "moorage.fullname" . -}}
{{- end -}}

{{- define "moorage.webhooksService" -}}
{{- include "moorage.fullname" . -}}-webhooks
{{- end -}}

{{- define "moorage.webhooksAccount" -}}
{{- include "moorage.fullname" . -}}-webhooks
{{- end -}}

{{/* The Secret with the webhooks' serving certificate (tls.crt, tls.key) and its ca.crt. */}}
{{- define "moorage.webhookSecret" -}}
{{- include "moorage.fullname" . -}}-webhook-tls
{{- end -}}

{{- define "moorage.mutatingWebhook" -}}
{{- include "moorage.fullname" . -}}-pin-images
{{- end -}}

{{- define "moorage.validatingWebhook" -}}
{{- include "moorage.fullname" . -}}-verify-images
{{- end -}}

{{- define "moorage.labels" -}}
app.kubernetes.io/name: {{ include "moorage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: include "moorage.selector" (list . "registry") */}}
{{- define "moorage.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "moorage.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "moorage.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
Where things run, from the values:
- volume: the registry pod needs its PersistentVolumeClaim (filesystem storage or SQLite);
- webhooksPlacement: "registry-pod" (SQLite: beside the registry, on its volume),
  "deployment" (PostgreSQL: a Deployment of their own), or "" (no webhooks);
- issuer: "cert-manager" or "moorage".
*/}}
{{- define "moorage.volume" -}}
{{- if or (eq .Values.storage.driver "filesystem") (eq .Values.metadata.backend "sqlite") -}}true{{- end -}}
{{- end -}}

{{- define "moorage.webhooksPlacement" -}}
{{- if .Values.webhooks.enabled -}}
{{- if eq .Values.metadata.backend "postgres" -}}deployment{{- else -}}registry-pod{{- end -}}
{{- end -}}
{{- end -}}

{{- define "moorage.issuer" -}}
{{- $issuer := .Values.webhooks.certificates.issuer -}}
{{- if eq $issuer "auto" -}}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}cert-manager{{- else -}}moorage{{- end -}}
{{- else -}}
{{- $issuer -}}
{{- end -}}
{{- end -}}

{{/* Rules across values, each failing with what to change. */}}
{{- define "moorage.validate" -}}
{{- $v := .Values -}}
{{- if and (not $v.registry.enabled) (not $v.webhooks.enabled) -}}
{{- fail "registry.enabled and webhooks.enabled are both false: nothing to install" -}}
{{- end -}}
{{- if and $v.registry.enabled (gt (int $v.registry.replicas) 1) (include "moorage.volume" .) -}}
{{- fail "registry.replicas > 1 needs storage.driver s3 and metadata.backend postgres: replicas share nothing but those (a filesystem volume and an SQLite file belong to one pod)" -}}
{{- end -}}
{{- if and (not $v.registry.enabled) (ne $v.metadata.backend "postgres") -}}
{{- fail "webhook-only (registry.enabled false) needs metadata.backend postgres: the webhooks read the registry's metadata, and only PostgreSQL is shared between hosts (for a registry on SQLite, run its webhooks beside it: moorage serve --webhook-listen)" -}}
{{- end -}}
{{- if and (not $v.registry.enabled) (not $v.webhooks.registryHosts) -}}
{{- fail "webhook-only (registry.enabled false) needs webhooks.registryHosts: the names image references give the registry (host:port)" -}}
{{- end -}}
{{- if and (eq $v.storage.driver "s3") (or (not $v.storage.s3.endpoint) (not $v.storage.s3.bucket) (not $v.storage.s3.existingSecret)) -}}
{{- fail "storage.driver s3 needs storage.s3.endpoint, storage.s3.bucket and storage.s3.existingSecret" -}}
{{- end -}}
{{- if and (eq $v.metadata.backend "postgres") (not $v.metadata.postgres.existingSecret) -}}
{{- fail "metadata.backend postgres needs metadata.postgres.existingSecret (a Secret holding the connection string under metadata.postgres.dsnKey)" -}}
{{- end -}}
{{- if and $v.nodeAccess.containerdHosts.enabled (not (include "moorage.nodePort" .)) -}}
{{- fail "nodeAccess.containerdHosts points nodes at 127.0.0.1:<nodePort>: it needs registry.enabled, registry.service.type NodePort and registry.service.nodePort" -}}
{{- end -}}
{{- if and (eq $v.webhooks.certificates.issuer "cert-manager") $v.webhooks.enabled (not (.Capabilities.APIVersions.Has "cert-manager.io/v1")) -}}
{{- fail "webhooks.certificates.issuer cert-manager, but the cluster does not serve cert-manager.io/v1: install cert-manager, or use auto or moorage" -}}
{{- end -}}
{{- end -}}

{{/* The registry's fixed NodePort, or nothing. */}}
{{- define "moorage.nodePort" -}}
{{- $service := .Values.registry.service -}}
{{- if and .Values.registry.enabled (ne $service.type "ClusterIP") $service.nodePort -}}
{{- $service.nodePort -}}
{{- end -}}
{{- end -}}

{{/* The registry's names in image references (admission.registry_hosts), comma-separated. */}}
{{- define "moorage.registryHosts" -}}
{{- $hosts := list -}}
{{- if .Values.registry.enabled -}}
{{- $service := include "moorage.registryService" . -}}
{{- $port := int .Values.registry.service.port -}}
{{- range $name := list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) -}}
{{- $hosts = append $hosts (printf "%s:%d" $name $port) -}}
{{- end -}}
{{- with include "moorage.nodePort" . -}}
{{- $hosts = append $hosts (printf "127.0.0.1:%s" .) -}}
{{- $hosts = append $hosts (printf "localhost:%s" .) -}}
{{- end -}}
{{- end -}}
{{- $hosts = concat $hosts .Values.webhooks.registryHosts | uniq -}}
{{- join "," $hosts -}}
{{- end -}}

{{/* The names nodes map to 127.0.0.1:<nodePort> with nodeAccess.containerdHosts. */}}
{{- define "moorage.containerdHosts" -}}
{{- if .Values.nodeAccess.containerdHosts.hosts -}}
{{- join "," .Values.nodeAccess.containerdHosts.hosts -}}
{{- else -}}
{{- $service := include "moorage.registryService" . -}}
{{- $port := int .Values.registry.service.port -}}
{{- printf "%s.%s.svc:%d,%s.%s.svc.cluster.local:%d" $service .Release.Namespace $port $service .Release.Namespace $port -}}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for every moorage pod and container. */}}
{{- define "moorage.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
{{- with .Values.fsGroup }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "moorage.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The settings every moorage process of the release shares, as MOORAGE_* variables (they take
precedence over moorage.toml).
*/}}
{{- define "moorage.env" -}}
- name: MOORAGE_LISTEN
  value: "0.0.0.0:5000"
- name: MOORAGE_DATA
  value: /var/lib/moorage
- name: MOORAGE_STORAGE_DRIVER
  value: {{ .Values.storage.driver | quote }}
{{- if eq .Values.storage.driver "s3" }}
{{- $s3 := .Values.storage.s3 }}
- name: MOORAGE_STORAGE_S3_ENDPOINT
  value: {{ $s3.endpoint | quote }}
- name: MOORAGE_STORAGE_S3_REGION
  value: {{ $s3.region | quote }}
- name: MOORAGE_STORAGE_S3_BUCKET
  value: {{ $s3.bucket | quote }}
- name: MOORAGE_STORAGE_S3_PREFIX
  value: {{ $s3.prefix | quote }}
- name: MOORAGE_STORAGE_S3_PATH_STYLE
  value: {{ $s3.pathStyle | quote }}
- name: MOORAGE_STORAGE_S3_REDIRECT
  value: {{ $s3.redirect | quote }}
{{- with $s3.publicEndpoint }}
- name: MOORAGE_STORAGE_S3_PUBLIC_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: MOORAGE_STORAGE_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: {{ $s3.accessKeyKey }}
- name: MOORAGE_STORAGE_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3.existingSecret }}
      key: {{ $s3.secretKeyKey }}
{{- end }}
- name: MOORAGE_METADATA_BACKEND
  value: {{ .Values.metadata.backend | quote }}
{{- if eq .Values.metadata.backend "postgres" }}
{{- include "moorage.dsnEnv" . | nindent 0 }}
- name: MOORAGE_METADATA_POOL_SIZE
  value: {{ .Values.metadata.postgres.poolSize | quote }}
- name: MOORAGE_METADATA_MIGRATE
  value: {{ not .Values.metadata.migration.job | quote }}
{{- end }}
- name: MOORAGE_ADMISSION_REGISTRY_HOSTS
  value: {{ include "moorage.registryHosts" . | quote }}
{{- end -}}

{{- define "moorage.dsnEnv" -}}
- name: MOORAGE_METADATA_DSN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.metadata.postgres.existingSecret }}
      key: {{ .Values.metadata.postgres.dsnKey }}
{{- end -}}

{{/* The webhooks' container, in the registry pod or in their own Deployment. */}}
{{- define "moorage.webhooksContainer" -}}
- name: webhooks
  image: {{ include "moorage.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - webhook
    - serve
    - --config
    - /etc/moorage/moorage.toml
    - --webhook-listen
    - "0.0.0.0:{{ .Values.webhooks.port }}"
    - --tls-cert
    - /etc/moorage/webhook-tls/tls.crt
    - --tls-key
    - /etc/moorage/webhook-tls/tls.key
  env:
    {{- include "moorage.env" . | nindent 4 }}
    - name: MOORAGE_WORKERS
      value: {{ .Values.webhooks.workers | quote }}
  ports:
    - name: https
      containerPort: {{ .Values.webhooks.port }}
      protocol: TCP
  readinessProbe:
    httpGet:
      path: /readyz
      port: https
      scheme: HTTPS
    periodSeconds: 5
    timeoutSeconds: 3
  livenessProbe:
    httpGet:
      path: /livez
      port: https
      scheme: HTTPS
    periodSeconds: 10
    timeoutSeconds: 3
    failureThreshold: 6
  securityContext:
    {{- include "moorage.containerSecurityContext" . | nindent 4 }}
  {{- with .Values.webhooks.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: config
      mountPath: /etc/moorage/moorage.toml
      subPath: moorage.toml
      readOnly: true
    - name: webhook-tls
      mountPath: /etc/moorage/webhook-tls
      readOnly: true
    - name: kube-api
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
    - name: data
      mountPath: /var/lib/moorage
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/*
The volumes the webhooks' container adds: the certificate, and the ServiceAccount token it
reads pull secrets and the inventory with (projected into this container only).
*/}}
{{- define "moorage.webhooksVolumes" -}}
- name: webhook-tls
  secret:
    secretName: {{ include "moorage.webhookSecret" . }}
- name: kube-api
  projected:
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end -}}

{{- /* What `moorage webhook manifests` prints for each webhook, called through the Service. */}}
{{- define "moorage.webhook" -}}
admissionReviewVersions: ["v1"]
sideEffects: None
timeoutSeconds: {{ .root.Values.webhooks.timeoutSeconds }}
failurePolicy: {{ .policy }}
matchPolicy: Equivalent
clientConfig:
  service:
    name: {{ include "moorage.webhooksService" .root }}
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: 443
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- toYaml .names | nindent 8 }}
rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["pods", "pods/ephemeralcontainers", "replicationcontrollers", "podtemplates"]
    scope: Namespaced
  - apiGroups: ["apps"]
    apiVersions: ["v1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["deployments", "replicasets", "statefulsets", "daemonsets"]
    scope: Namespaced
  - apiGroups: ["batch"]
    apiVersions: ["v1"]
    operations: ["CREATE", "UPDATE"]
    resources: ["jobs", "cronjobs"]
    scope: Namespaced
{{- end -}}
