"""Backups against restic, against a running `chuyi up` (see bench/backup.sh).

argv: PID of `chuyi up` (unused).
Needs CHUYI_NBD_URI, CHUYI_S3_ENDPOINT, the AWS_* keys and PATH from
up.env; fio, qemu-img, awscli and restic.

The volume is BACKUP_GIB GiB (default 4, issue 19's size), written whole:
half of it /usr as a tar stream (zeros where /usr runs out), half random
bytes.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
SIZE = int(os.environ.get("BACKUP_GIB", "4")) * 1024 * MIB
CHANGED = SIZE // MIB // 10  # 1 MiB blocks: 10% of the volume
BASE = os.environ["CHUYI_NBD_URI"].rsplit("/", 1)[0]
ENDPOINT = os.environ["CHUYI_S3_ENDPOINT"]


def run(*args, **kw):
    done = subprocess.run(args, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def timed(*args, **kw):
    # Each timed step starts with the previous step's writes on disk, so
    # it is not charged for their writeback.
    run("sync")
    start = time.monotonic()
    out = run(*args, **kw)
    return time.monotonic() - start, out


def make_image(path):
    """Half the volume /usr as a tar stream, then half random bytes."""
    tar = subprocess.Popen(["tar", "cf", "-", "/usr"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    with open(path, "wb") as f:
        left = SIZE // 2
        while left:
            block = tar.stdout.read(min(left, MIB))
            if not block:
                break
            f.write(block)
            left -= len(block)
        tar.kill()
        f.write(b"\0" * left)
        for _ in range(SIZE // 2 // MIB):
            f.write(os.urandom(MIB))


def chuyi_backup(*args):
    seconds, out = timed("chuyi", "--json", "backup", *args)
    return seconds, json.loads(out)


def restic(repo, *args, cwd=None):
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=repo)
    return timed("restic", "--no-cache", "--quiet", *args, env=env, cwd=cwd)


def stored(bucket):
    listing = run("aws", "--endpoint-url", ENDPOINT, "s3", "ls", "--recursive", "--summarize", f"s3://{bucket}/")
    return int([l for l in listing.splitlines() if "Total Size" in l][0].split(":")[1])


def main():
    work = tempfile.mkdtemp(dir="/var/tmp", prefix="chuyi-backup-bench.")
    try:
        measure(work)
    finally:
        run("rm", "-rf", work)


def measure(work):
    os.makedirs(os.path.join(work, "r"))
    # The same path in both of restic's backups: its second is incremental.
    img = os.path.join(work, "r", "disk.img")
    make_image(img)
    run("chuyi", "volume", "create", "bk", "--size", f"{SIZE // MIB}M")
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img, f"{BASE}/bk")
    target = ["--target", "s3://bench/chuyi"]

    full_s, full = chuyi_backup("create", "bk", *target)
    print(f"chuyi full: {full_s:.1f} s", flush=True)
    # What any backup costs beyond its data: nothing changed.
    same_s, same = chuyi_backup("create", "bk", *target)
    print(f"chuyi incremental, nothing changed: {same_s:.2f} s", flush=True)
    # 10% of the volume rewritten: random 1 MiB blocks, half compressible.
    run("fio", "--name=change", "--ioengine=nbd", f"--uri={BASE}/bk", "--rw=randwrite", "--bs=1M",
        f"--size={SIZE}", f"--number_ios={CHANGED}", "--buffer_compress_percentage=50", "--refill_buffers",
        "--randrepeat=0")
    # The changed ranges alone, as the incremental asks the nodes for them.
    diff_s, _ = timed("chuyi", "--json", "snapshot", "diff", "bk", same["snapshot"])
    incr_s, incr = chuyi_backup("create", "bk", *target)
    print(f"chuyi incremental: {incr_s:.1f} s", flush=True)
    restore_s, restored = chuyi_backup("restore", "bk", "--to", "bk-copy", *target)
    print(f"chuyi restore: {restore_s:.1f} s", flush=True)
    chuyi_stored = stored("bench")
    # Room for restic: the copy and the backups go.
    run("chuyi", "volume", "delete", "bk-copy", "--now")
    changed_img = os.path.join(work, "changed.img")
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", f"{BASE}/bk@{incr['snapshot']}", changed_img)
    run("aws", "--endpoint-url", ENDPOINT, "s3", "rm", "--recursive", "--quiet", "s3://bench/")

    repo = f"s3:{ENDPOINT}/bench-restic"
    restic(repo, "init")
    r_full_s, _ = restic(repo, "backup", "r/disk.img", cwd=work)
    print(f"restic full: {r_full_s:.1f} s", flush=True)
    os.replace(changed_img, img)
    r_incr_s, _ = restic(repo, "backup", "r/disk.img", cwd=work)
    print(f"restic incremental: {r_incr_s:.1f} s", flush=True)
    os.remove(img)
    r_restore_s, _ = restic(repo, "restore", "latest", "--target", os.path.join(work, "restored"))
    restic_stored = stored("bench-restic")

    mbs = lambda s: SIZE / s / 1e6
    print(f"{'':27}{'chuyi':>15}{'restic 0.14':>19}{'restic/chuyi':>14}")
    rows = [("full backup", full_s, r_full_s), ("incremental (10% changed)", incr_s, r_incr_s),
            ("restore", restore_s, r_restore_s)]
    for name, c, r in rows:
        print(f"{name:27}{c:7.1f} s {mbs(c):4.0f} MB/s{r:8.1f} s {mbs(r):4.0f} MB/s{r / c:10.2f}x")
    print(f"incremental / full: chuyi {incr_s / full_s:.2f}, restic {r_incr_s / r_full_s:.2f}")
    print(f"chuyi incremental with nothing changed: {same_s:.2f} s ({same['stats']['spans_read']} spans read); "
          f"the changed ranges of the 10% alone (chuyi snapshot diff): {diff_s:.2f} s")
    s, i = full["stats"], incr["stats"]
    print(f"chuyi: full read {s['bytes_read'] // MIB} MiB, sent {s['bytes_sent'] // MIB} MiB; "
          f"incremental read {i['bytes_read'] // MIB} MiB in {i['spans_read']} spans, sent {i['bytes_sent'] // MIB} MiB; "
          f"restore fetched {restored['stats']['fetched_bytes'] // MIB} MiB")
    print(f"stored in the target after both backups: chuyi {chuyi_stored // MIB} MiB, restic {restic_stored // MIB} MiB")
    print(f"(MB/s: of the volume's {SIZE // MIB // 1024} GiB per second)")


if __name__ == "__main__":
    sys.exit(main())
