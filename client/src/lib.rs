//! chuyi-client: the only way frontends and the CLI reach the cluster.
//!
//! It will own the map cache by epoch, chunk → placement group → replica set
//! resolution, connection pools to storage nodes, retries on an epoch change
//! or a node failure within a deadline, and the volume and object-data APIs
//! the NBD and S3 frontends are written against. It knows volumes and chunk
//! lists, not NBD or HTTP.
//!
//! Not built yet: see the issue "Two replicas: the client library, failover,
//! recovery, scrub, and the chaos harness".
