//! `chuyi-bench nbd-load`: random reads or writes of one block size over
//! NBD at a fixed queue depth, one blocking connection per thread, for the
//! hosts where fio (and its NBD engine, libnbd) is not installed: the
//! 16-core device machine has neither, and nothing can be installed there.
//! It speaks plain NBD (fixed newstyle, `NBD_OPT_GO`, simple replies), so
//! the server does what it does for any client; where fio is there, its
//! numbers are the ones recorded, and this one is checked against them.
//!
//! Each connection keeps `depth` requests outstanding: it sends them all,
//! then sends one more for each reply it reads (written out together when
//! no further reply is waiting). Reports operations per second, latency
//! percentiles (from a request's queueing in this client to its reply),
//! and what the machine spent beside this process per operation.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chuyi_nbd::proto::{
    CMD_READ, CMD_WRITE, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT,
    INFO_EXPORT, NBDMAGIC, OPTION_REPLY_MAGIC, OPT_GO, REP_ACK, REP_INFO, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC,
};

use crate::cpu;
use crate::latency::{nanos, LatencySummary};

/// How long a reply may take before the run fails.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One run's shape.
#[derive(Clone, Debug)]
pub struct NbdLoad {
    /// `host:port` of the NBD server.
    pub addr: String,
    pub export: String,
    pub connections: usize,
    /// Requests outstanding on each connection.
    pub depth: usize,
    pub block_bytes: u32,
    /// Offsets are drawn from the first `span_bytes` of the export (all of
    /// it when 0).
    pub span_bytes: u64,
    pub write: bool,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What one run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NbdLoadReport {
    pub connections: usize,
    pub depth: usize,
    pub ops: u64,
    pub seconds: f64,
    pub iops: f64,
    pub latency: LatencySummary,
    /// CPU the whole machine spent, all cores, over the measured phase.
    pub machine_busy_ms: u64,
    /// Of which this load generator.
    pub load_ms: u64,
    /// (machine busy - load generator) per operation: the server side's
    /// cost where nothing else runs.
    pub others_us_per_op: f64,
}

/// Runs the load: `connections` threads, each on its own connection.
pub fn run(load: &NbdLoad) -> anyhow::Result<NbdLoadReport> {
    let size = {
        let probe = connect(&load.addr, &load.export)?;
        probe.size
    };
    let span = if load.span_bytes == 0 { size } else { load.span_bytes.min(size) };
    if span < u64::from(load.block_bytes) || load.block_bytes == 0 || load.depth == 0 || load.connections == 0 {
        bail!(
            "nothing to do: span {span}, block {}, depth {}, {} connections",
            load.block_bytes,
            load.depth,
            load.connections
        );
    }
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let until = measure_from + load.duration;
    let before = std::sync::Mutex::new(None);
    let results: Vec<anyhow::Result<Vec<u64>>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..load.connections)
            .map(|i| {
                let before = &before;
                s.spawn(move || {
                    let conn = connect(&load.addr, &load.export)?;
                    drive(conn, load, span, i as u64, measure_from, until, before)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a load thread panicked"))))
            .collect()
    });
    let after = (cpu::machine_busy_ms(), own_cpu_ms());
    let mut latencies = Vec::new();
    for r in results {
        latencies.extend(r?);
    }
    let Some((busy0, load0)) = before.into_inner().unwrap_or_else(|e| e.into_inner()) else {
        bail!("the run ended before its measured phase began");
    };
    let machine_busy_ms = after.0.context("reading /proc/stat")?.saturating_sub(busy0);
    let load_ms = after.1.saturating_sub(load0);
    let ops = latencies.len() as u64;
    let seconds = load.duration.as_secs_f64();
    Ok(NbdLoadReport {
        connections: load.connections,
        depth: load.depth,
        ops,
        seconds,
        iops: ops as f64 / seconds,
        latency: LatencySummary::from_nanos(&mut latencies),
        machine_busy_ms,
        load_ms,
        others_us_per_op: machine_busy_ms.saturating_sub(load_ms) as f64 * 1000.0 / ops.max(1) as f64,
    })
}

struct Connection {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    size: u64,
}

/// Connects and negotiates `export` with `NBD_OPT_GO`.
fn connect(addr: &str, export: &str) -> anyhow::Result<Connection> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    // A server that stops answering fails the run instead of hanging it.
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::with_capacity(1 << 18, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(1 << 16, stream);
    if read_u64(&mut reader)? != NBDMAGIC || read_u64(&mut reader)? != IHAVEOPT {
        bail!("{addr} is not a newstyle NBD server");
    }
    let server_flags = read_u16(&mut reader)?;
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        bail!("{addr} does not speak fixed newstyle NBD");
    }
    let no_zeroes = if server_flags & FLAG_NO_ZEROES != 0 { FLAG_C_NO_ZEROES } else { 0 };
    writer.write_all(&(FLAG_C_FIXED_NEWSTYLE | no_zeroes).to_be_bytes())?;
    let mut go = Vec::new();
    go.extend_from_slice(&(export.len() as u32).to_be_bytes());
    go.extend_from_slice(export.as_bytes());
    go.extend_from_slice(&0u16.to_be_bytes());
    writer.write_all(&IHAVEOPT.to_be_bytes())?;
    writer.write_all(&OPT_GO.to_be_bytes())?;
    writer.write_all(&(go.len() as u32).to_be_bytes())?;
    writer.write_all(&go)?;
    writer.flush()?;
    let mut size = None;
    loop {
        if read_u64(&mut reader)? != OPTION_REPLY_MAGIC {
            bail!("bad option reply magic from {addr}");
        }
        let (_option, kind, len) = (read_u32(&mut reader)?, read_u32(&mut reader)?, read_u32(&mut reader)?);
        if len > 1 << 16 {
            bail!("option reply of {len} bytes from {addr}");
        }
        let mut data = vec![0; len as usize];
        reader.read_exact(&mut data)?;
        match kind {
            REP_ACK => break,
            REP_INFO if data.len() >= 12 && u16::from_be_bytes([data[0], data[1]]) == INFO_EXPORT => {
                size = Some(u64::from_be_bytes(data[2..10].try_into().expect("8 bytes")));
            }
            REP_INFO => {}
            error if error & (1 << 31) != 0 => {
                bail!("{addr} refused export {export:?}: {}", String::from_utf8_lossy(&data))
            }
            other => bail!("unexpected option reply {other} from {addr}"),
        }
    }
    let size = size.with_context(|| format!("{addr} sent no export size"))?;
    Ok(Connection { reader, writer, size })
}

/// One connection's loop; the latencies of the replies received in the
/// measured phase. The first thread into the phase samples the CPU
/// counters.
fn drive(
    mut conn: Connection,
    load: &NbdLoad,
    span: u64,
    seed: u64,
    measure_from: Instant,
    until: Instant,
    before: &std::sync::Mutex<Option<(u64, u64)>>,
) -> anyhow::Result<Vec<u64>> {
    let blocks = span / u64::from(load.block_bytes);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (seed.wrapping_add(1)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut next_offset = move || {
        // xorshift64*: cheap and enough to spread offsets.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % blocks) * u64::from(load.block_bytes)
    };
    let payload = vec![0xA5u8; load.block_bytes as usize];
    let mut sent_at = vec![Instant::now(); load.depth];
    let mut buf = vec![0u8; load.block_bytes as usize];
    let mut latencies = Vec::with_capacity(1 << 20);
    let mut send = |w: &mut BufWriter<TcpStream>, handle: usize, at: &mut [Instant]| -> std::io::Result<()> {
        let mut req = [0u8; 28];
        req[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        req[6..8].copy_from_slice(&(if load.write { CMD_WRITE } else { CMD_READ }).to_be_bytes());
        req[8..16].copy_from_slice(&(handle as u64).to_be_bytes());
        req[16..24].copy_from_slice(&next_offset().to_be_bytes());
        req[24..28].copy_from_slice(&load.block_bytes.to_be_bytes());
        at[handle] = Instant::now();
        w.write_all(&req)?;
        if load.write {
            w.write_all(&payload)?;
        }
        Ok(())
    };
    for handle in 0..load.depth {
        send(&mut conn.writer, handle, &mut sent_at)?;
    }
    let mut measuring = false;
    let mut outstanding = load.depth;
    while outstanding > 0 {
        // Requests go out when no whole reply header is waiting: replies
        // already read are answered in one write, and nothing is left
        // unsent while this thread waits for a reply.
        if conn.reader.buffer().len() < 16 {
            conn.writer.flush()?;
        }
        let mut head = [0u8; 16];
        conn.reader.read_exact(&mut head)?;
        let now = Instant::now();
        if u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) != SIMPLE_REPLY_MAGIC {
            bail!("bad reply magic");
        }
        let error = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
        let handle = u64::from_be_bytes(head[8..16].try_into().expect("8 bytes")) as usize;
        if error != 0 {
            bail!("the server answered error {error}");
        }
        if handle >= load.depth {
            bail!("reply to unknown handle {handle}");
        }
        if !load.write {
            conn.reader.read_exact(&mut buf)?;
        }
        if now >= measure_from && !measuring {
            measuring = true;
            let mut b = before.lock().unwrap_or_else(|e| e.into_inner());
            if b.is_none() {
                *b = Some((cpu::machine_busy_ms().unwrap_or(0), own_cpu_ms()));
            }
        }
        if measuring && now < until {
            latencies.push(nanos(now - sent_at[handle]));
        }
        if now < until {
            send(&mut conn.writer, handle, &mut sent_at)?;
        } else {
            outstanding -= 1;
        }
    }
    Ok(latencies)
}

/// This process's CPU, its ended threads included (unlike a sum over
/// `/proc/self/task`).
fn own_cpu_ms() -> u64 {
    cpu::process_ms(std::process::id()).unwrap_or(0)
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u16(r: &mut impl Read) -> std::io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}
