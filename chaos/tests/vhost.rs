//! `chuyi vhost` with a real VM: QEMU boots a small Linux guest
//! (chaos/vm/guest.sh: Debian's kernel, a busybox initramfs) with a volume
//! as its vhost-user-blk disk, on KVM where it works and TCG otherwise.
//! Inside, the guest checks what the device says (size, queues, serial,
//! block size), discards and zeroes ranges and reads them back, makes an
//! ext4 file system, copies a file in and runs fio with verification;
//! after the VM is gone the host reads the volume back over NBD and checks
//! the file system, the file, and fio's data with fio's own verifier. A
//! second run writes an encrypted volume while a storage node is killed
//! under it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chuyi_chaos::cluster::{Spec, TestCluster, POOL};
use chuyi_common::sm4::load_kek;
use chuyi_nbd::server::{NbdOptions, NbdServer};

/// How long one VM may run, boot included (TCG boots in about 20 s).
const VM_LIMIT: Duration = Duration::from_secs(300);
/// The guest's fio job over its file system, run again on the host with
/// `--verify_only` to check what it wrote.
const FIO_FILE_JOB: &str =
    "--name=verify --size=24M --bs=4k --rw=randwrite --verify=crc32c --randseed=7 --randrepeat=1";
/// The fio job the guest runs on the whole (encrypted) disk.
const FIO_DISK_JOB: &str = "--name=disk --size=48M --bs=4k --rw=randwrite --verify=crc32c --randseed=9 --randrepeat=1";

/// The guest's kernel and initramfs, built once into the cache.
fn guest() -> (PathBuf, PathBuf) {
    let dir =
        std::env::var_os("CHUYI_GUEST_DIR").map_or_else(|| PathBuf::from("/var/cache/chuyi/guest"), PathBuf::from);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/guest.sh");
    let out = Command::new(&script).arg(&dir).output().expect("chaos/vm/guest.sh");
    assert!(out.status.success(), "building the guest: {}", String::from_utf8_lossy(&out.stderr));
    (dir.join("vmlinuz"), dir.join("initrd.img"))
}

/// `kvm` where a guest boots on it, else `tcg`; found by booting once and
/// remembered per host kernel (a nested KVM may open and never boot).
fn accel(kernel: &Path, initrd: &Path) -> String {
    if let Ok(chosen) = std::env::var("CHUYI_VM_ACCEL") {
        return chosen;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memo = kernel.with_file_name(format!("accel-{}", release.trim()));
    if let Ok(chosen) = std::fs::read_to_string(&memo) {
        return chosen.trim().to_string();
    }
    let kvm = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok() && {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("probe.sh");
        std::fs::write(&script, "true\n").expect("probe script");
        let console = dir.path().join("console");
        let mut vm = qemu(kernel, initrd, "kvm", None, &script, &[], &console).spawn().expect("qemu");
        let booted = wait_for(&console, "CHUYI-GUEST-EXIT", Duration::from_secs(60), &mut vm);
        let _ = vm.kill();
        let _ = vm.wait();
        booted
    };
    let chosen = if kvm { "kvm" } else { "tcg" };
    eprintln!("vhost VM tests run on {chosen}");
    let _ = std::fs::write(&memo, chosen);
    chosen.to_string()
}

/// The QEMU command: `script` as the guest's test, `disk` (a vhost-user
/// socket) as its /dev/vda with two queues, the serial console into
/// `console`, fw_cfg `files` (name, path) beside the script.
fn qemu(
    kernel: &Path,
    initrd: &Path,
    accel: &str,
    disk: Option<&Path>,
    script: &Path,
    files: &[(&str, &Path)],
    console: &Path,
) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", accel, "-m", "1024", "-smp", "2", "-nodefaults", "-display", "none", "-no-reboot"]);
    c.args(["-object", "memory-backend-memfd,id=mem,size=1024M,share=on", "-machine", "pc,memory-backend=mem"]);
    c.arg("-serial").arg(format!("file:{}", console.display()));
    c.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
    c.args(["-append", "console=ttyS0 quiet panic=-1"]);
    c.arg("-fw_cfg").arg(format!("name=opt/chuyi/test,file={}", script.display()));
    for (name, path) in files {
        c.arg("-fw_cfg").arg(format!("name=opt/chuyi/{name},file={}", path.display()));
    }
    if let Some(socket) = disk {
        c.arg("-chardev").arg(format!("socket,id=vhost0,path={}", socket.display()));
        c.args(["-device", "vhost-user-blk-pci,chardev=vhost0,num-queues=2"]);
    }
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Waits until `console` shows `marker` (true) or `vm` exits or `limit`
/// passes (false).
fn wait_for(console: &Path, marker: &str, limit: Duration, vm: &mut Child) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(console).unwrap_or_default().contains(marker) {
            return true;
        }
        if matches!(vm.try_wait(), Ok(Some(_))) {
            return std::fs::read_to_string(console).unwrap_or_default().contains(marker);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Waits for the VM to power off; its console. `server_log` (the vhost
/// server's) is shown with the console and QEMU's own errors if it does
/// not: the guest's kernel is quiet, so a guest stuck before its test
/// prints nothing of its own.
fn finish(mut vm: Child, console: &Path, server_log: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = vm.try_wait() {
            break;
        }
        if start.elapsed() > VM_LIMIT {
            let _ = vm.kill();
            let _ = vm.wait();
            panic!(
                "the VM ran past {VM_LIMIT:?}:\n{}\nqemu: {}\nvhost server: {}",
                std::fs::read_to_string(console).unwrap_or_default(),
                stderr_of(&mut vm),
                std::fs::read_to_string(server_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stderr = stderr_of(&mut vm);
    let text = std::fs::read_to_string(console).unwrap_or_default();
    assert!(text.contains("CHUYI-GUEST-EXIT 0"), "the guest's test failed:\n{text}\nqemu: {stderr}");
    text
}

fn stderr_of(vm: &mut Child) -> String {
    let mut stderr = String::new();
    if let Some(mut e) = vm.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    stderr
}

/// One `chuyi vhost` process serving `volume` at `socket`.
struct Vhost {
    child: Child,
    log: PathBuf,
}

impl Vhost {
    /// With `metrics`, Prometheus metrics are served on that port.
    fn start(cluster: &TestCluster, volume: &str, socket: &Path, kek: Option<&Path>, metrics: Option<u16>) -> Self {
        let log = cluster.dir().join(format!("vhost-{volume}.log"));
        let mut command = cluster.frontend_command("vhost-test", &cluster.meta_addrs().join(",")).expect("command");
        if let Some(kek) = kek {
            command.arg("--kek-file").arg(kek);
        }
        command.args(["vhost", "--socket"]).arg(socket);
        if let Some(port) = metrics {
            command.args(["--metrics-listen", &format!("127.0.0.1:{port}")]);
        }
        let child = command
            .arg(volume)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("chuyi vhost");
        let mut vhost = Self { child, log };
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if let Ok(Some(status)) = vhost.child.try_wait() {
                panic!("chuyi vhost exited ({status}): {}", vhost.log());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no vhost socket: {}", vhost.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        // The probe connection above counts as a VMM that came and went.
        vhost
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: the lease is given back and the process ends cleanly.
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(start.elapsed() < Duration::from_secs(15), "chuyi vhost still runs after SIGTERM: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "chuyi vhost after SIGTERM: {status}: {}", self.log());
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port free now on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// The text of `GET /metrics` on `port`.
fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {args:?}: {text}");
    text
}

/// The volume's bytes, read over NBD by a frontend in this process (with
/// `kek` for an encrypted volume) into `out`.
async fn read_back(cluster: &TestCluster, volume: &str, kek: Option<&Path>, out: &Path) {
    let client = cluster.client(Duration::from_secs(30)).await.expect("client");
    let kek = kek.map(|f| load_kek(Some(f)).expect("kek").expect("a kek"));
    let server: Arc<NbdServer> =
        NbdServer::with_options(client, "nbd-readback".into(), NbdOptions { kek, ..NbdOptions::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let uri = format!("nbd://{}/{volume}", listener.local_addr().expect("addr"));
    tokio::spawn(server.serve(listener));
    let out = out.to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || run("qemu-img", &["convert", "-f", "raw", "-O", "raw", &uri, &out]))
        .await
        .expect("qemu-img");
}

/// Deterministic bytes no block of zeros or text resembles.
fn payload(len: usize) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(0x9E37_79B9).fill(&mut bytes[..]);
    bytes
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking work")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vm_formats_writes_and_verifies_a_vhost_volume_the_host_then_reads_back() {
    let (kernel, initrd) = guest();
    let accel = blocking({
        let (k, i) = (kernel.clone(), initrd.clone());
        move || accel(&k, &i)
    })
    .await;
    let cluster = TestCluster::start(Spec { disk_mib: 512, ..Spec::default() }).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    let (ok, out, err) =
        cluster.cli(&["volume", "create", "vm-disk", "--size", "160MiB", "--pool", POOL]).expect("chuyi");
    assert!(ok, "{out}{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("vm-disk.sock");
    let metrics_port = free_port();
    let vhost = Vhost::start(&cluster, "vm-disk", &socket, None, Some(metrics_port));

    // The volume is attached under its lease: a second server is refused.
    let other = dir.path().join("other.sock");
    let second = cluster
        .frontend_command("vhost-other", &cluster.meta_addrs().join(","))
        .expect("command")
        .args(["vhost", "--socket"])
        .arg(&other)
        .arg("vm-disk")
        .output()
        .expect("chuyi vhost");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && said.contains("is attached by"),
        "a second server of an attached volume: {said}"
    );
    assert!(!other.exists(), "a refused server leaves no socket behind");

    let data = payload(1 << 20);
    let payload_file = dir.path().join("payload");
    std::fs::write(&payload_file, &data).expect("payload");
    let script = dir.path().join("test.sh");
    std::fs::write(
        &script,
        format!(
            r#"
echo "queues $(ls /sys/block/vda/mq | wc -l)"
echo "serial $(cat /sys/block/vda/serial)"
echo "sectors $(cat /sys/block/vda/size)"
# Discard and write-zeroes read back as zeros and leave their neighbours be.
dd if=/dev/urandom of=/tmp/r bs=1M count=4 2>/dev/null
dd if=/tmp/r of=/dev/vda bs=1M seek=100 conv=fsync 2>/dev/null
blkdiscard -o $((100 << 20)) -l $((1 << 20)) /dev/vda
# busybox sh runs its own applets first: util-linux's by path.
/usr/local/bin/blkdiscard -z -o $((101 << 20)) -l $((1 << 20)) /dev/vda
echo 3 > /proc/sys/vm/drop_caches
nonzero=$(dd if=/dev/vda bs=1M skip=100 count=2 2>/dev/null | tr -d '\000' | wc -c)
echo "nonzero after discard and zeroing: $nonzero"
[ "$nonzero" = 0 ]
dd if=/tmp/r of=/tmp/tail bs=1M skip=2 count=2 2>/dev/null
dd if=/dev/vda of=/tmp/back bs=1M skip=102 count=2 2>/dev/null
cmp /tmp/tail /tmp/back
mkfs.ext4 -F -q /dev/vda
mount -t ext4 /dev/vda /mnt
cp /sys/firmware/qemu_fw_cfg/by_name/opt/chuyi/payload/raw /mnt/payload
fio {FIO_FILE_JOB} --filename=/mnt/fio.dat --ioengine=libaio --iodepth=16 --direct=1 --do_verify=1 --verify_fatal=1 --output=/tmp/fio.out || {{ cat /tmp/fio.out; exit 1; }}
grep -q 'err= 0' /tmp/fio.out
sync
umount /mnt
echo guest-done
"#
        ),
    )
    .expect("script");
    let console = dir.path().join("console");
    let vm = qemu(&kernel, &initrd, &accel, Some(&socket), &script, &[("payload", &payload_file)], &console)
        .spawn()
        .expect("qemu");
    let text = blocking({
        let (console, server_log) = (console.clone(), vhost.log.clone());
        move || finish(vm, &console, &server_log)
    })
    .await;
    assert!(text.contains("queues 2"), "two queues: {text}");
    assert!(text.contains("serial vm-disk"), "the volume's name as serial: {text}");
    assert!(text.contains(&format!("sectors {}", (160u64 << 20) / 512)), "the volume's size: {text}");
    assert!(text.contains("guest-done"), "{text}");
    // What the guest did is counted per request type, with its bytes.
    let scrape = metrics_text(metrics_port);
    let value = |series: &str| {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{series} in\n{scrape}"))
    };
    for op in ["read", "write", "flush", "get_id", "zero"] {
        let series = format!("chuyi_vhost_operations_total{{volume=\"vm-disk\",op=\"{op}\"}}");
        assert!(value(&series) > 0.0, "{series} counted");
    }
    let written = value("chuyi_vhost_bytes_total{volume=\"vm-disk\",op=\"write\"}");
    assert!(written >= f64::from(5u32 << 20), "the 4 MiB written raw and the 1 MiB payload at least: {written}");
    assert!(value("chuyi_vhost_operation_duration_seconds_count{op=\"write\"}") > 0.0);
    vhost.stop();

    // The VM is gone: the host reads the volume and checks what it wrote.
    let image = dir.path().join("back.raw");
    read_back(&cluster, "vm-disk", None, &image).await;
    let img = image.to_string_lossy().into_owned();
    run("e2fsck", &["-fn", &img]);
    let copied = dir.path().join("payload.out");
    run("debugfs", &["-R", &format!("dump /payload {}", copied.display()), &img]);
    assert!(std::fs::read(&copied).expect("dumped") == data, "the file the guest copied in reads back whole");
    let fio_file = dir.path().join("fio.dat");
    run("debugfs", &["-R", &format!("dump /fio.dat {}", fio_file.display()), &img]);
    let mut args: Vec<&str> = FIO_FILE_JOB.split(' ').collect();
    let filename = format!("--filename={}", fio_file.display());
    args.extend([filename.as_str(), "--verify_only", "--verify_fatal=1", "--verify_state_save=0"]);
    run("fio", &args);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vm_writes_an_encrypted_vhost_volume_through_a_storage_node_killed_under_it() {
    let (kernel, initrd) = guest();
    let accel = blocking({
        let (k, i) = (kernel.clone(), initrd.clone());
        move || accel(&k, &i)
    })
    .await;
    let mut cluster = TestCluster::start(Spec { disk_mib: 512, ..Spec::default() }).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek");
    let kek_arg = kek.to_string_lossy().into_owned();
    let (ok, out, err) = cluster.cli(&["key", "generate", &kek_arg]).expect("chuyi");
    assert!(ok, "{out}{err}");
    let create = ["--kek-file", &kek_arg, "volume", "create", "secret", "--size", "64MiB", "--pool", POOL, "--encrypt"];
    let (ok, out, err) = cluster.cli(&create).expect("chuyi");
    assert!(ok, "{out}{err}");
    let socket = dir.path().join("secret.sock");
    let vhost = Vhost::start(&cluster, "secret", &socket, Some(&kek), None);

    let script = dir.path().join("test.sh");
    std::fs::write(
        &script,
        format!(
            r#"
echo "block $(cat /sys/block/vda/queue/logical_block_size)"
echo writing
fio {FIO_DISK_JOB} --filename=/dev/vda --ioengine=libaio --iodepth=16 --direct=1 --do_verify=1 --verify_fatal=1 --output=/tmp/fio.out || {{ cat /tmp/fio.out; exit 1; }}
grep -q 'err= 0' /tmp/fio.out
echo guest-done
"#
        ),
    )
    .expect("script");
    let console = dir.path().join("console");
    let mut vm = qemu(&kernel, &initrd, &accel, Some(&socket), &script, &[], &console).spawn().expect("qemu");
    let (vm, writing) = blocking({
        let console = console.clone();
        move || {
            let writing = wait_for(&console, "writing", VM_LIMIT, &mut vm);
            (vm, writing)
        }
    })
    .await;
    assert!(writing, "the guest never started writing: {}", std::fs::read_to_string(&console).unwrap_or_default());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = cluster.map().await.expect("map").nodes[0].id;
    cluster.kill_node(victim).expect("kill");
    let text = blocking({
        let (console, server_log) = (console.clone(), vhost.log.clone());
        move || finish(vm, &console, &server_log)
    })
    .await;
    assert!(text.contains("block 4096"), "an encrypted volume's blocks are 4 KiB: {text}");
    assert!(text.contains("guest-done"), "{text}");
    vhost.stop();

    let image = dir.path().join("back.raw");
    read_back(&cluster, "secret", Some(&kek), &image).await;
    let mut args: Vec<&str> = FIO_DISK_JOB.split(' ').collect();
    let filename = format!("--filename={}", image.display());
    args.extend([filename.as_str(), "--verify_only", "--verify_fatal=1", "--verify_state_save=0"]);
    run("fio", &args);
}
