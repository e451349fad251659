// Package monitoring has no code of its own: its tests check the Grafana dashboards
// (deploy/grafana/dashboards) and the Prometheus alert rules (deploy/prometheus/alerts.yml).
//
// Without build tags they load every dashboard and check its structure (unique panel ids, every
// target a PromQL expression on the provisioned Prometheus datasource, every Grafana variable
// defined), parse every expression of the dashboards (panels, collapsed rows, template variables,
// label_values included) and of the alert rules with Prometheus' own PromQL parser, check the
// names and labels they use against the metrics documented in the services' READMEs, and check
// that docker-compose provisions the dashboards and loads the rules.
//
// With the integration tag they run the three real service binaries on the native stack, drive
// a small workload through them (a dead letter included), scrape their /metrics, and fail for
// any metric or label name an expression uses that the services do not export; and they run
// promtool: `check rules` and `test rules` (deploy/prometheus/alerts_test.yml).
package monitoring
