# Sourced: known_failing NAME prints "NAME: reason" when writable/known-failing
# lists scenario NAME (not run, not counted), else fails.
known_failing() {
	grep -m1 "^$1:" "$(dirname "${BASH_SOURCE[0]}")/writable/known-failing" 2>/dev/null
}

# runnable_scenarios ARRAY PREFIX FILE...: appends to the array named ARRAY
# every FILE whose scenario is not listed, and prints "PREFIX NOT RUN reason"
# for each one that is.
runnable_scenarios() {
	local -n into=$1
	local prefix=$2 s reason
	shift 2
	for s; do
		if reason=$(known_failing "$(basename "$s" .scn)"); then
			echo "${prefix}NOT RUN $reason"
		else
			into+=("$s")
		fi
	done
}
