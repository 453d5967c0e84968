#!/usr/bin/env bash
# Backups against restic (issue 19): bench/backup.py against a `chuyi up`
# cluster of its own (bench/with_up.sh). A volume of BACKUP_GIB GiB
# (default 4, the issue's size) written whole (half /usr as a tar stream,
# half random bytes), backed up to the
# cluster's own gateway, 10% of it rewritten in 1 MiB blocks, backed up
# again, and restored into a new volume; restic doing the same to the same
# gateway from an image file of the same bytes. Seconds and MB/s of volume
# size for each. Sparse ssd disks of 8x the volume: the volume, its
# restored copy and both tools' backups, each on two replicas.
SSD_CAPACITY=${SSD_CAPACITY:-$((8 * ${BACKUP_GIB:-4}))GiB} exec "$(dirname "$0")/with_up.sh" backup 700 "$(dirname "$0")/backup.py"
