#!/usr/bin/env bash
# Backups against restic (issue 19): bench/backup.py against a `chuyi up`
# cluster of its own (bench/with_up.sh). A 2 GiB volume written whole (1
# GiB of /usr as a tar stream, 1 GiB of random bytes), backed up to the
# cluster's own gateway, 10% of it rewritten in 1 MiB blocks, backed up
# again, and restored into a new volume; restic doing the same to the same
# gateway from an image file of the same bytes. Seconds and MB/s of volume
# size for each. (2 GiB, not 4: this machine's disk holds no more.)
# 16 GiB ssd disks (sparse): the volume, its restored copy and both
# backups' objects on two replicas.
SSD_CAPACITY=16GiB exec "$(dirname "$0")/with_up.sh" backup 700 "$(dirname "$0")/backup.py"
