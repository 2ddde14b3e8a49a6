#!/usr/bin/env bash
# Runs one part in a runall.sh pane: usage: local/pane.sh STDERR_COPY COMMAND...
#
# The part's stderr goes to the pane and its first 64 KiB also to STDERR_COPY, so runall.sh can
# say why a part did not start even when the pane does not show it: tmux drops what a pane's
# process wrote if the process ends before tmux has read it. This script therefore outlives the
# part: it waits for the copy to be complete and gives tmux a moment to read the last lines
# (the worker's and the client's summaries among them) before the pane is marked dead.
set -uo pipefail
copy="$1"
shift
trap : INT  # Ctrl-C is for the part, which stops gracefully; this script waits for it
exec 3> >(tee -i -p /dev/stderr | head -c 65536 >"$copy")
copier=$!
"$@" 2>&3 3>&-
status=$?
exec 3>&-
wait "$copier"
sleep 0.2
exit "$status"
