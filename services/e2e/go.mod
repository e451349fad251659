module github.com/ddb2delta/ddb2delta/services/e2e

go 1.26.0

require (
	github.com/ddb2delta/ddb2delta/proto v0.0.0
	github.com/ddb2delta/ddb2delta/services/platform v0.0.0
)

replace (
	github.com/ddb2delta/ddb2delta/proto => ../../proto
	github.com/ddb2delta/ddb2delta/services/platform => ../platform
)
