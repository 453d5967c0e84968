//! The S3 gateway's first step with a real client, awscli: bucket create,
//! list, head, location and delete under SigV4, ownership between two
//! users, and the errors of wrong or missing credentials.

use std::process::Command as Process;
use std::time::Duration;

use chuyi_chaos::cluster::{S3Keys as Keys, Spec, TestCluster, POOL};

fn user(cluster: &TestCluster, name: &str) -> Keys {
    cluster.s3_user(name).expect("chuyi user create")
}

/// `aws` with only these credentials (no config files of the machine).
fn aws(endpoint: &str, keys: &Keys, args: &[&str]) -> (bool, String) {
    let home = tempfile::tempdir().expect("home");
    let out = Process::new("aws")
        .args(["--endpoint-url", endpoint])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("AWS_ACCESS_KEY_ID", &keys.access)
        .env("AWS_SECRET_ACCESS_KEY", &keys.secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .expect("aws");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn awscli_manages_buckets_under_sigv4_and_ownership() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let (alice, bob) = (user(&cluster, "alice"), user(&cluster, "bob"));
    let credential = chuyi_chaos::cluster::frontend("s3-test");
    let client = cluster.client_as(&credential, Duration::from_secs(30)).await.expect("client");
    let user_seal = credential.user_seal().expect("a frontend opens user keys");
    let service = chuyi_s3::server::service(client, user_seal, POOL.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(chuyi_s3::server::serve(listener, service));

    tokio::task::spawn_blocking(move || {
        let e = endpoint.as_str();
        let (ok, out) = aws(e, &alice, &["s3", "mb", "s3://alice-photos"]);
        assert!(ok, "{out}");
        let (ok, out) = aws(e, &alice, &["s3api", "create-bucket", "--bucket", "alice-backups"]);
        assert!(ok, "{out}");
        // As S3 in us-east-1: creating a bucket one owns again succeeds.
        let (ok, out) = aws(e, &alice, &["s3", "mb", "s3://alice-photos"]);
        assert!(ok, "{out}");
        let (ok, out) = aws(e, &bob, &["s3", "mb", "s3://alice-photos"]);
        assert!(!ok && out.contains("BucketAlreadyExists"), "{out}");
        let (ok, out) = aws(e, &alice, &["s3", "mb", "s3://Bad_Name"]);
        assert!(!ok && out.contains("InvalidBucketName"), "{out}");

        let (ok, out) = aws(e, &alice, &["s3api", "list-buckets"]);
        assert!(ok, "{out}");
        let listed: serde_json::Value = serde_json::from_str(&out).expect("list-buckets JSON");
        let names: Vec<&str> =
            listed["Buckets"].as_array().expect("Buckets").iter().filter_map(|b| b["Name"].as_str()).collect();
        assert_eq!(names, vec!["alice-backups", "alice-photos"]);
        assert_eq!(listed["Owner"]["DisplayName"], "alice");
        assert_eq!(listed["Owner"]["ID"].as_str().map(str::len), Some(64), "a canonical id: {out}");
        let (ok, out) = aws(e, &bob, &["s3", "ls"]);
        assert!(ok && !out.contains("alice-"), "bob sees none of alice's buckets: {out}");

        let (ok, out) = aws(e, &alice, &["s3api", "head-bucket", "--bucket", "alice-photos"]);
        assert!(ok, "{out}");
        let (ok, out) = aws(e, &bob, &["s3api", "head-bucket", "--bucket", "alice-photos"]);
        assert!(!ok && out.contains("403"), "another user's bucket: {out}");
        let (ok, out) = aws(e, &alice, &["s3api", "head-bucket", "--bucket", "no-such-bucket"]);
        assert!(!ok && out.contains("404"), "{out}");
        let (ok, out) = aws(e, &alice, &["s3api", "get-bucket-location", "--bucket", "alice-photos"]);
        assert!(ok && out.contains("LocationConstraint"), "{out}");
        let (ok, out) = aws(e, &bob, &["s3", "rb", "s3://alice-photos"]);
        assert!(!ok && out.contains("AccessDenied"), "{out}");

        // Wrong and unknown credentials.
        let wrong = Keys { access: alice.access.clone(), secret: "x".repeat(40) };
        let (ok, out) = aws(e, &wrong, &["s3", "ls"]);
        assert!(!ok && out.contains("SignatureDoesNotMatch"), "{out}");
        let unknown = Keys { access: "AKIANOSUCHKEY0000000".into(), secret: "x".repeat(40) };
        let (ok, out) = aws(e, &unknown, &["s3", "ls"]);
        assert!(!ok && out.contains("InvalidAccessKeyId"), "{out}");

        let (ok, out) = aws(e, &alice, &["s3", "rb", "s3://alice-photos"]);
        assert!(ok, "{out}");
        let (ok, out) = aws(e, &alice, &["s3", "ls"]);
        assert!(ok && !out.contains("alice-photos") && out.contains("alice-backups"), "{out}");
    })
    .await
    .expect("aws checks");
}
