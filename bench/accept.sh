#!/bin/sh
# How fast stsrelay accepts mail durably, next to Postfix's smtp-sink (which
# accepts and discards: the ceiling for the SMTP exchange itself), measured
# with Postfix's smtp-source in the same run on the same machine.
#
#   bench/accept.sh [BUILD_DIR] [MESSAGES]
#
# Prints messages/s for 1 and 50 concurrent sessions, the ratio to smtp-sink,
# and the relay's commits (from its `stopped` log event).
set -eu
build=${1:-build}
messages=${2:-20000}
relay=$(cd "$build" && pwd)/relay/stsrelay
command -v smtp-source >/dev/null || { echo "needs postfix (smtp-source, smtp-sink)" >&2; exit 2; }

work=$(mktemp -d)
pids=""
cleanup() { for pid in $pids; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT INT TERM

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rate() {  # sessions port -> messages/s
  start=$(date +%s.%N)
  smtp-source -s "$1" -m "$messages" -l 4096 -f bench@client.test -t sink@example.test "127.0.0.1:$2"
  end=$(date +%s.%N)
  echo "$messages / ($end - $start)" | bc -l | xargs printf '%.0f'
}

sink_port=$(free_port)
smtp-sink -u nobody -c "127.0.0.1:$sink_port" 1000 >/dev/null &
pids="$pids $!"

# A resolver that never answers keeps the delivery engine waiting on DNS, so
# the run measures accepting and queueing alone.
dns_port=$(free_port)
/usr/bin/python3 -c 'import socket,sys,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("127.0.0.1",int(sys.argv[1]))); time.sleep(86400)' "$dns_port" &
pids="$pids $!"

relay_port=$(free_port)
cat > "$work/relay.toml" <<TOML
hostname = "relay.bench"
[listen]
addresses = ["127.0.0.1:$relay_port"]
max_connections = 1000
[queue]
directory = "$work/spool"
[sts]
cache_file = "$work/sts-cache"
[dns]
servers = ["127.0.0.1:$dns_port"]
timeout = "1h"
[log]
level = "info"
format = "json"
TOML
"$relay" run --config "$work/relay.toml" 2>"$work/relay.log" &
relay_pid=$!
pids="$pids $relay_pid"
sleep 1

echo "4 KiB messages, $messages per run"
for sessions in 1 50; do
  sink=$(rate "$sessions" "$sink_port")
  relay_rate=$(rate "$sessions" "$relay_port")
  ratio=$(echo "$relay_rate / $sink" | bc -l | xargs printf '%.2f')
  echo "sessions=$sessions stsrelay=${relay_rate}/s smtp-sink=${sink}/s ratio=$ratio"
done
kill -TERM "$relay_pid"
wait "$relay_pid" || true
grep -o '"event":"stopped".*' "$work/relay.log" || tail -3 "$work/relay.log"
