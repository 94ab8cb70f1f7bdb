# Sourced: known_failing NAME prints "NAME: reason" when writable/known-failing
# lists scenario NAME (not run, not counted), else fails.
known_failing() {
	grep -m1 "^$1:" "$(dirname "${BASH_SOURCE[0]}")/writable/known-failing" 2>/dev/null
}
