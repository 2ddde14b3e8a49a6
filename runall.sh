#!/usr/bin/env bash
# The whole system in one tmux window: writer logs | worker stats | client stats.
#
#   ./runall.sh              start, and attach when run from a terminal
#   ./runall.sh --detached   start and stay detached (tmux attach -t sqs-message-service)
#   ./runall.sh stop         stop everything it started, gracefully, and end the session
#
# Locally (the default) a local SQS endpoint runs in a second tmux window ("sqs") on
# 127.0.0.1:$LOCAL_SQS_PORT with dummy credentials, and real AWS is never contacted.
# AWS=1 uses real SQS with your own credentials and region instead.
# The operator console runs in a third window ("console"), at http://127.0.0.1:$CONSOLE_PORT/.
# Knobs: SQS_LOCAL=fauxqs|moto, LOCAL_SQS_PORT (4566), PORT (5000), CONSOLE_PORT (5050),
# CONSOLE_KEYS (unset: the console is read-only), RUN_RATE (client requests per second, 100),
# RUN_DURATION (client seconds, 3600), PY (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")"
SESSION="${RUNALL_SESSION:-sqs-message-service}"
PY="${PY:-.venv/bin/python}"

stop() {
  if ! tmux has-session -t "$SESSION" 2>/dev/null; then
    echo "runall.sh: nothing running (no tmux session '$SESSION')"
    return 0
  fi
  local pids
  pids=$(tmux list-panes -s -t "$SESSION" -F '#{pane_pid}')
  # Ctrl-C in every pane: the worker finishes what is in flight, the writer drains.
  for pane in $(tmux list-panes -s -t "$SESSION" -F '#{pane_id}'); do
    tmux send-keys -t "$pane" C-c
  done
  for _ in $(seq 1 150); do
    tmux list-panes -s -t "$SESSION" -F '#{pane_dead}' | grep -q 0 || break
    sleep 0.1
  done
  # Hangs up on whatever has not finished within 15 s; "stopped" is said once it has exited.
  tmux kill-session -t "$SESSION"
  for _ in $(seq 1 100); do
    running=0
    for pid in $pids; do
      if kill -0 "$pid" 2>/dev/null; then running=1; fi
    done
    [ "$running" = 0 ] && break
    sleep 0.1
  done
  echo "runall.sh: stopped"
}

if [ "${1:-}" = stop ]; then
  command -v tmux >/dev/null && stop
  exit 0
fi
detached=0
[ "${1:-}" = --detached ] && detached=1
[ -t 1 ] || detached=1

if ! command -v tmux >/dev/null; then
  echo "runall.sh needs tmux: sudo apt-get install tmux (Debian, Ubuntu) or brew install tmux (macOS)" >&2
  exit 1
fi
if tmux has-session -t "$SESSION" 2>/dev/null; then
  echo "runall.sh: already running; attach with 'tmux attach -t $SESSION', or './runall.sh stop'" >&2
  exit 1
fi

env_args=(-e "PORT=${PORT:-5000}")
if [ "${AWS:-0}" = 1 ]; then
  echo "runall.sh: real AWS SQS, region ${AWS_REGION:-us-east-1}, with your credentials"
  unset SQS_ENDPOINT_URL
  tmux new-session -d -x 180 -y 30 -s "$SESSION" -n sqs "echo 'real AWS: no local endpoint'; sleep infinity"
else
  export LOCAL_SQS_PORT="${LOCAL_SQS_PORT:-4566}"
  export SQS_ENDPOINT_URL="http://127.0.0.1:$LOCAL_SQS_PORT"
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_REGION="${AWS_REGION:-us-east-1}"
  unset AWS_PROFILE AWS_SESSION_TOKEN
  env_args+=(-e "SQS_ENDPOINT_URL=$SQS_ENDPOINT_URL" -e "AWS_ACCESS_KEY_ID=local"
             -e "AWS_SECRET_ACCESS_KEY=local" -e "AWS_REGION=$AWS_REGION"
             -e "LOCAL_SQS_PORT=$LOCAL_SQS_PORT" -e "SQS_LOCAL=${SQS_LOCAL:-fauxqs}")
  tmux new-session -d -x 180 -y 30 -s "$SESSION" -n sqs "${env_args[@]}" local/sqs/serve.sh
  tmux set-option -w -t "$SESSION:sqs" remain-on-exit on >/dev/null
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$LOCAL_SQS_PORT") 2>/dev/null && break
    sleep 0.1
  done
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$LOCAL_SQS_PORT") 2>/dev/null; then
    echo "runall.sh: the local SQS endpoint did not start; its window says why:" >&2
    tmux capture-pane -p -t "$SESSION:sqs" >&2
    tmux kill-session -t "$SESSION"
    exit 1
  fi
fi
if ! "$PY" sqs_setup.py; then
  tmux kill-session -t "$SESSION"
  exit 1
fi

tmux new-window -t "$SESSION" -n run "${env_args[@]}" "$PY server.py"
tmux set-option -w -t "$SESSION:run" remain-on-exit on >/dev/null  # keep each summary on screen
tmux split-window -h -t "$SESSION:run" "${env_args[@]}" "$PY worker.py --stats-interval 1"
client_key=""
[ -n "${API_KEYS:-}" ] && client_key="--api-key ${API_KEYS%%,*}"  # the writer's first key
tmux split-window -h -t "$SESSION:run" "${env_args[@]}" \
  "$PY client.py --url http://127.0.0.1:${PORT:-5000} --rate ${RUN_RATE:-100} --duration ${RUN_DURATION:-3600} $client_key"
tmux select-layout -t "$SESSION:run" even-horizontal >/dev/null
tmux select-pane -t "$SESSION:run.0" -T writer
tmux select-pane -t "$SESSION:run.1" -T worker
tmux select-pane -t "$SESSION:run.2" -T client
tmux set-option -w -t "$SESSION:run" pane-border-status top >/dev/null

console_port="${CONSOLE_PORT:-5050}"
metrics_port="${METRICS_PORT:-9102}"
[ "$metrics_port" = 0 ] && metrics_port=9102
tmux new-window -d -t "$SESSION" -n console "${env_args[@]}" -e "CONSOLE_PORT=$console_port" \
  -e "CONSOLE_KEYS=${CONSOLE_KEYS:-}" \
  -e "CONSOLE_SCRAPE=http://127.0.0.1:${PORT:-5000}/metrics,http://127.0.0.1:$metrics_port/metrics" \
  "$PY -m sqs_message_service.console"
tmux set-option -w -t "$SESSION:console" remain-on-exit on >/dev/null

echo "runall.sh: running in tmux session '$SESSION' (writer | worker | client); stop with ./runall.sh stop"
actions="read-only: set CONSOLE_KEYS for redrive and delete"
[ -n "${CONSOLE_KEYS:-}" ] && actions="redrive and delete with one of CONSOLE_KEYS"
echo "runall.sh: the console is at http://127.0.0.1:$console_port/ ($actions)"
if [ "$detached" = 0 ]; then
  exec tmux attach -t "$SESSION:run"
fi
