//! SM4-XTS throughput over one volume block (4 KiB, what every encrypted
//! read and write does) and a 1 MiB write's worth of blocks, on the fast
//! path this CPU picks and on the portable fallback; AES-128-XTS (RustCrypto
//! `aes` + `xts-mode`, AES-NI) alongside as what the hardware does for AES.
//!
//! The customer's floor is 262.5 MB/s (2100 Mbit/s) for `fast/4096` on one
//! core. Criterion prints binary units: 262.5 MB/s is 250.3 MiB/s.

use std::hint::black_box;
use std::time::Duration;

use chuyi_common::sm4::{implementation, Implementation, Sm4, Sm4Xts, XtsStandard};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const UNIT_BYTES: usize = 4096;
const KEY: [u8; 32] = [
    0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c, //
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 4096) as u8).collect()
}

fn sm4_xts(c: &mut Criterion) {
    eprintln!("sm4_xts: the fast path here is {}", implementation());
    let mut group = c.benchmark_group("sm4_xts");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));

    let fast = Sm4Xts::new(&KEY, XtsStandard::GbT17964).expect("valid key");
    let fallback =
        Sm4Xts::with_implementation(&KEY, XtsStandard::GbT17964, Implementation::Portable).expect("valid key");
    let cases = [("fast", &fast, UNIT_BYTES), ("fast", &fast, 1 << 20), ("fallback", &fallback, UNIT_BYTES)];
    for (name, xts, len) in cases {
        let mut buf = data(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new(name, len), |b| {
            b.iter(|| xts.encrypt_units(black_box(7), black_box(&mut buf), UNIT_BYTES).expect("whole units"))
        });
    }

    let aes = xts_mode::Xts128::<aes::Aes128>::new(
        aes::cipher::KeyInit::new(KEY[..16].into()),
        aes::cipher::KeyInit::new(KEY[16..].into()),
    );
    let mut buf = data(UNIT_BYTES);
    group.throughput(Throughput::Bytes(UNIT_BYTES as u64));
    group.bench_function(BenchmarkId::new("aes128xts", UNIT_BYTES), |b| {
        b.iter(|| aes.encrypt_sector(black_box(&mut buf), xts_mode::get_tweak_default(7)))
    });
    group.finish();
}

/// The bare block cipher on 4 KiB (256 blocks, ECB) on each implementation
/// this CPU has: what XTS costs on top shows against `sm4_xts`.
fn sm4_blocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("sm4_blocks");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Bytes(UNIT_BYTES as u64));
    let mut key = [0u8; 16];
    key.copy_from_slice(&KEY[..16]);
    for imp in Implementation::ALL.into_iter().filter(|imp| imp.is_supported()) {
        let sm4 = Sm4::with_implementation(&key, imp).expect("supported");
        let mut blocks = vec![[0x5au8; 16]; UNIT_BYTES / 16];
        group.bench_function(BenchmarkId::new(imp.name(), UNIT_BYTES), |b| {
            b.iter(|| sm4.encrypt_blocks(black_box(&mut blocks)))
        });
    }
    group.finish();
}

criterion_group!(benches, sm4_xts, sm4_blocks);
criterion_main!(benches);
