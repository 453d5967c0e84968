//! Compression of object data in the gateway's frames (128 KiB), on data
//! no one here wrote: pydicom's sample DICOM files concatenated (CT, MR,
//! JPEG and JPEG 2000 pixel data), Python's standard library sources
//! concatenated (text, as a tar of source code would be), the machine's
//! logs under /var/log, and random bytes.
//!
//! Two parts: first, printed before criterion runs, the stored/sent ratio
//! and one core's compress and decompress MB/s of zstd at several levels and
//! of lz4, frame by frame as the gateway compresses (the table behind the
//! choice of `capacity` = zstd 6 and `performance` = lz4 in
//! bench/RESULTS.md); then criterion on the gateway's own encoder and
//! decoder for each policy and corpus.
//!
//! A third group, `seal`, frames 4 MiB of random bytes (incompressible,
//! so every frame is stored raw) without a codec, sealed with SM4-GCM and
//! AES-256-GCM, encode and decode: the CPU server-side encryption costs
//! per byte on one core, next to the gateway's whole path in
//! `bench/sse.sh`.
//!
//! `CORPUS_DIR` names the DICOM directory (default: pydicom's, found with
//! python3); a corpus that cannot be read is left out.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chuyi_s3::frames::{encode, Codec, Layout, Spec, FRAME_BYTES};
use chuyi_s3::sse::{Algorithm, DataKey, Seal};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const CORPUS_BYTES: usize = 16 << 20;

fn files_under(dir: &std::path::Path, ext: &str, out: &mut Vec<u8>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if out.len() >= CORPUS_BYTES {
            return;
        }
        if path.is_dir() && depth > 0 {
            files_under(&path, ext, out, depth - 1);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
}

/// `len` bytes of xorshift noise from `seed`: incompressible.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn python(code: &str) -> Option<String> {
    let out = std::process::Command::new("python3").args(["-c", code]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The corpora, each up to 16 MiB (repeated to at least 4 MiB, so every
/// one has many frames).
fn corpora() -> Vec<(&'static str, Vec<u8>)> {
    let dicom_dir = std::env::var("CORPUS_DIR").ok().or_else(|| {
        python("import os,pydicom;print(os.path.join(os.path.dirname(pydicom.__file__),'data','test_files'))")
    });
    let stdlib = python("import os,json;print(os.path.dirname(os.path.dirname(json.__file__)))");
    let mut out = Vec::new();
    let mut add = |name, mut data: Vec<u8>| {
        if data.is_empty() {
            eprintln!("frames bench: no {name} corpus here, left out");
            return;
        }
        let original = data.len();
        while data.len() < 4 << 20 {
            data.extend_from_within(..original);
        }
        out.push((name, data));
    };
    let mut dicom = Vec::new();
    if let Some(dir) = dicom_dir {
        files_under(std::path::Path::new(&dir), "dcm", &mut dicom, 0);
    }
    add("dicom", dicom);
    let mut text = Vec::new();
    if let Some(dir) = stdlib {
        files_under(std::path::Path::new(&dir), "py", &mut text, 2);
    }
    add("source", text);
    let mut logs = Vec::new();
    files_under(std::path::Path::new("/var/log"), "log", &mut logs, 1);
    add("logs", logs);
    add("random", noise(8 << 20, 0x9e37_79b9_7f4a_7c15));
    out
}

/// One codec setting frame by frame: stored/sent, compress and decompress
/// MB/s on one core. A frame that does not save an eighth counts as raw.
fn measure(data: &[u8], compress: &dyn Fn(&[u8]) -> Vec<u8>, decompress: &dyn Fn(&[u8], usize) -> Vec<u8>) -> String {
    let t = Instant::now();
    let frames: Vec<(Vec<u8>, usize)> = data
        .chunks(FRAME_BYTES)
        .map(|raw| {
            let c = compress(raw);
            if c.len() < raw.len() - raw.len() / 8 {
                (c, raw.len())
            } else {
                (raw.to_vec(), 0)
            }
        })
        .collect();
    let write = data.len() as f64 / t.elapsed().as_secs_f64() / 1e6;
    let stored: usize = frames.iter().map(|(c, _)| c.len()).sum();
    if frames.iter().all(|(_, raw_len)| *raw_len == 0) {
        return format!("{:.3} | {write:.0} | – (every frame raw)", stored as f64 / data.len() as f64);
    }
    let t = Instant::now();
    for (c, raw_len) in &frames {
        if *raw_len > 0 {
            black_box(decompress(c, *raw_len));
        }
    }
    let read = data.len() as f64 / t.elapsed().as_secs_f64() / 1e6;
    format!("{:.3} | {write:.0} | {read:.0}", stored as f64 / data.len() as f64)
}

fn zstd_at(level: i32) -> impl Fn(&[u8]) -> Vec<u8> {
    move |raw| {
        let mut out = vec![0u8; zstd_safe::compress_bound(raw.len())];
        let n = zstd_safe::compress(&mut out[..], raw, level).expect("compress");
        out.truncate(n);
        out
    }
}

fn unzstd(stored: &[u8], raw_len: usize) -> Vec<u8> {
    let mut out = vec![0u8; raw_len];
    let n = zstd_safe::decompress(&mut out[..], stored).expect("decompress");
    out.truncate(n);
    out
}

fn print_levels(corpora: &[(&str, Vec<u8>)]) {
    println!("| corpus | codec | stored/sent | compress MB/s | decompress MB/s |");
    println!("|---|---|---|---|---|");
    for (name, data) in corpora {
        for level in [1, 3, 6, 9, 12, 19] {
            println!("| {name} | zstd {level} | {} |", measure(data, &zstd_at(level), &unzstd));
        }
        let lz4 = |raw: &[u8]| lz4_flex::block::compress(raw);
        let unlz4 = |stored: &[u8], n: usize| lz4_flex::block::decompress(stored, n).expect("lz4");
        println!("| {name} | lz4 | {} |", measure(data, &lz4, &unlz4));
    }
}

fn frames(c: &mut Criterion) {
    let corpora = corpora();
    print_levels(&corpora);
    let mut group = c.benchmark_group("frames");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for (name, data) in &corpora {
        let data = &data[..data.len().min(4 << 20)];
        group.throughput(Throughput::Bytes(data.len() as u64));
        for (policy, codec) in [("capacity", Codec::Zstd), ("performance", Codec::Lz4)] {
            let spec = Spec { codec: Some(codec), seal: None };
            bench_spec(&mut group, policy, name, &spec, data);
        }
    }
    group.finish();
}

/// Encode and decode of `data` framed as `spec`, as `policy` on corpus `name`.
fn bench_spec(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    policy: &str,
    name: &str,
    spec: &Spec,
    data: &[u8],
) {
    group.bench_function(BenchmarkId::new(format!("encode/{policy}"), name), |b| {
        b.iter(|| encode(spec, black_box(data)))
    });
    let stored = encode(spec, data);
    let layout = Layout::parse(&stored, stored.len() as u64).expect("layout");
    let key = spec.seal.as_ref().map(|s| s.key.as_ref());
    let cipher = layout.cipher(key).expect("cipher");
    let all = layout.frames_for(&(0..data.len() as u64));
    group.bench_function(BenchmarkId::new(format!("decode/{policy}"), name), |b| {
        b.iter(|| {
            let at = layout.stored_range(&all);
            let payloads = layout.split(&all, Bytes::copy_from_slice(&stored[at.start as usize..at.end as usize]));
            for (i, p) in payloads {
                black_box(layout.decode(i, p, cipher.as_ref()).expect("decode"));
            }
        })
    });
}

/// Sealing alone: random bytes (every frame raw), no codec, each cipher.
fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let data = noise(4 << 20, 0x2545_f491_4f6c_dd1d);
    group.throughput(Throughput::Bytes(data.len() as u64));
    let key = std::sync::Arc::new(DataKey::random());
    for (name, algorithm) in [("sm4-gcm", Algorithm::Sm4), ("aes256-gcm", Algorithm::Aes256)] {
        let spec = Spec { codec: None, seal: Some(Seal { algorithm, key: key.clone() }) };
        bench_spec(&mut group, name, "random", &spec, &data);
    }
    group.finish();
}

criterion_group!(benches, frames, seal);
criterion_main!(benches);
