//go:build tools

// Package kube pins the Kubernetes control-plane binaries `make test-k8s` runs: kube-apiserver
// and kubectl from the k8s.io/kubernetes module (its staging modules at their published
// versions), and etcd at the version that module's graph selects. scripts/stack kube-up builds
// them (GOWORK=off, this folder as the main module) into the cache, keyed by version.
package kube

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
