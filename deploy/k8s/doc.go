// Package k8s has no code of its own: its tests check the Kubernetes manifests in this folder.
// Without build tags they render every overlay with the kustomize API, check the workloads'
// hardening, decode KEDA's objects with KEDA's own types and validators, and check with the real
// service binaries that ports, probes, configuration and environment agree with the services.
// With the k8s tag (scripts/test k8s, `make test-k8s`) they also validate the built-in kinds
// with kubeconform against Kubernetes' JSON schemas and apply every overlay to a real
// kube-apiserver with `kubectl apply --dry-run=server`.
package k8s
