#!/usr/bin/env bash
# Fan the members out as Ray tasks (one member per task, one GPU each when the cluster has GPUs).
#
#   examples/ray_members.sh DATA BASE OUT [ADDRESS]
#
# Without ADDRESS (and without RAY_ADDRESS) a local Ray runtime is started for the run.
# With a cluster (ray start --head on one node, ray start --address HEAD:6379 on the others),
# pass HEAD:6379 or ray://HEAD:10001. DATA and OUT must be on a shared file system and
# boom-merge installed on every node.
# Needs `pip install 'boom-merge[ray]'` and the `--launcher ray` option of `boom-merge train`.
set -euo pipefail
data=$1 base=$2 out=$3 address=${4:-}
exec boom-merge train --launcher ray ${address:+--address "$address"} \
    --data "$data" --base "$base" --out "$out" --ratios paper4
