//! chuyi-bench (being written).
