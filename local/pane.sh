#!/usr/bin/env bash
# Runs one part in a runall.sh pane: usage: local/pane.sh STDERR_COPY COMMAND...
#
# The part's stderr goes to the pane and its first 64 KiB also to STDERR_COPY, so runall.sh can
# say why a part did not start even when the pane does not show it: tmux drops what a pane's
# process wrote if the process ends before tmux has read it. This script therefore outlives the
# part: it waits for the copy to be complete and gives tmux a moment to read the last lines
# (the worker's and the client's summaries among them) before the pane is marked dead.
# Plain tee and head (GNU's or BSD's): the copy reads on after its 64 KiB, so tee never meets a
# closed pipe, and none of them heeds Ctrl-C, so the part's last words still reach the pane.
set -uo pipefail
copy="$1"
shift
trap : INT  # Ctrl-C is for the part, which stops gracefully; this script waits for it
exec 3> >(trap '' INT; tee /dev/stderr | { head -c 65536 >"$copy"; cat >/dev/null; })
copier=${!:-}
"$@" 2>&3 3>&-
status=$?
exec 3>&-
if [ -n "$copier" ]; then
  wait "$copier" 2>/dev/null || true
fi
sleep 0.2
exit "$status"
