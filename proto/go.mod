module github.com/ddb2delta/ddb2delta/proto

go 1.26.0
