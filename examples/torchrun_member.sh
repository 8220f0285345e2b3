#!/usr/bin/env bash
# Train ONE member data-parallel over several processes with torchrun.
#
#   examples/torchrun_member.sh DATA BASE OUT MEMBER [NPROC] [extra `boom-merge train` options]
#
# GPUs: one process per GPU, NCCL (the default when CUDA is available).
# CPU only: ACCELERATE_USE_CPU=1 makes the trainer use the gloo backend; this is how the
# test suite runs 2 processes on a 2-core machine:
#   ACCELERATE_USE_CPU=1 examples/torchrun_member.sh corpus/train tiny-base members 0 2 --max-steps 3 --batch-size 8
# --batch-size is per process: the effective batch is NPROC x --batch-size.
# Only rank 0 writes OUT/member-I-rRR; an interrupted run resumes from its checkpoint.
set -euo pipefail
data=$1 base=$2 out=$3 member=$4 nproc=${5:-2}
shift $(( $# < 5 ? $# : 5 ))
exec torchrun --standalone --nproc_per_node "$nproc" --no-python \
    boom-merge train --data "$data" --base "$base" --out "$out" --member "$member" "$@"
