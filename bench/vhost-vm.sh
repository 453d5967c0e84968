#!/usr/bin/env bash
# fio inside a VM on three disks, one run (issue 20): (a) a Chuyi volume
# over vhost-user-blk (`chuyi vhost`), (b) the same volume through QEMU's
# own NBD driver (`chuyi up`'s NBD frontend, Unix socket), (c) a raw file
# through virtio-blk with aio=io_uring, cache=none (the local ceiling).
# The guest is chaos/vm/guest.sh's; it runs each workload for RUN_SECONDS
# on /dev/vda and prints fio's JSON, which this script turns into one table.
#
# Usage: bench/vhost-vm.sh
# Knobs: RUN_SECONDS (10), SIZE_MIB (1024, the span fio works on), VM_ACCEL
# (kvm or tcg; default: kvm where a guest boots on it, as the tests find),
# WORKLOADS ("rw bs qd,...": 4 KiB random reads and writes at QD1 and QD32,
# 1 MiB sequential reads and writes at QD8).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}
guest_dir=${CHUYI_GUEST_DIR:-/var/cache/chuyi/guest}
run_s=${RUN_SECONDS:-10}
size_mib=${SIZE_MIB:-1024}
IFS=, read -r -a workloads <<<"${WORKLOADS:-randread 4k 1,randread 4k 32,randwrite 4k 1,randwrite 4k 32,read 1M 8,write 1M 8}"

(cd "$repo" && CARGO_TARGET_DIR=$target cargo build -q --workspace --all-targets)
"$repo/chaos/vm/guest.sh" "$guest_dir"
accel=${VM_ACCEL:-$(cat "$guest_dir/accel-$(uname -r)" 2>/dev/null || echo kvm)}
chuyi=$target/debug/chuyi
dir=$(mktemp -d /var/tmp/chuyi-vhost-vm.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

"$chuyi" up --data-dir "$dir/up" --port-base 7600 --s3 127.0.0.1:19600 --s3-tls 127.0.0.1:19643 \
	--nbd 127.0.0.1:19609 --metrics 127.0.0.1:0 --ssd-capacity 8GiB >"$dir/up.log" 2>&1 &
pids+=($!)
for _ in $(seq 240); do [ -s "$dir/up/up.env" ] && break; sleep 0.5; done
# shellcheck disable=SC1091
. "$dir/up/up.env"
chuyi volume create bench0 --size "$((size_mib + 64))MiB" >/dev/null

# The guest's script: every workload on /dev/vda, fio's JSON between markers.
{
	echo "echo 3 > /proc/sys/vm/drop_caches"
	echo "fio --name=fill --filename=/dev/vda --rw=write --bs=1M --size=${size_mib}M --ioengine=libaio --iodepth=8 --direct=1 >/dev/null"
	for w in "${workloads[@]}"; do
		read -r rw bs qd <<<"$w"
		echo "echo FIO-BEGIN $rw $bs $qd"
		echo "fio --name=w --filename=/dev/vda --rw=$rw --bs=$bs --iodepth=$qd --size=${size_mib}M --ioengine=libaio --direct=1 --time_based --runtime=$run_s --ramp_time=1 --randrepeat=0 --norandommap --output-format=json"
		echo "echo FIO-END"
	done
} >"$dir/test.sh"

vm() { # name, then QEMU's disk arguments
	local name=$1
	shift
	qemu-system-x86_64 -accel "$accel" -m 1024 -smp 2 -nodefaults -display none -no-reboot \
		-object memory-backend-memfd,id=mem,size=1024M,share=on -machine pc,memory-backend=mem \
		-serial "file:$dir/$name.console" -kernel "$guest_dir/vmlinuz" -initrd "$guest_dir/initrd.img" \
		-append "console=ttyS0 quiet panic=-1" -fw_cfg "name=opt/chuyi/test,file=$dir/test.sh" "$@" </dev/null
	grep -q 'CHUYI-GUEST-EXIT 0' "$dir/$name.console" || { echo "$name: the guest failed" >&2; tail -20 "$dir/$name.console" >&2; exit 1; }
}

# (a) vhost-user-blk.
chuyi vhost --socket "$dir/bench0.sock" bench0 2>"$dir/vhost.log" &
vhost=$!
pids+=($vhost)
for _ in $(seq 100); do [ -S "$dir/bench0.sock" ] && break; sleep 0.1; done
vm vhost -chardev "socket,id=v0,path=$dir/bench0.sock" -device vhost-user-blk-pci,chardev=v0,num-queues=2
kill -TERM "$vhost" && wait "$vhost" || true
# (b) the same volume through QEMU's NBD client (the lease is free again).
nbd_socket=${CHUYI_NBD_UNIX_URI#*socket=}
vm nbd -blockdev "driver=nbd,node-name=n0,server.type=unix,server.path=$nbd_socket,export=bench0,cache.direct=on" \
	-device virtio-blk-pci,drive=n0,num-queues=2
# (c) a raw file on this host's disk, the local ceiling.
truncate -s "$((size_mib + 64))M" "$dir/raw.img"
vm raw -blockdev "driver=file,node-name=f0,filename=$dir/raw.img,aio=io_uring,cache.direct=on" \
	-device virtio-blk-pci,drive=f0,num-queues=2

echo "vhost-vm: $(nproc) CPUs, accel $accel, $(date -u +%FT%TZ), commit $(git -C "$repo" rev-parse --short HEAD), ${size_mib} MiB span, ${run_s} s each"
python3 - "$dir" <<'PY'
import json, re, sys
d = sys.argv[1]
def parse(name):
    text = open(f"{d}/{name}.console", errors="replace").read()
    out = {}
    for m in re.finditer(r"FIO-BEGIN (\S+) (\S+) (\S+)\s*(\{.*?\n\})\s*FIO-END", text, re.S):
        job = json.loads(m.group(4))["jobs"][0]
        side = job["read"] if "read" in m.group(1) else job["write"]
        lat = side.get("clat_ns", {}).get("percentile", {})
        out[m.groups()[:3]] = (side["iops"], side["bw"] / 1024, lat.get("50.000000", 0) / 1000, lat.get("99.000000", 0) / 1000)
    return out
runs = {n: parse(n) for n in ("vhost", "nbd", "raw")}
print(f"{'workload':<20}" + "".join(f"{n + ' IOPS':>12}{'MiB/s':>8}{'p50 us':>8}{'p99 us':>9}" for n in runs) + f"{'vhost/nbd':>10}{'vhost/raw':>10}")
for key in runs["vhost"]:
    row = f"{' '.join(key):<20}"
    for n in runs:
        iops, mib, p50, p99 = runs[n].get(key, (0, 0, 0, 0))
        row += f"{iops:>12.0f}{mib:>8.1f}{p50:>8.0f}{p99:>9.0f}"
    v, b, r = (runs[n].get(key, (0,))[0] for n in ("vhost", "nbd", "raw"))
    row += f"{(v / b if b else 0):>10.2f}{(v / r if r else 0):>10.2f}"
    print(row)
PY
