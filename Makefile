# ddb2delta — each target is a line or two; the work is in scripts/.
.DEFAULT_GOAL := help
.PHONY: help build test test-unit test-integration test-databricks test-k8s e2e chaos dev show stack-up stack-down stack-status bench bench-e2e lint gen

SERVICES := producer enricher sink

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  make %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build the three services into bin/
	go build -o bin/ $(foreach s,$(SERVICES),./services/$(s)/cmd/$(s))

test: ## everything: unit tests, stack up, integration tests, e2e, a short chaos run, stack down
	scripts/test all

test-unit: ## unit tests only (no network)
	scripts/test unit

test-integration: ## integration tests against the native stack (started if needed)
	scripts/test integration

test-databricks: ## the warehouse target and Unity Catalog registration: a fake Databricks warehouse, Spark's Thrift server, kill -9
	scripts/test databricks

test-k8s: ## deploy/: kustomize overlays, KEDA objects, kubeconform, kubectl apply --dry-run=server on a real kube-apiserver, dashboards and alerts
	scripts/test k8s

e2e: ## the three services on the stack, a workload, the Delta tables checked; prints E2E PASS/FAIL
	scripts/e2e e2e

chaos: ## e2e while services are killed, restarted and scaled; prints CHAOS PASS/FAIL
	scripts/e2e chaos

dev: ## the stack, the three services and a load generator; Ctrl-C stops all of it
	scripts/dev

show: ## a make dev Delta table filling up (TABLE=orders_mirror, orders_changelog, big_orders; ROWS=10)
	scripts/show $(or $(TABLE),orders_mirror) $(or $(ROWS),10)

stack-up: ## start the native stack (Kafka, registry, DynamoDB Local, S3, Prometheus)
	scripts/stack up

stack-down: ## stop everything the stack and make dev started
	scripts/stack down

stack-status: ## what runs where, and its log
	scripts/stack status

bench: ## benchmarks beside their in-run baselines, then bench-e2e (table + .stack/bench/results.json)
	scripts/bench

bench-e2e: ## the three services at 5k-100k changes/s from a generated stream, and beside Spark (E2E-BENCH, PEER-BENCH lines)
	scripts/bench-e2e

lint: ## gofmt, go vet and staticcheck (pinned)
	scripts/lint

gen: ## regenerate generated code
	go generate work
