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

/// A self-signed certificate for 127.0.0.1 written as `name`.pem and
/// `name`.key.pem in `dir`.
fn certificate(dir: &std::path::Path, name: &str) -> chuyi_s3::tls::TlsFiles {
    // Subjects of their own: a verifier picks the issuer by subject.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("certificate");
    let files =
        chuyi_s3::tls::TlsFiles { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key.pem")) };
    std::fs::write(&files.cert, cert.pem()).expect("write");
    std::fs::write(&files.key, key.serialize_pem()).expect("write");
    files
}

/// The client side of the renewal test: a keep-alive connection made under
/// the first certificate, the files replaced, then a request on it and one
/// on a new connection, each peer certificate's SHA-256.
const RENEWAL_CLIENT: &str = r#"
import hashlib, http.client, os, ssl, sys, time
host, port, bundle, served, served_key, new, new_key = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=bundle)
def fingerprint(conn):
    return hashlib.sha256(conn.sock.getpeercert(binary_form=True)).hexdigest()
def get(conn):
    conn.request("GET", "/")
    r = conn.getresponse(); r.read()
    return r.status
old = http.client.HTTPSConnection(host, int(port), context=ctx)
print("first", get(old), fingerprint(old), flush=True)
sock = old.sock
os.replace(new_key, served_key); os.replace(new, served)
time.sleep(1.5)
print("kept", get(old), fingerprint(old), old.sock is sock, flush=True)
fresh = http.client.HTTPSConnection(host, int(port), context=ctx)
print("fresh", get(fresh), fingerprint(fresh), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewed_certificate_serves_new_connections_and_keeps_open_ones() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    let credential = chuyi_chaos::cluster::frontend("s3-test");
    let client = cluster.client_as(&credential, Duration::from_secs(30)).await.expect("client");
    let user_seal = credential.user_seal().expect("a frontend opens user keys");
    let service = std::sync::Arc::new(chuyi_s3::server::service(client, user_seal, POOL.into()));
    let dir = tempfile::tempdir().expect("dir");
    let served = certificate(dir.path(), "served");
    let new = certificate(dir.path(), "new");
    // The bundle trusts both: the test is of which one is presented.
    let bundle = dir.path().join("bundle.pem");
    let both = [std::fs::read(&served.cert).expect("read"), std::fs::read(&new.cert).expect("read")].concat();
    std::fs::write(&bundle, both).expect("write");
    let tls = chuyi_s3::tls::Tls::load(served.clone()).expect("tls");
    tokio::spawn(tls.clone().watch(Duration::from_millis(100)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    tokio::spawn(chuyi_s3::server::serve_on(listener, service, Some(tls)));

    let out = tokio::task::spawn_blocking(move || {
        let path = |p: &std::path::Path| p.display().to_string();
        let args = [
            "127.0.0.1".to_string(),
            port,
            path(&bundle),
            path(&served.cert),
            path(&served.key),
            path(&new.cert),
            path(&new.key),
        ];
        Process::new("python3").arg("-c").arg(RENEWAL_CLIENT).args(args).output().expect("python3")
    })
    .await
    .expect("client");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let line = |tag: &str| -> Vec<String> {
        let l = text.lines().find(|l| l.starts_with(tag)).unwrap_or_else(|| panic!("no {tag} line: {text}"));
        l.split(' ').map(String::from).collect()
    };
    let (first, kept, fresh) = (line("first "), line("kept "), line("fresh "));
    // An unsigned GET / is answered (403) over each connection.
    assert!([&first, &kept, &fresh].iter().all(|l| l[1] == "403"), "{text}");
    assert_eq!(kept[2], first[2], "the open connection keeps its certificate: {text}");
    assert_eq!(kept[3], "True", "the open connection was not dropped: {text}");
    assert_ne!(fresh[2], first[2], "a new connection gets the renewed certificate: {text}");
}

/// boto3 over TLS in both addressing styles, the host names resolved to
/// the gateway by the script itself (as curl's --resolve would).
const VIRTUAL_HOSTED_CLIENT: &str = r#"
import socket, sys, boto3, botocore.config
port, bundle, access, secret = sys.argv[1:5]
resolve = socket.getaddrinfo
def local(host, *args, **kw):
    if host.endswith("s3.chuyi.test"):
        host = "127.0.0.1"
    return resolve(host, *args, **kw)
socket.getaddrinfo = local
def client(endpoint, style):
    config = botocore.config.Config(s3={"addressing_style": style}, retries={"max_attempts": 1})
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1", verify=bundle, config=config)
virtual = client(f"https://s3.chuyi.test:{port}", "virtual")
virtual.create_bucket(Bucket="scans")
virtual.put_object(Bucket="scans", Key="ct/1.dcm", Body=b"virtual-hosted")
print("get", virtual.get_object(Bucket="scans", Key="ct/1.dcm")["Body"].read().decode(), flush=True)
print("list", [o["Key"] for o in virtual.list_objects_v2(Bucket="scans")["Contents"]], flush=True)
path = client(f"https://127.0.0.1:{port}", "path")
print("path", path.get_object(Bucket="scans", Key="ct/1.dcm")["Body"].read().decode(), flush=True)
print("buckets", [b["Name"] for b in virtual.list_buckets()["Buckets"]], flush=True)
"#;

/// With `--domain s3.chuyi.test`, `Host: scans.s3.chuyi.test` addresses
/// bucket scans, over TLS with the certificate verified; path style keeps
/// working on the same listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn virtual_hosted_requests_under_a_configured_domain_work_over_tls() {
    let cluster = TestCluster::start(Spec::default()).await.expect("cluster");
    cluster.create_pool().await.expect("pool");
    cluster.wait_clean(Duration::from_secs(30)).await.expect("clean");
    let alice = user(&cluster, "alice");
    let credential = chuyi_chaos::cluster::frontend("s3-test");
    let client = cluster.client_as(&credential, Duration::from_secs(30)).await.expect("client");
    let user_seal = credential.user_seal().expect("a frontend opens user keys");
    let domains = chuyi_s3::domains::Domains::new(&["s3.chuyi.test".into()]).expect("domain");
    let options = chuyi_s3::server::Options { domains, ..chuyi_s3::server::Options::new(POOL) };
    let service = std::sync::Arc::new(chuyi_s3::server::service_with(client, user_seal, options));
    let dir = tempfile::tempdir().expect("dir");
    let key = rcgen::KeyPair::generate().expect("key");
    let names = ["127.0.0.1", "s3.chuyi.test", "*.s3.chuyi.test"].map(String::from).to_vec();
    let cert = rcgen::CertificateParams::new(names).expect("params").self_signed(&key).expect("certificate");
    let files = chuyi_s3::tls::TlsFiles { cert: dir.path().join("s3.pem"), key: dir.path().join("s3.key.pem") };
    std::fs::write(&files.cert, cert.pem()).expect("write");
    std::fs::write(&files.key, key.serialize_pem()).expect("write");
    let tls = chuyi_s3::tls::Tls::load(files.clone()).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    tokio::spawn(chuyi_s3::server::serve_on(listener, service, Some(tls)));

    let out = tokio::task::spawn_blocking(move || {
        let bundle = files.cert.display().to_string();
        let args = [port, bundle, alice.access, alice.secret];
        Process::new("python3").arg("-c").arg(VIRTUAL_HOSTED_CLIENT).args(args).output().expect("python3")
    })
    .await
    .expect("client");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("get virtual-hosted"), "{text}");
    assert!(text.contains("list ['ct/1.dcm']"), "{text}");
    assert!(text.contains("path virtual-hosted"), "path style on the same listener: {text}");
    assert!(text.contains("buckets ['scans']"), "the domain itself is the service: {text}");
}
