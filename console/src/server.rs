//! The console over HTTP/1.1 (hyper), over TLS when the member is given a
//! certificate (rustls; the session cookie is then `Secure`): the routes,
//! the session check, the
//! form, and the limits a hostile client meets (connections in all and per
//! address, header time and size, body size and time, failed logins,
//! cross-site form posts).
//!
//! Routes: `GET /login` and `POST /login` (form: `access_key`,
//! `secret_key`), `POST /logout`, the pages `GET /`, `/nodes`, `/pgs`,
//! `/volumes`, `/buckets` (a session needed: otherwise `303` to
//! `/login`), and `GET /static/console.css`, `/static/console.js`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chuyi_common::credential::Identity;
use chuyi_common::seal::SealKey;
use chuyi_meta_api::client::MetaClient;
use chuyi_meta_api::{ask, MetaError};
use futures::StreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::history::{History, Rates};
use crate::login::{self, Sessions, Who};
use crate::pages::{self, BucketRow};
use crate::survey::{node_pool, NodePool, Survey};
use crate::{html, ConsoleError};

/// How often the cluster is surveyed.
pub const SURVEY_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: six hours at [`SURVEY_EVERY`].
pub const SAMPLES_KEPT: usize = 6 * 3600 / 5;
/// Connections served at once; more wait to be accepted.
const CONNECTIONS_MAX: usize = 64;
/// Connections one client address may hold at once; more are closed at
/// once, so one client cannot take every slot.
const CONNECTIONS_PER_ADDR_MAX: usize = 8;
/// The login form's body must arrive within this.
const FORM_TIMEOUT: Duration = Duration::from_secs(10);
/// Points a chart is drawn with at most.
const CHART_POINTS: usize = 600;
/// A request's head must arrive within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS handshake must be done within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection lives at most this long (a browser opens another).
const CONNECTION_MAX_AGE: Duration = Duration::from_secs(120);
/// The login form's body at most.
const FORM_MAX: usize = 4096;
/// Buckets the buckets page reads the usage of at once, and at most.
const BUCKET_READS: usize = 16;
const BUCKETS_SHOWN: usize = 1000;

const CSS: &str = include_str!("../static/console.css");
const JS: &str = include_str!("../static/console.js");

type Reply = Response<Full<Bytes>>;

/// The TLS acceptor of the moment (the certificate is reloaded when its
/// files change; each connection takes the one current when it opens).
pub type Acceptors = Arc<dyn Fn() -> tokio_rustls::TlsAcceptor + Send + Sync>;

/// The console of one cluster.
#[derive(Debug)]
pub struct Console {
    meta: MetaClient,
    /// Connections to the nodes, as an administrator.
    nodes: NodePool,
    /// Opens users' sealed secret keys, to check a login.
    seal: SealKey,
    history: History,
    sessions: Sessions,
    /// Open connections by client address.
    connections: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

impl Console {
    /// `meta` acts as the administrator, `node_identity` is an
    /// administrator's at the nodes' door; `seal` is the users' seal key
    /// (a credential's `user_seal`).
    pub fn new(meta: MetaClient, node_identity: Identity, seal: SealKey) -> Arc<Self> {
        Arc::new(Self {
            meta,
            nodes: node_pool(node_identity),
            seal,
            history: History::new(SAMPLES_KEPT),
            sessions: Sessions::default(),
            connections: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Surveys the cluster every [`SURVEY_EVERY`], for as long as the
    /// process runs; a failed survey is logged and the next one tried.
    /// Each survey runs in a task of its own, so not even a panic in one
    /// ends them.
    pub async fn survey_forever(self: Arc<Self>) {
        let mut every = tokio::time::interval(SURVEY_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let console = self.clone();
            let one = tokio::spawn(async move {
                match Survey::take(&console.meta, &console.nodes).await {
                    Ok(survey) => console.history.record(survey),
                    Err(e) => tracing::warn!(error = %e, "console: surveying the cluster"),
                }
            });
            if let Err(e) = one.await {
                tracing::error!(error = %e, "console: a survey failed");
            }
        }
    }

    async fn answer(self: Arc<Self>, req: Request<Incoming>, peer: IpAddr, secure: bool) -> Reply {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/static/console.css") => asset("text/css; charset=utf-8", CSS),
            (&Method::GET, "/static/console.js") => asset("text/javascript; charset=utf-8", JS),
            (&Method::GET, "/login") => match self.session_user(&req) {
                Some(_) => redirect("/"),
                None => page(StatusCode::OK, pages::login(None)),
            },
            (&Method::POST, _) if !same_origin(req.headers()) => {
                text(StatusCode::FORBIDDEN, "a form of this console must be sent from its own pages\n")
            }
            (&Method::POST, "/login") => self.login(req, peer, secure).await,
            (&Method::POST, "/logout") => {
                if let Some(token) = cookie_token(&req) {
                    self.sessions.close(&token);
                }
                let mut reply = redirect("/login");
                set_cookie(&mut reply, &cookie("", 0, secure));
                reply
            }
            (&Method::GET, "/" | "/nodes" | "/pgs" | "/volumes" | "/buckets") => {
                let Some(token) = cookie_token(&req) else { return redirect("/login") };
                let Some(who) = self.sessions.who(&token) else { return redirect("/login") };
                let user = who.user.clone();
                match self.still_admin(&who).await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.sessions.close(&token);
                        return redirect("/login");
                    }
                    Err(e) => return unavailable(&path, &user, &e),
                }
                match self.page(&path, &user).await {
                    Ok(html) => page(StatusCode::OK, html),
                    Err(e) => unavailable(&path, &user, &e),
                }
            }
            (_, "/" | "/nodes" | "/pgs" | "/volumes" | "/buckets" | "/login" | "/logout") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here\n")
            }
            _ => text(StatusCode::NOT_FOUND, "no such page\n"),
        }
    }

    fn session_user(&self, req: &Request<Incoming>) -> Option<String> {
        self.sessions.who(&cookie_token(req)?).map(|w| w.user)
    }

    /// Whether a session's access key is still an administrator's: a user
    /// deleted or no longer an administrator loses the console at once.
    async fn still_admin(&self, who: &Who) -> Result<bool, ConsoleError> {
        match self.meta.ask(ask::User(who.access_key.clone())).await {
            Ok(user) => Ok(user.admin && user.name == who.user),
            Err(MetaError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn login(&self, req: Request<Incoming>, peer: IpAddr, secure: bool) -> Reply {
        let Some(attempt) = self.sessions.begin_attempt(peer) else {
            let problem = "too many failed logins from this address: wait a minute";
            return page(StatusCode::TOO_MANY_REQUESTS, pages::login(Some(problem)));
        };
        let body = match tokio::time::timeout(FORM_TIMEOUT, Limited::new(req.into_body(), FORM_MAX).collect()).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(_)) => return page(StatusCode::PAYLOAD_TOO_LARGE, pages::login(Some("the form is too large"))),
            Err(_) => return page(StatusCode::REQUEST_TIMEOUT, pages::login(Some("the form came too slowly"))),
        };
        let form = form_fields(&body);
        let (Some(access_key), Some(secret_key)) = (form.get("access_key"), form.get("secret_key")) else {
            return page(StatusCode::BAD_REQUEST, pages::login(Some("give an access key and a secret key")));
        };
        match self.check(access_key, secret_key).await {
            Ok(Some(user)) => {
                self.sessions.succeeded(attempt);
                tracing::info!(user, %peer, "console: logged in");
                let token = self.sessions.open(Who { user, access_key: access_key.clone() });
                let mut reply = redirect("/");
                set_cookie(&mut reply, &cookie(&token, login::SESSION_TTL.as_secs(), secure));
                reply
            }
            Ok(None) => {
                tracing::info!(%peer, "console: login refused");
                let problem = "wrong access key or secret key, or not an administrator";
                page(StatusCode::UNAUTHORIZED, pages::login(Some(problem)))
            }
            Err(e) => {
                // The cause is for the log; a stranger learns only that
                // the cluster could not answer.
                tracing::warn!(error = %e, "console: checking a login");
                self.sessions.succeeded(attempt);
                let problem = "the cluster could not check the keys now: try again";
                page(StatusCode::SERVICE_UNAVAILABLE, pages::login(Some(problem)))
            }
        }
    }

    /// The user an administrator's keys name; `None` when they are not an
    /// administrator's (no such key, not an admin, wrong secret).
    async fn check(&self, access_key: &str, secret_key: &str) -> Result<Option<String>, ConsoleError> {
        let user = match self.meta.ask(ask::User(access_key.to_string())).await {
            Ok(user) => user,
            Err(MetaError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let expected = match self.seal.open(&user.secret) {
            Ok(secret) => secret,
            Err(e) => {
                tracing::error!(user = user.name, error = %e, "console: a user's secret key does not open");
                return Ok(None);
            }
        };
        let right = chuyi_common::secret::same_bytes(secret_key.as_bytes(), &expected);
        Ok((right && user.admin).then_some(user.name))
    }

    /// What a page shows: the metadata service's status read now, with
    /// the nodes' reports and the I/O rates of the latest survey (at most
    /// [`SURVEY_EVERY`] old: a page view does not ask every node). A page
    /// before the first survey takes one of its own (only the survey loop
    /// records them, in order).
    async fn survey(&self) -> Result<(Survey, Rates), ConsoleError> {
        let Some((latest, rates)) = self.history.latest() else {
            return Ok((Survey::take(&self.meta, &self.nodes).await?, Arc::default()));
        };
        let status = self.meta.status().await?;
        Ok((Survey { status, nodes: latest.nodes.clone(), io: Vec::new(), taken_ms: latest.taken_ms }, rates))
    }

    async fn page(&self, path: &str, user: &str) -> Result<String, ConsoleError> {
        let (survey, rates) = self.survey().await?;
        let now = chuyi_common::clock::unix_ms();
        let (title, body) = match path {
            "/nodes" => ("Nodes", pages::nodes(&survey, now)),
            "/pgs" => ("Placement groups", pages::pgs(&survey)),
            "/volumes" => ("Volumes", pages::volumes(&self.meta.ask(ask::Volumes).await?, &rates, now)),
            "/buckets" => ("Buckets", self.buckets().await?),
            _ => ("Overview", pages::overview(&survey, &self.history.samples(CHART_POINTS), now)),
        };
        Ok(html::page(title, path, user, Some(survey.taken_ms), &body))
    }

    async fn buckets(&self) -> Result<String, ConsoleError> {
        let mut buckets = self.meta.ask(ask::Buckets).await?;
        let more = buckets.len().saturating_sub(BUCKETS_SHOWN);
        buckets.truncate(BUCKETS_SHOWN);
        let rows: Vec<Result<BucketRow, MetaError>> = futures::stream::iter(buckets)
            .map(|bucket| async move {
                let usage = self.meta.ask(ask::BucketUsage(bucket.name.clone())).await?;
                Ok(BucketRow { bucket, usage })
            })
            .buffered(BUCKET_READS)
            .collect()
            .await;
        let rows = rows.into_iter().collect::<Result<Vec<_>, _>>()?;
        let (_, rules) = self.meta.ask(ask::QosRules).await?;
        let mut out = pages::buckets(&rows, &rules);
        if more > 0 {
            out.push_str(&format!("<p>{more} more bucket(s) not shown.</p>"));
        }
        Ok(out)
    }
}

/// Serves `console` on `listener` until the process ends, over TLS with
/// `tls`'s certificate of the moment when given, surveying the cluster in
/// the background.
pub async fn serve(listener: TcpListener, console: Arc<Console>, tls: Option<Acceptors>) {
    tokio::spawn(console.clone().survey_forever());
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "console: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(held) = ConnectionHeld::take(&console, login::client_key(peer.ip())) else {
            tracing::debug!(%peer, "console: too many connections from one address");
            continue;
        };
        let console = console.clone();
        let acceptor = tls.as_ref().map(|tls| http1_only(&tls()));
        tokio::spawn(async move {
            // The connection's whole life, the TLS handshake included.
            let served = tokio::time::timeout(CONNECTION_MAX_AGE, async move {
                let Some(acceptor) = acceptor else { return connection(stream, console, peer, false).await };
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => connection(stream, console, peer, true).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "console: TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "console: TLS handshake timed out"),
                }
            });
            let _ = served.await;
            drop(held);
            drop(slot);
        });
    }
}

/// `acceptor` offering HTTP/1.1 alone in ALPN: the console speaks no
/// HTTP/2, which a certificate shared with the S3 gateway offers first.
fn http1_only(acceptor: &tokio_rustls::TlsAcceptor) -> tokio_rustls::TlsAcceptor {
    let mut config = tokio_rustls::rustls::ServerConfig::clone(acceptor.config());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Serves the requests of one connection.
async fn connection<S>(stream: S, console: Arc<Console>, peer: std::net::SocketAddr, secure: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let console = console.clone();
        async move { Ok::<_, Infallible>(console.answer(req, peer.ip(), secure).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, %peer, "console connection");
    }
}

/// The session cookie carrying `token` for `max_age_s` (0: ended), only
/// over TLS when the console is served so.
fn cookie(token: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}", login::COOKIE)
}

/// One of a client's connections (by [`login::client_key`]), counted
/// until dropped.
struct ConnectionHeld {
    console: Arc<Console>,
    addr: IpAddr,
}

impl ConnectionHeld {
    /// Counts a connection from `addr`; `None` when it holds its most.
    fn take(console: &Arc<Console>, addr: IpAddr) -> Option<Self> {
        let mut open = console.connections.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(addr).or_insert(0);
        if *n >= CONNECTIONS_PER_ADDR_MAX {
            return None;
        }
        *n += 1;
        Some(Self { console: console.clone(), addr })
    }
}

impl Drop for ConnectionHeld {
    fn drop(&mut self) {
        let mut open = self.console.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// Whether a form post comes from this console's own pages, as far as the
/// browser says: `Sec-Fetch-Site` must be `same-origin` where the browser
/// sends it (HTTPS and localhost), otherwise `Origin` must name the host
/// the request was sent to. A client that sends neither (curl, a script) is
/// not a browser another site can drive.
fn same_origin(headers: &http::HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).map(|h| h.as_bytes()).unwrap_or_default();
    let origin = origin.as_bytes();
    let authority = origin.strip_prefix(b"http://").or_else(|| origin.strip_prefix(b"https://"));
    authority.is_some_and(|a| !host.is_empty() && a == host)
}

fn unavailable(path: &str, user: &str, e: &ConsoleError) -> Reply {
    let body = format!("<p class=\"problem\">{}</p>", html::esc(&e.to_string()));
    page(StatusCode::SERVICE_UNAVAILABLE, html::page("Unavailable", path, user, None, &body))
}

/// The fields of an `application/x-www-form-urlencoded` body; a field
/// that does not decode is left out.
fn form_fields(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let decode = |s: &str| urlencoding::decode(&s.replace('+', " ")).ok().map(|c| c.into_owned());
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn cookie_token(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| login::token_of(v).map(String::from))
}

fn response(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut reply = Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with the
    // console's own form posts, which the origin check must then refuse.
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("same-origin"));
    // Nothing from elsewhere, no inline script: what the pages use is
    // served here.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    reply
}

fn page(status: StatusCode, html: String) -> Reply {
    response(status, "text/html; charset=utf-8", html)
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    response(status, "text/plain; charset=utf-8", body)
}

fn asset(kind: &'static str, body: &'static str) -> Reply {
    response(StatusCode::OK, kind, body)
}

fn redirect(to: &'static str) -> Reply {
    let mut reply = response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    reply.headers_mut().insert(header::LOCATION, header::HeaderValue::from_static(to));
    reply
}

fn set_cookie(reply: &mut Reply, cookie: &str) {
    if let Ok(value) = header::HeaderValue::from_str(cookie) {
        reply.headers_mut().insert(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), http::HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn the_cookie_is_secure_over_tls_only() {
        assert_eq!(cookie("ab", 60, false), "chuyi_console=ab; Path=/; HttpOnly; SameSite=Strict; Max-Age=60");
        assert!(cookie("ab", 60, true).ends_with("; Max-Age=60; Secure"));
    }

    #[test]
    fn a_post_from_another_site_is_refused() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin"), ("host", "a:1")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[("origin", "http://a:1"), ("host", "a:1")])));
        assert!(!same_origin(&headers(&[("origin", "http://evil:1"), ("host", "a:1")])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "a:1")])));
        assert!(!same_origin(&headers(&[("origin", "http://a:1")])), "no host to compare with");
        assert!(same_origin(&headers(&[("host", "a:1")])), "no browser headers: not a browser");
        // Plain HTTP to a remote host: no Sec-Fetch-Site, the real Origin.
        assert!(same_origin(&headers(&[("origin", "http://10.0.0.5:7202"), ("host", "10.0.0.5:7202")])));
    }

    #[test]
    fn a_form_decodes_plus_and_percent_and_skips_what_does_not() {
        let form = form_fields(b"access_key=AK%2F1&secret_key=a+b%3D&junk&bad=%FF%FE");
        assert_eq!(form.get("access_key").map(String::as_str), Some("AK/1"));
        assert_eq!(form.get("secret_key").map(String::as_str), Some("a b="));
        assert!(!form.contains_key("junk") && !form.contains_key("bad"), "{form:?}");
        assert!(form_fields(b"").is_empty());
    }
}
