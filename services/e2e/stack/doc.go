// Package stack holds the integration tests of the native local stack itself: for each real
// component, a test that uses it the way ddb2delta will and asserts on the result. They run with
// the build tag "integration" once scripts/stack up has started the stack.
package stack
