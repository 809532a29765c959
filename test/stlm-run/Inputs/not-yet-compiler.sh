#!/bin/sh
# Stands in for stlm-compile (copied beside a copy of stlm-run) and answers
# as it does for a valid spec the native path cannot compile yet: the list
# of ops without a kernel and exit status 3, on which `stlm-run --backend
# auto` falls back to the reference evaluator.
echo "stlm-compile: error: 'pool' has ops the native path cannot compile yet:" >&2
echo "  stlm.example: no kernel yet (1 ops)" >&2
exit 3
