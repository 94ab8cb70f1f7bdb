# shellcheck shell=bash
# Sourced by the scripts that run several suites (contrib/run-tests.sh,
# tests/sanitize.sh), never run.  add_counts LOG adds the last
# "N passed, M failed" line of a suite's LOG to the caller's passed and
# failed; a LOG without one counts as one failure.
add_counts() {
	local line
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -1)
	if [ -z "$line" ]; then
		echo "${0##*/}: $1 has no result line" >&2
		failed=$((failed + 1))
		return
	fi
	passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
	failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
}
