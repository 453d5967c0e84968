#!/usr/bin/env bash
# What snapshots cost (issue 18): bench/snapshots.py against a `chuyi up`
# cluster of its own (bench/with_up.sh): time to take one of a 4 GiB and a
# 64 GiB thin volume; fio 4 KiB randwrite over NBD for SECS (30) seconds
# before and right after a snapshot, IOPS and p99 side by side, and the
# first seconds per second; space after overwriting 10% of a snapshotted
# 1 GiB volume, contiguous and scattered.
# 100 GiB ssd disks (sparse) so that a 64 GiB volume fits the pool.
SSD_CAPACITY=100GiB exec "$(dirname "$0")/with_up.sh" snapshots 600 "$(dirname "$0")/snapshots.py" "${SECS:-30}"
