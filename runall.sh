#!/usr/bin/env bash
# The whole system in one tmux window: writer logs | worker stats | client stats.
#
#   ./runall.sh              start, and attach when run from a terminal
#   ./runall.sh --detached   start and stay detached (tmux attach -t sqs-message-service)
#   ./runall.sh stop         stop everything it started, gracefully, show the summaries, end the session
#   ./runall.sh --help       this text; starts nothing
#
# It needs the virtualenv (make run creates it, then runs this). Before it starts anything it
# checks that its ports are free; it reports running only once the writer, the worker and the
# console answer, and otherwise exits 1 naming the part that did not start.
#
# Locally (the default) a local SQS endpoint runs in a second tmux window ("sqs") on
# 127.0.0.1:$LOCAL_SQS_PORT with dummy credentials, and real AWS is never contacted.
# AWS=1 uses real SQS with your own credentials and region instead.
# The operator console runs in a third window ("console"), at http://127.0.0.1:$CONSOLE_PORT/.
# Knobs: SQS_LOCAL=fauxqs|moto, LOCAL_SQS_PORT (4566), PORT (5000), CONSOLE_PORT (5050),
# CONSOLE_KEYS (unset: the console is read-only), RUN_RATE (client requests per second, 100),
# RUN_DURATION (client seconds, 3600), METRICS_PORT (the worker's, 9102), RUN_START_TIMEOUT
# (seconds each part has to answer, 60), PY (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")"
SESSION="${RUNALL_SESSION:-sqs-message-service}"
PY="${PY:-.venv/bin/python}"

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

stop() {
  if ! tmux has-session -t "$SESSION" 2>/dev/null; then
    echo "runall.sh: nothing running (no tmux session '$SESSION')"
    return 0
  fi
  local pids stderr_dir
  pids=$(tmux list-panes -s -t "$SESSION" -F '#{pane_pid}')
  pids="$pids $(for pid in $pids; do pgrep -P "$pid" || true; done)"  # the parts under local/pane.sh
  stderr_dir=$(tmux show-environment -t "$SESSION" RUNALL_STDERR_DIR 2>/dev/null | sed -n 's/^RUNALL_STDERR_DIR=//p')
  # Ctrl-C to the load first, so that its last requests are answered by a writer still serving
  # (at once, some met a closing writer: connection errors, and the client's exit 1); then in
  # every other part's pane: the worker finishes what is in flight, the writer drains; the local
  # SQS endpoint last, so that what they finish reaches it.
  local client
  client=$(tmux list-panes -t "$SESSION:run" -F '#{pane_title} #{pane_id}' 2>/dev/null | sed -n 's/^client //p')
  if [ -n "$client" ]; then
    tmux send-keys -t "$client" C-c
    for _ in $(seq 1 70); do  # the client waits up to 5 s for its answers
      [ "$(tmux display-message -p -t "$client" '#{pane_dead}')" = 1 ] && break
      sleep 0.1
    done
  fi
  for pane in $(tmux list-panes -s -t "$SESSION" -F '#{window_name} #{pane_id}' | grep -v '^sqs ' | cut -d' ' -f2); do
    [ "$pane" = "$client" ] || tmux send-keys -t "$pane" C-c
  done
  for _ in $(seq 1 150); do
    tmux list-panes -s -t "$SESSION" -F '#{window_name} #{pane_dead}' | grep -v '^sqs ' | grep -q ' 0$' || break
    sleep 0.1
  done
  tmux send-keys -t "$SESSION:sqs" C-c 2>/dev/null || true
  # What each part said last (the worker's and the client's summaries), before the session goes.
  for pane in $(tmux list-panes -t "$SESSION:run" -F '#{pane_id}' 2>/dev/null); do
    echo "── $(tmux display-message -p -t "$pane" '#{pane_title}') ──"
    tmux capture-pane -p -S -100 -t "$pane" | grep -v '^[[:space:]]*$' | tail -n 24
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
  [ -n "$stderr_dir" ] && rm -rf "$stderr_dir"
  echo "runall.sh: stopped"
}

detached=0
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  stop) command -v tmux >/dev/null && stop; exit 0 ;;
  --detached) detached=1 ;;
  "") ;;
  *) echo "runall.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
esac
[ -t 1 ] || detached=1

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "runall.sh: no virtualenv ($PY not found): run 'make run', which creates it and then runs" >&2
  echo "this, or 'make venv local-sqs' first" >&2
  exit 1
fi

if ! command -v tmux >/dev/null; then
  echo "runall.sh needs tmux: sudo apt-get install tmux (Debian, Ubuntu) or brew install tmux (macOS)" >&2
  exit 1
fi
if tmux has-session -t "$SESSION" 2>/dev/null; then
  echo "runall.sh: already running; attach with 'tmux attach -t $SESSION', or './runall.sh stop'" >&2
  exit 1
fi

# Each port, before anything starts: free, or a message naming it, what holds it, and its knob.
holder() {
  local found=""
  if command -v ss >/dev/null 2>&1; then
    found=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n 1 || true)
  fi
  echo "${found:-another program}"
}
taken=0
check_port() {  # name, port, the variable that moves it
  if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
    echo "runall.sh: port $2 ($1) is taken by $(holder "$2"); stop it, or set $3 to another port" >&2
    taken=1
  fi
}
console_port="${CONSOLE_PORT:-5050}"
metrics_port="${METRICS_PORT:-9102}"
[ "$metrics_port" = 0 ] && metrics_port=9102
[ "${AWS:-0}" = 1 ] || check_port "the local SQS endpoint" "${LOCAL_SQS_PORT:-4566}" LOCAL_SQS_PORT
check_port "the writer" "${PORT:-5000}" PORT
check_port "the worker's metrics" "$metrics_port" METRICS_PORT
check_port "the console" "$console_port" CONSOLE_PORT
[ "$taken" = 0 ] || exit 1

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

# What each part writes on stderr is also kept (its first 64 KiB) for the start-up checks below.
stderr_dir=$(mktemp -d "${TMPDIR:-/tmp}/runall.XXXXXX")
tmux set-environment -t "$SESSION" RUNALL_STDERR_DIR "$stderr_dir"
tmux new-window -t "$SESSION" -n run "${env_args[@]}" "local/pane.sh $(printf %q "$stderr_dir/writer") $PY server.py"
tmux set-option -w -t "$SESSION:run" remain-on-exit on >/dev/null  # keep each summary on screen
tmux split-window -h -t "$SESSION:run" "${env_args[@]}" -e "METRICS_PORT=$metrics_port" \
  "local/pane.sh $(printf %q "$stderr_dir/worker") $PY worker.py --stats-interval 1"
client_key=""
[ -n "${API_KEYS:-}" ] && client_key="--api-key ${API_KEYS%%,*}"  # the writer's first key
tmux split-window -h -t "$SESSION:run" "${env_args[@]}" \
  "local/pane.sh $(printf %q "$stderr_dir/client") $PY client.py --url http://127.0.0.1:${PORT:-5000} --rate ${RUN_RATE:-100} --duration ${RUN_DURATION:-3600} $client_key"
tmux select-layout -t "$SESSION:run" even-horizontal >/dev/null
tmux select-pane -t "$SESSION:run.0" -T writer
tmux select-pane -t "$SESSION:run.1" -T worker
tmux select-pane -t "$SESSION:run.2" -T client
tmux set-option -w -t "$SESSION:run" pane-border-status top >/dev/null

tmux new-window -d -t "$SESSION" -n console "${env_args[@]}" -e "CONSOLE_PORT=$console_port" \
  -e "CONSOLE_KEYS=${CONSOLE_KEYS:-}" \
  -e "CONSOLE_SCRAPE=http://127.0.0.1:${PORT:-5000}/metrics,http://127.0.0.1:$metrics_port/metrics" \
  "local/pane.sh $(printf %q "$stderr_dir/console") $PY -m sqs_message_service.console"
tmux set-option -w -t "$SESSION:console" remain-on-exit on >/dev/null

# Running is said only once each part answers; one that does not (its pane dead, or silent for
# RUN_START_TIMEOUT seconds) is named, with what its pane shows, and everything is stopped.
answers() {
  "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
}
wait_for() {  # name, pane, URL, stderr copy
  local deadline=$((SECONDS + ${RUN_START_TIMEOUT:-60}))
  until answers "$3"; do
    if [ "$(tmux display-message -p -t "$2" '#{pane_dead}' 2>/dev/null || echo 1)" = 1 ] || [ "$SECONDS" -ge "$deadline" ]; then
      echo "runall.sh: $1 did not start ($3 does not answer); its pane says:" >&2
      tmux capture-pane -p -S -100 -t "$2" 2>/dev/null | grep -v '^[[:space:]]*$' | tail -n 15 >&2
      if [ -s "$4" ]; then
        echo "runall.sh: and its stderr ended with:" >&2
        tail -n 15 "$4" >&2
      fi
      tmux kill-session -t "$SESSION"
      rm -rf "$stderr_dir"
      exit 1
    fi
    sleep 0.2
  done
}
wait_for "the writer" "$SESSION:run.0" "http://127.0.0.1:${PORT:-5000}/api/health" "$stderr_dir/writer"
wait_for "the worker" "$SESSION:run.1" "http://127.0.0.1:$metrics_port/metrics" "$stderr_dir/worker"
wait_for "the console" "$SESSION:console" "http://127.0.0.1:$console_port/api/health" "$stderr_dir/console"

echo "runall.sh: running in tmux session '$SESSION' (writer | worker | client); stop with ./runall.sh stop"
actions="read-only: set CONSOLE_KEYS for redrive and delete"
[ -n "${CONSOLE_KEYS:-}" ] && actions="redrive and delete with one of CONSOLE_KEYS"
echo "runall.sh: the console is at http://127.0.0.1:$console_port/ ($actions)"
if [ "$detached" = 0 ]; then
  exec tmux attach -t "$SESSION:run"
fi
