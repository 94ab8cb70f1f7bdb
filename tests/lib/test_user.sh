# shellcheck shell=bash
# The processes of an unprivileged user a test made (rootless end-to-end
# tests: tests/podman/e2e.sh, tests/snapshotter/rootless_e2e.sh).  Sourced.
# A process counts as the user's when any of its uids (real, effective,
# saved, filesystem) is the user's or in its range of subordinate ids.

user_pids() { # UID [SUBSTART [COUNT]]: PIDs of the user's processes, one a line
	local uid=$1 lo=${2:--1} hi s p u
	[ -n "$uid" ] || return 0
	hi=$((lo + ${3:-65536}))
	[ "$lo" = -1 ] && hi=-1
	for s in /proc/[0-9]*/status; do
		u=$(awk '/^Uid:/ {print $2, $3, $4, $5; exit}' "$s" 2>/dev/null) || continue
		p=${s#/proc/}
		for u in $u; do
			if [ "$u" = "$uid" ] || { [ "$u" -ge "$lo" ] && [ "$u" -lt "$hi" ]; }; then
				echo "${p%/status}"
				break
			fi
		done
	done
}

kill_user_procs() { # UID [SUBSTART [COUNT]]: SIGTERM, then SIGKILL, each process by PID until none is left
	local i p pids
	[ -n "$1" ] || return 0
	for i in $(seq 1 40); do
		pids=$(user_pids "$@")
		[ -n "$pids" ] || return 0
		for p in $pids; do
			if [ "$i" -le 2 ]; then kill -TERM "$p" 2>/dev/null; else kill -KILL "$p" 2>/dev/null; fi
		done
		sleep 0.25
	done
	echo "# cleanup: processes of uid $1 left: $(user_pids "$@" | tr '\n' ' ')"
}
