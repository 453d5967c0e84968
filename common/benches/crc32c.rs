//! crc32c throughput over one block (4 KiB, what every read verifies and
//! every write computes per block) and one 1 MiB write's worth of data.
//!
//! Goes through `chuyi_common::checksum::crc32c`, the function the data path
//! calls, so a change of backing crate or a lost SSE4.2 path shows here.

use std::hint::black_box;

use chuyi_common::checksum::crc32c;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES_BYTES: [usize; 2] = [4096, 1 << 20];

fn crc32c_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for size in SIZES_BYTES {
        // Not all zeros: some implementations take shortcuts on zero runs.
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + i / 4096) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| b.iter(|| crc32c(black_box(data))));
    }
    group.finish();
}

criterion_group!(benches, crc32c_throughput);
criterion_main!(benches);
