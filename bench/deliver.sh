#!/bin/sh
# End-to-end delivery: Postfix's smtp-source submits 4 KiB messages to a relay,
# which queues them durably and delivers them over STARTTLS to a sink MX
# (bench/tls_sink). Measured in the same run, one after the other, on the
# same sink: stsrelay, and Postfix 3.7 as a relay (`smtp_tls_security_level =
# may`, its TLS connection reuse and session cache on).
#
#   bench/deliver.sh [BUILD_DIR] [MESSAGES] [SESSIONS] [RUNS]
#
# Defaults: build-bench, 2000 messages, 4 sessions, 3 runs per relay. Prints
# per relay the median of the runs: delivered messages/s (from the first
# submission until the sink has received all of them), CPU seconds per message
# of the relay's processes, its peak memory, and the sink's connections and
# TLS handshakes per message; then the ratios stsrelay / Postfix. A second
# scenario, stsrelay alone (absolute figures): the recipient domain publishes
# an MTA-STS `enforce` policy (served by nginx), so every message waits for a
# validated certificate; each run starts with an empty policy cache.
#
# The one difference between the two set-ups is in Postfix's favour: stsrelay
# looks up the MX (c-ares, against unbound) and the domain's MTA-STS TXT
# record (there is none: no policy, so opportunistic STARTTLS), while Postfix
# gets `relayhost = [127.0.0.25]:PORT` and does no DNS at all.
#
# Installs what it needs with apt-get (as root or through sudo), builds
# stsrelay and tls_sink (RelWithDebInfo) in BUILD_DIR, binds only to 127.0.0.x
# on free ports, keeps every file in a temporary directory, and stops every
# process it started.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build-bench}
messages=${2:-2000}
sessions=${3:-4}
runs=${4:-3}

relay_address=127.0.0.1
# Postfix binds only addresses an interface has (inet_interfaces): lo has 127.0.0.1.
postfix_address=127.0.0.1
mx_address=127.0.0.25
dns_address=127.0.0.53
policy_address=127.0.0.44
domain=bench.test             # no MTA-STS policy
enforcing_domain=sts.bench.test  # an enforce policy naming mx.bench.test

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
  missing=""
  for package in "$@"; do
    dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q 'ok installed' ||
      missing="$missing $package"
  done
  [ -n "$missing" ] || return 0
  # Without an answer, Postfix's package would set up and start a system
  # instance on port 25; the benchmark runs private instances only.
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  # shellcheck disable=SC2086  # one word per package
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

install_packages build-essential cmake pkg-config libasio-dev libssl-dev libc-ares-dev \
  libspdlog-dev libfmt-dev libsqlite3-dev libtomlplusplus-dev nlohmann-json3-dev libcli11-dev \
  libexpected-dev ca-certificates postfix unbound nginx-light openssl python3 procps bsdutils

cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTSRELAY_TESTS=OFF >/dev/null
cmake --build "$build" --target stsrelay tls_sink -j 2 >/dev/null
relay=$(cd "$build" && pwd)/relay/stsrelay
sink=$(cd "$build" && pwd)/bench/tls_sink

work=$(mktemp -d)
chmod 711 "$work"  # Postfix's daemons, as user postfix, reach their queue inside
pids=""
postfix_dirs=""
cleanup() {
  for config in $postfix_dirs; do
    postfix -c "$config" stop >/dev/null 2>&1 || true
  done
  for pid in $pids; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $pids; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers -----------------------------------------------------------------

fail() {
  echo "deliver.sh: $*" >&2
  exit 1
}

# CPU seconds and memory of process trees, from /proc. A tree's CPU counts its
# live processes and, through cutime/cstime, those already reaped (Postfix's
# master reaps its daemons), so CPU taken before and after a run gives the run.
cat >"$work/proctree.py" <<'PYTHON'
import os, sys, time

def processes():
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[1] is ppid; utime, stime, cutime, cstime are fields[11:15]
            table[int(name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    return table

def tree(root, table):
    members, grew = {root}, True
    while grew:
        grew = False
        for pid, (ppid, _) in table.items():
            if ppid in members and pid not in members:
                members.add(pid)
                grew = True
    return [pid for pid in members if pid in table]

def memory_kib(pid):
    values = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values.get("Rss", 0), values.get("Pss", 0)

command, root = sys.argv[1], int(sys.argv[2])
if command == "cpu":
    table = processes()
    ticks = sum(table[pid][1] for pid in tree(root, table))
    print("%.2f" % (ticks / os.sysconf("SC_CLK_TCK")))
elif command == "sample":  # peak sums of RSS and PSS (KiB) until STOPFILE appears
    stop_file, out_file = sys.argv[3], sys.argv[4]
    peak_rss = peak_pss = 0
    while not os.path.exists(stop_file):
        sums = [memory_kib(pid) for pid in tree(root, processes())]
        peak_rss = max(peak_rss, sum(rss for rss, _ in sums))
        peak_pss = max(peak_pss, sum(pss for _, pss in sums))
        time.sleep(0.2)
    with open(out_file, "w") as f:
        f.write("%d %d\n" % (peak_rss, peak_pss))
PYTHON
proctree() { /usr/bin/python3 -B "$work/proctree.py" "$@"; }

free_port() {  # ADDRESS -> a port free there for TCP and UDP
  /usr/bin/python3 -c '
import socket, sys
for _ in range(50):
    t = socket.socket(); t.bind((sys.argv[1], 0)); port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind((sys.argv[1], port))
    except OSError:
        continue
    print(port); break' "$1"
}

wait_for_port() {  # ADDRESS PORT NAME
  /usr/bin/python3 -c '
import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)' "$1" "$2" || fail "$3 did not start listening on $1:$2"
}

calc() { awk "BEGIN { printf \"$1\n\", $2 }"; }

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

sink_counts() {  # -> "MESSAGES CONNECTIONS TLS_HANDSHAKES LAST_MESSAGE_TIME"
  cat "$work/sink.counts"
}

# --- the destination: test CA, DNS, sink MX -------------------------------------

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=Bench Test CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
issue_certificate() {  # NAME HOST_NAME -> NAME.pem, NAME.key
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$work/$1.key" -out "$work/$1.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\n' "$2" >"$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/$1.ext" -out "$work/$1.pem" 2>/dev/null
}
issue_certificate mx "mx.$domain"
issue_certificate policy "mta-sts.$enforcing_domain"

dns_port=$(free_port $dns_address)
cat >"$work/unbound.conf" <<CONF
server:
  interface: $dns_address
  port: $dns_port
  do-ip6: no
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: "$work/unbound.pid"
  use-syslog: no
  logfile: ""
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  local-zone: "test." static
  local-data: "$domain. 3600 IN MX 10 mx.$domain."
  local-data: "mx.$domain. 3600 IN A $mx_address"
  local-data: "$enforcing_domain. 3600 IN MX 10 mx.$domain."
  local-data: '_mta-sts.$enforcing_domain. 3600 IN TXT "v=STSv1; id=1"'
  local-data: "mta-sts.$enforcing_domain. 3600 IN A $policy_address"
remote-control:
  control-enable: no
CONF
unbound -d -c "$work/unbound.conf" 2>"$work/unbound.log" &
pids="$pids $!"

policy_port=$(free_port $policy_address)
mkdir -p "$work/www/.well-known" "$work/nginx-temp"
printf 'version: STSv1\r\nmode: enforce\r\nmx: mx.%s\r\nmax_age: 86400\r\n' "$domain" \
  >"$work/www/.well-known/mta-sts.txt"
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
user root;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $work/nginx-temp;
  proxy_temp_path $work/nginx-temp;
  fastcgi_temp_path $work/nginx-temp;
  uwsgi_temp_path $work/nginx-temp;
  scgi_temp_path $work/nginx-temp;
  types { text/plain txt; }
  server {
    listen $policy_address:$policy_port ssl;
    server_name mta-sts.$enforcing_domain;
    ssl_certificate $work/policy.pem;
    ssl_certificate_key $work/policy.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $work/www;
  }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" -e "$work/nginx-error.log" -g 'daemon off;' &
pids="$pids $!"
wait_for_port $policy_address "$policy_port" nginx

mx_port=$(free_port $mx_address)
"$sink" --listen "$mx_address:$mx_port" --cert "$work/mx.pem" --key "$work/mx.key" \
  --hostname "mx.$domain" --count-file "$work/sink.counts" 2>"$work/sink.log" &
sink_pid=$!
pids="$pids $sink_pid"
wait_for_port $mx_address "$mx_port" tls_sink

# Waits until the sink has counted TARGET messages; prints the time the last
# one arrived. Not a timing assertion: the bound only keeps a broken run from
# hanging for ever.
wait_for_sink() {  # TARGET NAME
  polls=0
  while :; do
    kill -USR1 "$sink_pid"
    sleep 0.1
    read -r received _ _ last <"$work/sink.counts"
    [ "$received" -lt "$1" ] || break
    polls=$((polls + 1))
    [ "$polls" -lt 6000 ] || fail "$2: the sink got $received of $1 messages in 10 minutes"
  done
  echo "$last"
}

# --- the relays ----------------------------------------------------------------

relay_port=$(free_port $relay_address)
start_stsrelay() {  # DIR -> sets relay_pid
  mkdir -p "$1"
  cat >"$1/relay.toml" <<TOML
hostname = "relay.bench.test"
[listen]
addresses = ["$relay_address:$relay_port"]
[queue]
directory = "$1/spool"
[delivery]
port = $mx_port
ca_file = "$work/ca.pem"
[dns]
servers = ["$dns_address:$dns_port"]
[sts]
cache_file = "$1/sts-cache"
policy_port = $policy_port
[log]
level = "info"
TOML
  "$relay" run --config "$1/relay.toml" 2>"$1/relay.log" &
  relay_pid=$!
  pids="$pids $relay_pid"
  wait_for_port $relay_address "$relay_port" stsrelay
}
stsrelay_queue_empty() {  # DIR
  [ "$("$relay" queue list --json --config "$1/relay.toml")" = "[]" ]
}
stop_stsrelay() {  # DIR
  kill -TERM "$relay_pid"
  wait "$relay_pid" || fail "stsrelay exited with status $?; see $1/relay.log"
}

postfix_port=$(free_port $postfix_address)
start_postfix() {  # DIR -> sets relay_pid (the master)
  mkdir -p "$1/conf" "$1/spool" "$1/data"
  chown postfix "$1/data"
  cat >"$1/conf/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $1/spool
data_directory = $1/data
maillog_file = $1/maillog
maillog_file_prefixes = $1
myhostname = postfix.bench.test
mydestination =
local_transport = error:no local delivery
alias_maps =
alias_database =
inet_interfaces = $postfix_address
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [$mx_address]:$mx_port
smtp_tls_security_level = may
smtp_tls_CAfile = $work/ca.pem
smtp_tls_connection_reuse = yes
smtp_tls_session_cache_database = btree:\${data_directory}/smtp_scache
CONF
  # Debian's master.cf, every service outside a chroot, listening on our port.
  grep -v '^#' /usr/share/postfix/master.cf.dist |
    awk -v listen="$postfix_address:$postfix_port" '
      /^smtp[ \t]+inet/ { $1 = listen }
      /^[a-z]/ && NF >= 8 { $5 = "n" }
      { print }' >"$1/conf/master.cf"
  printf 'tlsproxy unix - - n - 0 tlsproxy\n' >>"$1/conf/master.cf"
  postfix_dirs="$postfix_dirs $1/conf"
  # Postfix says why it fails only to a terminal.
  script -qec "postfix -c $1/conf check && postfix -c $1/conf start" /dev/null \
    >"$1/start.log" 2>&1 || fail "postfix did not start: $(cat "$1/start.log")"
  relay_pid=$(tr -d ' ' <"$1/spool/pid/master.pid")
  wait_for_port $postfix_address "$postfix_port" postfix
}
postfix_queue_empty() {  # DIR
  [ -z "$(find "$1/spool/incoming" "$1/spool/active" "$1/spool/deferred" \
    "$1/spool/maildrop" -type f 2>/dev/null | head -1)" ]
}
stop_postfix() {  # DIR
  postfix -c "$1/conf" stop >/dev/null 2>&1
  while kill -0 "$relay_pid" 2>/dev/null; do sleep 0.1; done
}

# One run of one relay: prints "MSGS_PER_S ACCEPTED_PER_S CPU_MS_PER_MSG
# PEAK_RSS_MIB PEAK_PSS_MIB CONNECTIONS_PER_1000 HANDSHAKES_PER_1000".
measure() {  # NAME RUN RECIPIENT_DOMAIN
  dir="$work/$1-$2"
  "start_$1" "$dir"
  listen=$relay_address:$relay_port
  [ "$1" = stsrelay ] || listen=$postfix_address:$postfix_port
  read -r base_messages base_connections base_handshakes _ <<EOF
$(sink_counts)
EOF
  cpu_before=$(proctree cpu "$relay_pid")
  proctree sample "$relay_pid" "$dir/sampling.stop" "$dir/memory" &
  sampler=$!
  pids="$pids $sampler"
  start=$(date +%s.%N)
  smtp-source -d -s "$sessions" -m "$messages" -l 4096 -f "load@client.test" -t "sink@$3" \
    "$listen" >&2 || fail "$1: smtp-source failed"
  accepted=$(date +%s.%N)
  last=$(wait_for_sink $((base_messages + messages)) "$1")
  while ! "$1_queue_empty" "$dir"; do sleep 0.1; done
  cpu_after=$(proctree cpu "$relay_pid")
  touch "$dir/sampling.stop"
  wait "$sampler"
  read -r rss pss <"$dir/memory"
  if [ "$1" = stsrelay ]; then  # one process: the kernel's exact peak
    rss=$(awk '/^VmHWM:/ { print $2 }' "/proc/$relay_pid/status")
  fi
  read -r _ connections handshakes _ <<EOF
$(sink_counts)
EOF
  "stop_$1" "$dir"
  calc "%.1f %.1f %.3f %.1f %.1f %.0f %.0f" "$messages / ($last - $start), \
    $messages / ($accepted - $start), 1000 * ($cpu_after - $cpu_before) / $messages, \
    $rss / 1024, $pss / 1024, 1000 * ($connections - $base_connections) / $messages, \
    1000 * ($handshakes - $base_handshakes) / $messages"
}

# --- the runs ------------------------------------------------------------------

echo "4 KiB messages, $messages per run, $sessions sessions (smtp-source -d), $runs runs per relay"

# The sink alone, in plaintext (smtp-source has no TLS): its ceiling.
read -r base_messages _ <<EOF
$(sink_counts)
EOF
start=$(date +%s.%N)
smtp-source -d -s "$sessions" -m "$messages" -l 4096 -f load@client.test -t "sink@$domain" \
  "$mx_address:$mx_port"
last=$(wait_for_sink $((base_messages + messages)) sink)
echo "sink alone (plaintext): $(calc %.0f "$messages / ($last - $start)") msgs/s"

run=1
while [ "$run" -le "$runs" ]; do
  for name in stsrelay postfix; do  # alternated, so both see the same machine
    measure "$name" "$run" "$domain" >>"$work/$name.results"
    echo "run $run $name: $(tail -1 "$work/$name.results")" >&2
  done
  run=$((run + 1))
done

median_of() {  # NAME FIELD -> the median of that field over the runs
  cut -d' ' -f"$2" "$work/$1.results" | median
}

echo
printf '%-34s %12s %12s %8s\n' "median of $runs runs" stsrelay postfix ratio
row() {  # LABEL FIELD FORMAT
  ours=$(median_of stsrelay "$2")
  theirs=$(median_of postfix "$2")
  printf "%-34s %12$3 %12$3 %8s\n" "$1" "$ours" "$theirs" \
    "$(calc %.2f "$ours / ($theirs == 0 ? 1 : $theirs)")"
}
row "delivered msgs/s (end to end)" 1 .0f
row "accepted msgs/s (submission)" 2 .0f
row "relay CPU ms per message" 3 .3f
row "relay peak RSS MiB (1)" 4 .1f
row "relay peak PSS MiB (2)" 5 .1f
row "sink connections per 1000 msgs" 6 .0f
row "sink TLS handshakes per 1000 msgs" 7 .0f
echo "(1) stsrelay: VmHWM; Postfix: the largest sum over its processes, sampled every 0.2 s"
echo "(2) sampled the same way for both; shared library pages counted once"
echo "stsrelay resolves MX + _mta-sts TXT (no policy: opportunistic TLS); Postfix uses"
echo "relayhost = [$mx_address]:PORT (no DNS), smtp_tls_connection_reuse, session cache."

# The same load to a domain with an enforce policy, stsrelay alone.
run=1
while [ "$run" -le "$runs" ]; do
  measure stsrelay "enforce-$run" "$enforcing_domain" >>"$work/enforce.results"
  echo "run $run stsrelay, MTA-STS enforce: $(tail -1 "$work/enforce.results")" >&2
  run=$((run + 1))
done
echo
echo "stsrelay to $enforcing_domain (MTA-STS enforce, policy fetched once per run), median:"
printf '  %.0f msgs/s delivered, %.0f msgs/s accepted, %.3f ms CPU per message, %.1f MiB peak RSS,\n' \
  "$(median_of enforce 1)" "$(median_of enforce 2)" "$(median_of enforce 3)" "$(median_of enforce 4)"
printf '  %.0f TLS handshakes per 1000 messages\n' "$(median_of enforce 7)"

# What the relay's own log says it did: every message sent, and under which policy.
sent_under() {  # MODE RUN_PREFIX
  # shellcheck disable=SC2086  # RUN_PREFIX is a pattern
  cat "$work"/stsrelay-$2*/relay.log | grep ' sent ' | grep "policy_mode=$1 " |
    grep -c 'verification=valid' || true
}
echo "stsrelay logged sent with a valid certificate: $(sent_under none '[0-9]') of" \
  "$((messages * runs)) with no policy, $(sent_under enforce enforce-) of $((messages * runs))" \
  "under enforce"
