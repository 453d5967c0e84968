"""Snapshot costs against a running `chuyi up` (see bench/snapshots.sh).

argv: PID of `chuyi up` (unused: nothing here is per process), SECS.
Needs CHUYI_NBD_URI and PATH from up.env, fio and qemu-io.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SECS = int(sys.argv[2])
BASE = os.environ["CHUYI_NBD_URI"].rsplit("/", 1)[0]


def chuyi(*args):
    out = subprocess.run(["chuyi", *args], check=True, capture_output=True, text=True)
    return out.stdout


def used_bytes():
    """Bytes the nodes' ssd disk files take on the host file system (they
    are sparse; a slot's space is reserved when it is allocated)."""
    data = os.path.dirname(os.environ["CHUYI_CONFIG"])
    total = 0
    for node in sorted(os.listdir(data)):
        path = os.path.join(data, node, "ssd0", "chuyi-disk.img")
        if os.path.exists(path):
            total += os.stat(path).st_blocks * 512
    return total


def timed(*args, runs=5):
    times = []
    for i in range(runs):
        start = time.monotonic()
        chuyi(*[a.format(i=i) for a in args])
        times.append(time.monotonic() - start)
    return statistics.median(times)


def fio(volume, secs, log=None):
    args = [
        "fio", "--name=snap", "--ioengine=nbd", f"--uri={BASE}/{volume}", "--rw=randwrite", "--bs=4k",
        "--size=1G", "--iodepth=16", "--time_based", f"--runtime={secs}", "--output-format=json",
    ]
    if log:
        args += [f"--write_iops_log={log}", "--log_avg_msec=1000"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]["write"]
    return job["iops"], job["clat_ns"]["percentile"]["99.000000"] / 1000


def per_second(log):
    with open(f"{log}_iops.1.log") as f:
        return [int(line.split(",")[1]) for line in f if line.strip()][:5]


def main():
    print("## time to take a snapshot (median of 5, the CLI process included)")
    for name, size in [("thin4", "4G"), ("thin64", "64G")]:
        chuyi("volume", "create", name, "--size", size)
        subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 1 0 256M", f"{BASE}/{name}"], check=True,
                       capture_output=True)
        took = timed("snapshot", "create", name, "s{i}")
        print(f"{size} volume (256 MiB written): {took * 1000:.0f} ms")
    info = timed("volume", "info", "thin64")
    print(f"for scale, `chuyi volume info` (one metadata read): {info * 1000:.0f} ms")

    print(f"\n## fio randwrite 4 KiB QD16 over 1 GiB, {SECS} s before and right after a snapshot")
    chuyi("volume", "create", "busy", "--size", "1G")
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 2 0 1G", f"{BASE}/busy"], check=True, capture_output=True)
    steady = fio("busy", SECS)
    chuyi("snapshot", "create", "busy", "now")
    with tempfile.TemporaryDirectory() as d:
        after = fio("busy", SECS, log=f"{d}/after")
        first = per_second(f"{d}/after")
    print(f"steady:          {steady[0]:8.0f} IOPS, p99 {steady[1]:8.0f} us")
    print(f"after snapshot:  {after[0]:8.0f} IOPS, p99 {after[1]:8.0f} us  (ratio {after[0] / steady[0]:.2f}, p99 x{after[1] / steady[1]:.1f})")
    print(f"first seconds after it, IOPS per second: {first}")

    print("\n## space after overwriting 10% of a snapshotted 1 GiB volume")
    for name, how in [("contig", "write -P 3 0 103M"), ("scatter", None)]:
        chuyi("volume", "create", name, "--size", "1G")
        subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 2 0 1G", f"{BASE}/{name}"], check=True,
                       capture_output=True)
        before = used_bytes()
        chuyi("snapshot", "create", name, "base")
        if how:
            subprocess.run(["qemu-io", "-f", "raw", "-c", how, f"{BASE}/{name}"], check=True, capture_output=True)
        else:
            subprocess.run(["fio", "--name=scatter", "--ioengine=nbd", f"--uri={BASE}/{name}", "--rw=randwrite",
                            "--bs=4k", "--size=1G", "--io_size=103M", "--iodepth=16"], check=True, capture_output=True)
        grown = used_bytes() - before
        print(f"{name:8}: +{grown / 2**20:.0f} MiB over both replicas for 103 MiB overwritten "
              f"({grown / 2 / (103 * 2**20):.1f}x the data per replica)")


main()
