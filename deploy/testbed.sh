#!/usr/bin/env bash
# deploy/testbed.sh — the real-service test bed for sluice.
#
# Installs (if missing) and runs, on loopback only, one private instance each of
#   redis      Debian's redis-server            127.0.0.1:36379
#   clickhouse Debian's clickhouse-server       127.0.0.1:38123 (HTTP), 127.0.0.1:39000 (native)
#   kafka      Apache Kafka (KRaft, combined)   127.0.0.1:39092 (PLAINTEXT), 127.0.0.1:39093 (controller)
# all of them with config, data and logs under the state dir
# ($SLUICE_TESTBED_DIR, default <repo>/.testbed).
#
# Usage:
#   deploy/testbed.sh start            start what is not running, write $STATE/env
#   deploy/testbed.sh stop             stop what this script started
#   deploy/testbed.sh status           show what is running
#   deploy/testbed.sh run -- CMD ...   start, run CMD with the env, stop; exit with CMD's code
#
# A server that cannot be had (install fails, start times out) is reported
# with a loud banner on stderr, left out of $STATE/env and described in
# $STATE/unavailable; the others still come up.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${SLUICE_TESTBED_DIR:-$REPO/.testbed}
KAFKA_POM=$REPO/deploy/testbed/kafka/pom.xml

HOST=127.0.0.1
REDIS_PORT=36379
CH_HTTP_PORT=38123
CH_TCP_PORT=39000
KAFKA_PORT=39092
KAFKA_CONTROLLER_PORT=39093
KAFKA_HEAP=${SLUICE_TESTBED_KAFKA_HEAP:--Xms256m -Xmx768m}

SERVERS=(redis clickhouse kafka)
declare -A PORT=([redis]=$REDIS_PORT [clickhouse]=$CH_TCP_PORT [kafka]=$KAFKA_PORT)
# Pattern that must appear in /proc/PID/cmdline for a pid file to count as ours.
declare -A MATCH=([redis]=redis-server [clickhouse]=clickhouse-server [kafka]=kafka.Kafka)
declare -A START_TIMEOUT=([redis]=30 [clickhouse]=90 [kafka]=150)
declare -A STOP_TIMEOUT=([redis]=15 [clickhouse]=30 [kafka]=45)
# Every port a server listens on: stop waits until all are closed again.
declare -A ALL_PORTS=([redis]=$REDIS_PORT [clickhouse]="$CH_HTTP_PORT $CH_TCP_PORT" [kafka]="$KAFKA_PORT $KAFKA_CONTROLLER_PORT")
declare -A LOG=(
	[redis]=$STATE/redis/redis.log
	[clickhouse]=$STATE/clickhouse/log/clickhouse-server.log
	[kafka]=$STATE/kafka/logs/server.log
)
declare -A AVAILABLE=()

REASON=""
APT_UPDATED=0
POLICY_RC_D=/usr/sbin/policy-rc.d
POLICY_RC_D_OURS=0
STOP_ON_EXIT=0

# ---------------------------------------------------------------- helpers

say() { printf '[testbed] %s\n' "$*" >&2; }

banner() { # name reason
	local line='!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
	{
		printf '\n%s\n' "$line"
		printf '!!!!! TESTBED: %s UNAVAILABLE: %s !!!!!\n' "$1" "$2"
		printf '!!!!! tests that need %s will be skipped or fail; state: %s !!!!!\n' "$1" "$STATE"
		printf '%s\n\n' "$line"
	} >&2
}

unavailable() { # name reason
	banner "$1" "$2"
	printf '%s: %s\n' "$1" "$2" >>"$STATE/unavailable"
}

tail_log() { # name [file]
	local f=${2:-${LOG[$1]}}
	if [[ -s $f ]]; then
		say "last 40 lines of $f:"
		tail -n 40 "$f" | sed 's/^/    | /' >&2
	else
		say "($f is empty or missing)"
	fi
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

pid_of() { # name -> pid on stdout if the pid file names a live process of ours
	local f=$STATE/$1.pid pid
	[[ -s $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# Guards against pid reuse (and zombies, whose cmdline is empty). No
	# pipeline here: under pipefail, grep -q closing early can fail it.
	local cmdline
	cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmdline == *"${MATCH[$1]}"* ]] || return 1
	printf '%s\n' "$pid"
}

ours() { pid_of "$1" >/dev/null; }

launch() { # name logfile cmd... — start cmd detached, in its own session, record its pid
	local name=$1 out=$2 i
	shift 2
	rm -f "$STATE/$name.pid"
	# setsid forks when its caller leads a process group, so $! is not
	# always the server: the inner bash writes its own pid ($$), which the
	# server keeps when it is exec'd. The inner bash also closes every
	# inherited fd above 2 (our lock on fd 9, a caller's pipes) so a
	# long-lived server holds none of them.
	setsid bash -c 'printf "%s\n" "$$" >"$0"
		for fd in /proc/self/fd/*; do
			fd=${fd##*/}
			if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
		done
		exec "$@"' "$STATE/$name.pid" "$@" </dev/null >>"$out" 2>&1 &
	# Wait (max 5s) until the server has exec'd: before that its cmdline is
	# bash's, and pid_of would take it for a dead server.
	for ((i = 0; i < 100; i++)); do
		ours "$name" && return 0
		sleep 0.05
	done
}

rotate() { # file — keep one previous copy
	[[ -e $1 ]] && mv -f "$1" "$1.1"
	: >"$1"
}

# http_get PORT PATH -> response body on stdout (no curl needed)
http_get() {
	timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&3
		cat <&3' _ "$HOST" "$1" "$2" 2>/dev/null | tr -d '\r' | sed '1,/^$/d'
}

dpkg_installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == 'install ok installed' ]]; }

cleanup_policy_rc_d() {
	if ((POLICY_RC_D_OURS)) && grep -q 'sluice-testbed' "$POLICY_RC_D" 2>/dev/null; then
		rm -f "$POLICY_RC_D"
	fi
	POLICY_RC_D_OURS=0
}

apt_install() { # pkg... — install the missing ones; sets REASON on failure
	local missing=() p
	for p in "$@"; do dpkg_installed "$p" || missing+=("$p"); done
	((${#missing[@]})) || return 0
	if ! command -v apt-get >/dev/null; then
		REASON="packages missing (${missing[*]}) and no apt-get on this machine"
		return 1
	fi
	local sudo=()
	if ((EUID != 0)); then
		if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
			sudo=(sudo -n)
		else
			REASON="packages missing (${missing[*]}); not root and no passwordless sudo"
			return 1
		fi
	fi
	local aptlog=$STATE/apt.log
	say "apt: installing ${missing[*]} (log: $aptlog)"
	if ((APT_UPDATED == 0)); then
		if ! "${sudo[@]}" apt-get -q -o DPkg::Lock::Timeout=300 update >>"$aptlog" 2>&1; then
			tail_log apt "$aptlog"
			REASON="apt-get update failed (see $aptlog)"
			return 1
		fi
		APT_UPDATED=1
	fi
	# Keep the packages' own system services (redis on :6379 ...) from being
	# started by the maintainer scripts: we run private instances instead.
	if ((EUID == 0)) && [[ ! -e $POLICY_RC_D ]]; then
		printf '#!/bin/sh\n# sluice-testbed: temporary, removed after apt-get install\nexit 101\n' >"$POLICY_RC_D"
		chmod 755 "$POLICY_RC_D"
		POLICY_RC_D_OURS=1
	fi
	local rc=0
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o DPkg::Lock::Timeout=300 "${missing[@]}" >>"$aptlog" 2>&1 || rc=$?
	cleanup_policy_rc_d
	if ((rc != 0)); then
		tail_log apt "$aptlog"
		REASON="apt-get install ${missing[*]} failed (exit $rc, see $aptlog)"
		return 1
	fi
	return 0
}

wait_ready() { # name timeout-seconds — polls ready_<name>; sets REASON on failure
	local name=$1 timeout=$2 start=$SECONDS
	while ((SECONDS - start < timeout)); do
		if "ready_$name"; then return 0; fi
		if ! ours "$name"; then
			REASON="process exited during startup"
			return 1
		fi
		sleep 0.5
	done
	REASON="not ready after ${timeout}s"
	return 1
}

any_port_open() { # name
	local p
	for p in ${ALL_PORTS[$1]}; do
		port_open "$p" && return 0
	done
	return 1
}

stop_one() { # name
	local name=$1 pid t t0=$SECONDS killed=0
	if ! pid=$(pid_of "$name"); then
		rm -f "$STATE/$name.pid"
		return 0
	fi
	say "$name: stopping pid $pid"
	kill -TERM "$pid" 2>/dev/null || true
	t=$SECONDS
	# Done when the process is gone (or a zombie: pid_of fails) and its ports
	# are closed, so that a start right after a stop cannot collide with it.
	while ours "$name" || any_port_open "$name"; do
		if ((SECONDS - t >= ${STOP_TIMEOUT[$name]})); then
			if ((killed)); then
				say "$name: WARNING: ports ${ALL_PORTS[$name]} still open after SIGKILL"
				break
			fi
			say "$name: still running after ${STOP_TIMEOUT[$name]}s, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			killed=1
			t=$((SECONDS - ${STOP_TIMEOUT[$name]} + 5)) # 5s more for the kill
		fi
		sleep 0.2
	done
	rm -f "$STATE/$name.pid"
	say "$name: stopped ($((SECONDS - t0))s)"
}

# ---------------------------------------------------------------- redis

install_redis() { apt_install redis-server redis-tools; }

prepare_redis() { mkdir -p "$STATE/redis/data"; }

launch_redis() {
	rotate "${LOG[redis]}"
	launch redis "${LOG[redis]}" redis-server \
		--bind "$HOST" --port "$REDIS_PORT" --protected-mode yes \
		--dir "$STATE/redis/data" --save "" --appendonly no \
		--daemonize no --logfile "" --databases 16
}

ready_redis() {
	[[ $(timeout 3 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

# ---------------------------------------------------------------- clickhouse

install_clickhouse() { apt_install clickhouse-server clickhouse-client; }

prepare_clickhouse() {
	local d=$STATE/clickhouse
	mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas" "$d/log"
	# Runs as the invoking user (root included: 18.16 has no "don't run as
	# root" check; its data dir is owned by whoever runs it).
	cat >"$d/config.xml" <<EOF
<?xml version="1.0"?>
<!-- generated by deploy/testbed.sh; rewritten on every start -->
<yandex>
    <logger>
        <level>information</level>
        <log>$d/log/clickhouse-server.log</log>
        <errorlog>$d/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>$HOST</listen_host>
    <http_port>$CH_HTTP_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <max_connections>512</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$d/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
EOF
	cat >"$d/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- generated by deploy/testbed.sh; rewritten on every start -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

launch_clickhouse() {
	local d=$STATE/clickhouse
	rotate "$d/log/stdout.log"
	# The server resolves relative paths against its cwd; run it from its dir.
	(cd "$d" && launch clickhouse "$d/log/stdout.log" /usr/sbin/clickhouse-server --config-file="$d/config.xml")
}

ready_clickhouse() {
	port_open "$CH_HTTP_PORT" || return 1
	[[ $(http_get "$CH_HTTP_PORT" '/?query=SELECT%201') == 1 ]] || return 1
	[[ $(timeout 5 clickhouse-client --host "$HOST" --port "$CH_TCP_PORT" -q 'SELECT 1' 2>/dev/null) == 1 ]]
}

# ---------------------------------------------------------------- kafka

java_major() {
	java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.[0-9]*\)*.*".*/\1/p' | head -n1
}

install_kafka() {
	local libs=$STATE/kafka/libs stamp=$STATE/kafka/libs.pom.sha256 sum
	mkdir -p "$STATE/kafka"
	if ! command -v java >/dev/null; then
		apt_install openjdk-17-jre-headless || return 1
	fi
	local jm
	jm=$(java_major)
	if [[ -z $jm || $jm -lt 17 ]]; then
		REASON="Kafka 4 needs Java 17+, found '$(java -version 2>&1 | head -n1)'"
		return 1
	fi
	[[ -f $KAFKA_POM ]] || { REASON="missing $KAFKA_POM"; return 1; }
	sum=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
	if [[ -d $libs && -f $stamp && $(<"$stamp") == "$sum" ]]; then
		return 0
	fi
	if ! command -v mvn >/dev/null; then
		apt_install maven || return 1
	fi
	say "kafka: fetching broker jars from Maven Central (log: $STATE/kafka/mvn.log)"
	rm -rf "$libs" "$libs.new" "$stamp"
	if ! mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
		-DoutputDirectory="$libs.new" >"$STATE/kafka/mvn.log" 2>&1; then
		tail_log kafka "$STATE/kafka/mvn.log"
		rm -rf "$libs.new"
		REASON="mvn dependency:copy-dependencies failed (see $STATE/kafka/mvn.log)"
		return 1
	fi
	mv "$libs.new" "$libs"
	printf '%s\n' "$sum" >"$stamp"
}

kafka_java_args() { # [heap flags] -> KAFKA_JAVA array: java + JVM flags + classpath
	local d=$STATE/kafka heap=${1:-$KAFKA_HEAP}
	# shellcheck disable=SC2206 # heap is a list of JVM flags
	KAFKA_JAVA=(java $heap -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
		-Djava.awt.headless=true
		-Dlog4j2.configurationFile="$d/log4j2.properties"
		-Dkafka.logs.dir="$d/logs"
		-cp "$d/libs/*")
}

prepare_kafka() {
	local d=$STATE/kafka
	mkdir -p "$d/data" "$d/logs"
	cat >"$d/server.properties" <<EOF
# generated by deploy/testbed.sh; rewritten on every start
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$d/data

# single-node test broker
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.segment.bytes=104857600
EOF
	cat >"$d/log4j2.properties" <<EOF
# generated by deploy/testbed.sh
status = warn
# Let Kafka's own shutdown hook log to the end (log4j's hook would stop first).
shutdownHook = disable
appender.file.type = File
appender.file.name = file
appender.file.fileName = $d/logs/server.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
EOF
	if [[ ! -f $d/data/meta.properties ]]; then
		local cid out
		rm -rf "$d/data" && mkdir -p "$d/data"
		kafka_java_args "-Xmx256m"
		if ! out=$("${KAFKA_JAVA[@]}" kafka.tools.StorageTool random-uuid 2>&1); then
			printf '%s\n' "$out" >>"$d/logs/format.log"
			tail_log kafka "$d/logs/format.log"
			REASON="StorageTool random-uuid failed (see $d/logs/format.log)"
			return 1
		fi
		cid=$(printf '%s\n' "$out" | grep -E '^[A-Za-z0-9_-]{22}$' | tail -n1 || true)
		if [[ -z $cid ]]; then
			printf '%s\n' "$out" >>"$d/logs/format.log"
			REASON="StorageTool random-uuid printed no cluster id (see $d/logs/format.log)"
			return 1
		fi
		say "kafka: formatting storage (standalone KRaft, cluster id $cid)"
		if ! "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format --standalone -t "$cid" \
			-c "$d/server.properties" >>"$d/logs/format.log" 2>&1; then
			tail_log kafka "$d/logs/format.log"
			rm -rf "$d/data"
			REASON="StorageTool format failed (see $d/logs/format.log)"
			return 1
		fi
	fi
}

launch_kafka() {
	local d=$STATE/kafka
	rotate "${LOG[kafka]}"
	rotate "$d/logs/stdout.log"
	kafka_java_args
	(cd "$d" && launch kafka "$d/logs/stdout.log" "${KAFKA_JAVA[@]}" kafka.Kafka "$d/server.properties")
}

ready_kafka() {
	port_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "${LOG[kafka]}" 2>/dev/null
}

# ---------------------------------------------------------------- commands

ensure() { # name — make the server available or report why not
	local name=$1 port=${PORT[$1]} t0=$SECONDS pid
	REASON=""
	if ! "install_$name"; then
		unavailable "$name" "install failed: $REASON"
		return 0
	fi
	if pid=$(pid_of "$name"); then
		if wait_ready "$name" 20; then
			say "$name: already running (pid $pid, $HOST:$port)"
			AVAILABLE[$name]=1
			return 0
		fi
		say "$name: pid $pid is running but not answering ($REASON); restarting it"
		tail_log "$name"
		stop_one "$name"
	elif port_open "$port"; then
		if "ready_$name"; then
			say "$name: WARNING: $HOST:$port is served by a process this script did not start;" \
				"using it, but 'stop' will not touch it"
			AVAILABLE[$name]=1
			return 0
		fi
		unavailable "$name" "port $HOST:$port is taken by another process that does not answer as $name"
		return 0
	fi
	rm -f "$STATE/$name.pid"
	if ! "prepare_$name"; then
		unavailable "$name" "prepare failed: $REASON"
		return 0
	fi
	"launch_$name"
	if wait_ready "$name" "${START_TIMEOUT[$name]}"; then
		say "$name: started (pid $(<"$STATE/$name.pid"), $HOST:$port) in $((SECONDS - t0))s"
		AVAILABLE[$name]=1
	else
		local why=$REASON
		say "$name: start failed: $why"
		tail_log "$name"
		if [[ $name == clickhouse ]]; then tail_log "$name" "$STATE/clickhouse/log/stdout.log"; fi
		if [[ $name == kafka ]]; then tail_log "$name" "$STATE/kafka/logs/stdout.log"; fi
		stop_one "$name"
		unavailable "$name" "start failed: $why (log: ${LOG[$name]})"
	fi
}

write_env() {
	local tmp=$STATE/env.tmp
	{
		echo "# written by deploy/testbed.sh start on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "export SLUICE_TESTBED_DIR=$STATE"
		if [[ -n ${AVAILABLE[kafka]:-} ]]; then
			echo "export SLUICE_TEST_KAFKA_BROKERS=$HOST:$KAFKA_PORT"
		else
			echo "# kafka UNAVAILABLE (see $STATE/unavailable)"
		fi
		if [[ -n ${AVAILABLE[redis]:-} ]]; then
			echo "export SLUICE_TEST_REDIS_URL=redis://$HOST:$REDIS_PORT/0"
		else
			echo "# redis UNAVAILABLE (see $STATE/unavailable)"
		fi
		if [[ -n ${AVAILABLE[clickhouse]:-} ]]; then
			echo "export SLUICE_TEST_CLICKHOUSE_DSN=clickhouse://$HOST:$CH_TCP_PORT/default"
			echo "export SLUICE_TEST_CLICKHOUSE_HTTP=http://$HOST:$CH_HTTP_PORT"
		else
			echo "# clickhouse UNAVAILABLE (see $STATE/unavailable)"
		fi
	} >"$tmp"
	mv -f "$tmp" "$STATE/env"
}

print_unavailable() {
	[[ -s $STATE/unavailable ]] || return 0
	local name reason
	while IFS= read -r line; do
		name=${line%%: *}
		reason=${line#*: }
		banner "$name" "$reason"
	done <"$STATE/unavailable"
}

lock() {
	exec 9>"$STATE/.lock"
	if ! flock -w 900 9; then
		say "could not lock $STATE/.lock within 900s (another testbed.sh running?)"
		exit 1
	fi
}

unlock() { exec 9>&-; }

on_exit() {
	cleanup_policy_rc_d
	if ((STOP_ON_EXIT)); then
		STOP_ON_EXIT=0
		unlock
		cmd_stop
	fi
}

cmd_start() {
	mkdir -p "$STATE"
	lock
	local t0=$SECONDS name
	: >"$STATE/unavailable"
	for name in "${SERVERS[@]}"; do
		ensure "$name"
	done
	write_env
	unlock
	say "env written to $STATE/env (start took $((SECONDS - t0))s)"
	if [[ -s $STATE/unavailable ]]; then
		say "UNAVAILABLE: $(tr '\n' ';' <"$STATE/unavailable")"
	fi
}

cmd_stop() {
	[[ -d $STATE ]] || return 0
	lock
	local i
	for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do
		stop_one "${SERVERS[i]}"
	done
	unlock
}

cmd_status() {
	local name pid port
	echo "state dir: $STATE"
	for name in "${SERVERS[@]}"; do
		port=${PORT[$name]}
		if pid=$(pid_of "$name"); then
			if "ready_$name"; then
				echo "$name: running, pid $pid, $HOST:$port, answering"
			else
				echo "$name: running, pid $pid, $HOST:$port, NOT answering"
			fi
		elif port_open "$port"; then
			echo "$name: not started by testbed, but $HOST:$port is open (foreign process)"
		else
			echo "$name: stopped"
		fi
	done
	if [[ -s $STATE/unavailable ]]; then
		echo "unavailable at last start:"
		sed 's/^/  /' "$STATE/unavailable"
	fi
	if [[ -f $STATE/env ]]; then
		echo "env ($STATE/env):"
		sed 's/^/  /' "$STATE/env"
	fi
}

cmd_run() {
	[[ ${1:-} == -- ]] && shift
	if (($# == 0)); then
		echo "usage: $0 run -- CMD [ARGS...]" >&2
		exit 2
	fi
	STOP_ON_EXIT=1
	trap 'exit 130' INT
	trap 'exit 143' TERM
	cmd_start
	# shellcheck disable=SC1091
	source "$STATE/env"
	print_unavailable
	local rc=0 child
	say "running: $*"
	# CMD runs as a child we wait for, so a SIGTERM/SIGINT sent to this script
	# is passed on to it at once and the EXIT trap still stops the servers.
	if { true <&0; } 2>/dev/null; then
		"$@" <&0 &
	else # no stdin at all (closed fd 0)
		"$@" </dev/null &
	fi
	child=$!
	trap 'kill -TERM "$child" 2>/dev/null || true' TERM
	trap 'kill -INT "$child" 2>/dev/null || true' INT
	while :; do
		wait "$child" && rc=0 || rc=$?
		kill -0 "$child" 2>/dev/null || break # interrupted by a trap: wait again
	done
	trap - TERM INT
	print_unavailable
	say "command exited with $rc"
	exit "$rc"
}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

main() {
	trap on_exit EXIT
	local cmd=${1:-}
	(($#)) && shift
	case $cmd in
	start) cmd_start ;;
	stop) cmd_stop ;;
	status) cmd_status ;;
	run) cmd_run "$@" ;;
	*) usage ;;
	esac
}

main "$@"
