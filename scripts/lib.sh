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
PROBE=$STACK_RUN_DIR/bin/stackprobe # built by `stack up`

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

# The stack's components, and the processes make dev adds; `stack down` stops both.
COMPONENTS=(kafka registry dynamodb s3 prometheus)
DEV_PROCESSES=(loadgen producer enricher sink)

# ---------------------------------------------------------------------------------------------
# processes: each runs in its own session (setsid) with a pid file; every command line carries
# STACK_RUN_DIR, which is how `down` knows a pid is still ours and not a recycled one.

pid_of() {
  local f=$PID_DIR/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$STACK_RUN_DIR" || return 1
  echo "$pid"
}

ports_of() {
  case $1 in
    producer) echo "$STACK_PRODUCER_HTTP_PORT" ;;
    enricher) echo "$STACK_ENRICHER_HTTP_PORT" ;;
    sink) echo "$STACK_SINK_HTTP_PORT" ;;
    kafka) echo "$STACK_KAFKA_PORT $STACK_KAFKA_CONTROLLER_PORT" ;;
    registry) echo "$STACK_REGISTRY_PORT" ;;
    dynamodb) echo "$STACK_DYNAMODB_PORT" ;;
    s3) echo "$STACK_S3_PORT" ;;
    prometheus) echo "$STACK_PROMETHEUS_PORT" ;;
    thrift) echo "$STACK_SPARK_THRIFT_PORT" ;;
    etcd) echo "$STACK_ETCD_PORT $STACK_ETCD_PEER_PORT" ;;
    kube-apiserver) echo "$STACK_KUBE_APISERVER_PORT" ;;
  esac
}

# stack_running: every component of the stack is running, started by this clone's scripts.
stack_running() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

launch() { # launch NAME CMD...
  local name=$1 port; shift
  if pid_of "$name" >/dev/null; then
    say "$name already running (pid $(pid_of "$name"))"
    return 0
  fi
  for port in $(ports_of "$name"); do
    # Something we did not start holds the port: starting would fail later with a confusing
    # bind error, and probing would talk to the stranger.
    port_busy "$port" && die "port $port (for $name) is in use by another process; stop it or change the port in scripts/stack.env"
  done
  mkdir -p "$LOG_DIR" "$PID_DIR"
  printf '\n===== %s starting %s =====\n' "$(date -u +%FT%TZ)" "$name" >>"$LOG_DIR/$name.log"
  setsid nohup "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$PID_DIR/$name.pid"
}

stop_one() {
  local c=$1 pid
  pid=$(pid_of "$c") || { rm -f "$PID_DIR/$c.pid"; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$c did not stop in 20s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_DIR/$c.pid"
  say "stopped $c"
}

