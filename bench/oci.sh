#!/bin/bash
# The oci plugin bench (issue 22): a layer blob mounted vs the same layer unpacked.
# Usage: bench/oci.sh [--size F] [--reps N] [--dir DIR] [--json FILE] [--fs KINDS] [--only NAMES]
#                    [--timeout S] [--zst-randread]   (needs root)
# run.sh's wrapper: signals forwarded, anything left under DIR/mnt unmounted.
BENCH_SCRIPT=oci.py BENCH_DEFAULT_DIR=/var/tmp/ocibench exec "$(dirname "$0")/run.sh" "$@"
