# shellcheck shell=bash
# Sourced by the scripts in this folder: loads scripts/stack.env (environment wins) and defines
# small helpers. Sets STACK_ROOT to the repository root.

STACK_ROOT=${STACK_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export STACK_ROOT

while IFS= read -r line || [[ -n $line ]]; do
  [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
  key=${line%%=*}
  val=${line#*=}
  [[ -n ${!key+x} ]] && continue # the environment wins
  val=${val//'${HOME}'/$HOME}
  val=${val//'${STACK_ROOT}'/$STACK_ROOT}
  printf -v "$key" '%s' "$val"
  export "${key?}"
done <"$STACK_ROOT/scripts/stack.env"

LOG_DIR=$STACK_RUN_DIR/logs
PID_DIR=$STACK_RUN_DIR/pids

say() { printf '\033[1m[%s]\033[0m %s\n' "${SCRIPT_NAME:-stack}" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# log_tail FILE [LINES]: the last lines of a component's log, for failure messages.
log_tail() {
  [[ -f $1 ]] || return 0
  printf -- '--- last %s lines of %s ---\n' "${2:-40}" "$1" >&2
  tail -n "${2:-40}" "$1" >&2
}

# AWS credentials for the loopback DynamoDB Local and versitygw (never real AWS).
stack_aws_env() {
  export AWS_ACCESS_KEY_ID=$STACK_AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$STACK_AWS_SECRET_ACCESS_KEY
  export AWS_REGION=$STACK_AWS_REGION AWS_EC2_METADATA_DISABLED=true
  unset AWS_PROFILE AWS_SESSION_TOKEN
}
