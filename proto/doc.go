// Package proto holds ddb2delta's wire contracts: the Avro schemas of the change-event envelope,
// the record key and the dead-letter record, and the Go types generated from them.
//
// The schemas arrive with the change-event contracts; this module exists from the start so that
// every service can depend on one place for them.
package proto
