//! The RPC service of a member: Raft traffic in, client requests answered.
//!
//! Writes go through the [`Proposer`]; reads first confirm leadership with a
//! quorum (openraft's `ensure_linearizable`) and wait for this member to
//! apply up to the commit point, so a deposed leader (frozen, partitioned)
//! answers `NotLeader` instead of a stale value. Followers answer writes and
//! reads with `NotLeader` naming the leader; clients follow it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chuyi_common::credential::Principal;
use chuyi_common::limits::RPC_PAYLOAD_MAX_BYTES;
use chuyi_common::rpc::Service;
use chuyi_common::seal::SealKey;
use chuyi_common::secret::fill_random;
use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};

use super::leader_addr;
use super::liveness::{must_commit, quorum_fresh, Liveness};
use super::proposer::Proposer;
use crate::access;
use crate::proto::{
    self, ApiReply, ApiResult, Channel, Envelope, MemberInfo, MetaCall, PeerCall, PeerReply, PoolHealth, Query,
    StatusReport, ENVELOPE, RAFT_ENVELOPE, WATCH_WAIT_MAX_MS,
};
use crate::qos::Frontends;
use crate::state::model::PgHealth;
use crate::state::{names, Command, Kind, MetaError, Reply, Request, EXPIRE_SCAN_MAX, RETIRE_SCAN_MAX};
use crate::store::{StateReader, StoreError, TypeConfig};
use chuyi_meta_api::qos::QosReport;

/// How long one AddMember waits for a learner already added to catch up.
const LEARNER_WAIT: Duration = Duration::from_secs(30);

pub use chuyi_meta_api::limits::RECORDS_PAGE_MAX;

/// A page of at most [`RECORDS_PAGE_MAX`] records, and one more so the
/// caller can tell whether more remain.
fn page(max: u32) -> usize {
    max.clamp(1, RECORDS_PAGE_MAX + 1) as usize
}

pub struct MetaService {
    id: u64,
    raft: Raft<TypeConfig>,
    reader: StateReader,
    proposer: Proposer,
    seal: SealKey,
    liveness: Arc<Liveness>,
    /// A storage node silent this long is marked down; a leader takes
    /// heartbeats only while a quorum acknowledged it within half of it.
    heartbeat_timeout: Duration,
    /// What frontends reported of the QoS rules they serve (leader only).
    qos: Frontends,
}

impl std::fmt::Debug for MetaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaService").field("id", &self.id).finish_non_exhaustive()
    }
}

fn store_error(e: StoreError) -> MetaError {
    MetaError::Internal(e.to_string())
}

impl MetaService {
    pub(crate) fn new(
        id: u64,
        raft: Raft<TypeConfig>,
        reader: StateReader,
        proposer: Proposer,
        seal: SealKey,
        liveness: Arc<Liveness>,
        heartbeat_timeout: Duration,
    ) -> Self {
        Self { id, raft, reader, proposer, seal, liveness, heartbeat_timeout, qos: Frontends::default() }
    }

    async fn handle(&self, call: MetaCall) -> ApiResult {
        match call {
            MetaCall::Write(Request::Heartbeat { id, disks }) => self.heartbeat(id, disks).await,
            // The caller's role was checked against the request; the log
            // gets its own command for it.
            MetaCall::Write(request) => self.proposer.propose(Command::from(request)).await.map(ApiReply::Written),
            MetaCall::Read(query) => self.read(query).await,
            MetaCall::WatchMap { known_epoch, wait_ms } => self.watch(known_epoch, wait_ms).await,
            MetaCall::Status => self.status().map(|s| ApiReply::Status(Box::new(s))),
            MetaCall::CreateUser { name, admin } => self.create_user(name, admin).await,
            MetaCall::AddMember { id, addr } => self.add_member(id, addr).await,
            MetaCall::RemoveMember { id } => self.remove_member(id).await,
            MetaCall::BuildSnapshot => self.build_snapshot().await,
            MetaCall::QosExchange(report) => self.qos_exchange(report),
            MetaCall::QosStatus => self.qos_status(),
        }
    }

    async fn handle_peer(&self, call: PeerCall) -> PeerReply {
        match call {
            PeerCall::AppendEntries(rpc) => PeerReply::AppendEntries(self.raft.append_entries(rpc).await),
            PeerCall::Vote(rpc) => PeerReply::Vote(self.raft.vote(rpc).await),
            PeerCall::InstallSnapshot(rpc) => PeerReply::InstallSnapshot(self.raft.install_snapshot(rpc).await),
        }
    }

    /// A client's call: checked against the caller's role, then served.
    async fn api(&self, caller: &Principal, envelope: Envelope, payload: &[u8]) -> ApiResult {
        let call = proto::decode::<MetaCall>(envelope, payload).map_err(|e| MetaError::Malformed(e.to_string()))?;
        if let Err(refused) = access::check(caller, &call) {
            tracing::warn!(%caller, error = %refused, "refused a call outside the caller's role");
            return Err(refused);
        }
        self.handle(call).await
    }

    /// Raft traffic: from members only.
    async fn peer(&self, caller: &Principal, envelope: Envelope, payload: &[u8]) -> PeerReply {
        if let Err(refused) = access::check_peer(caller) {
            tracing::warn!(%caller, error = %refused, "refused Raft traffic from a non-member");
            return PeerReply::Refused(refused);
        }
        match proto::decode::<PeerCall>(envelope, payload) {
            Ok(call) => self.handle_peer(call).await,
            Err(e) => PeerReply::Refused(MetaError::Malformed(e.to_string())),
        }
    }

    /// A storage node's heartbeat: noted in the leader's memory, committed
    /// only when it changes the state (liveness.rs). Followers, and a
    /// leader no quorum has acknowledged lately, send the node elsewhere.
    async fn heartbeat(&self, id: chuyi_common::ids::NodeId, disks: Vec<crate::state::model::DiskRecord>) -> ApiResult {
        let m = self.raft.metrics().borrow().clone();
        let acked = quorum_fresh(m.millis_since_quorum_ack, self.heartbeat_timeout);
        if m.current_leader != Some(self.id) || !acked {
            // The proposer answers NotLeader, or fails to commit without a
            // quorum: either way the node tries another member.
            return self.proposer.propose(Command::Heartbeat { id, disks }).await.map(ApiReply::Written);
        }
        let since_commit = self.liveness.heard(id);
        let Some(record) = self.reader.node(id).map_err(store_error)? else {
            return Err(MetaError::UnknownNode(id));
        };
        if !must_commit(&record, &disks, since_commit) {
            return Ok(ApiReply::Written(Reply::Done));
        }
        let reply = self.proposer.propose(Command::Heartbeat { id, disks }).await?;
        self.liveness.committed(id);
        Ok(ApiReply::Written(reply))
    }

    /// Confirms with a quorum that this member still leads, then waits
    /// until it has applied everything committed before the read.
    async fn linearize(&self) -> Result<(), MetaError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(MetaError::NotLeader { leader: f.leader_node.map(|n| n.addr).or_else(|| leader_addr(&self.raft)) })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
                Err(MetaError::Unavailable(format!("no quorum confirms this leader: {q}")))
            }
            Err(RaftError::Fatal(f)) => Err(MetaError::Unavailable(f.to_string())),
        }
    }

    async fn read(&self, query: Query) -> ApiResult {
        self.linearize().await?;
        let r = &self.reader;
        let missing = |kind, name: &str| MetaError::not_found(kind, name);
        Ok(match query {
            Query::Map => ApiReply::Map(r.map().map_err(store_error)?),
            Query::Pools => ApiReply::Pools(r.pools().map_err(store_error)?),
            Query::PoolDefaults(name) => ApiReply::PoolDefaults(
                r.pool_defaults(&name).map_err(store_error)?.ok_or_else(|| missing(Kind::Pool, &name))?,
            ),
            Query::Volume(name) => {
                ApiReply::Volume(r.volume(&name).map_err(store_error)?.ok_or_else(|| missing(Kind::Volume, &name))?)
            }
            Query::Volumes => ApiReply::Volumes(r.volumes().map_err(store_error)?),
            Query::User(key) => {
                ApiReply::User(r.user(&key).map_err(store_error)?.ok_or_else(|| missing(Kind::AccessKey, &key))?)
            }
            Query::Users => ApiReply::Users(r.users().map_err(store_error)?),
            Query::Bucket(name) => {
                ApiReply::Bucket(r.bucket(&name).map_err(store_error)?.ok_or_else(|| missing(Kind::Bucket, &name))?)
            }
            Query::Buckets => ApiReply::Buckets(r.buckets().map_err(store_error)?),
            Query::Object { bucket, key, version_id } => {
                if r.bucket(&bucket).map_err(store_error)?.is_none() {
                    return Err(missing(Kind::Bucket, &bucket));
                }
                let found = r.object(&bucket, &key, version_id.as_deref()).map_err(store_error)?;
                match (found, version_id) {
                    (Some(o), _) => ApiReply::Object(o),
                    (None, Some(v)) => return Err(missing(Kind::Version, &format!("{bucket}/{key}?versionId={v}"))),
                    (None, None) => return Err(missing(Kind::Object, &format!("{bucket}/{key}"))),
                }
            }
            Query::List(request) => {
                if r.bucket(&request.bucket).map_err(store_error)?.is_none() {
                    return Err(missing(Kind::Bucket, &request.bucket));
                }
                ApiReply::Listing(r.list(&request).map_err(store_error)?)
            }
            Query::BucketUsage(bucket) => {
                if r.bucket(&bucket).map_err(store_error)?.is_none() {
                    return Err(missing(Kind::Bucket, &bucket));
                }
                ApiReply::BucketUsage(r.bucket_usage(&bucket).map_err(store_error)?)
            }
            Query::Upload { bucket, key, upload_id } => ApiReply::Upload(
                r.upload(&bucket, &key, &upload_id)
                    .map_err(store_error)?
                    .ok_or_else(|| missing(Kind::Upload, &format!("{bucket}/{key}?uploadId={upload_id}")))?,
            ),
            Query::Parts { upload_id, after, max } => {
                ApiReply::Parts(r.parts(&upload_id, after, page(max)).map_err(store_error)?)
            }
            Query::Uploads { bucket, prefix, after, max } => {
                let after = after.as_ref().map(|(k, u)| (k.as_str(), u.as_str()));
                ApiReply::Uploads(r.uploads(&bucket, &prefix, after, page(max)).map_err(store_error)?)
            }
            Query::Garbage { max } => ApiReply::Garbage(r.garbage(None, page(max)).map_err(store_error)?),
            Query::GarbageAfter { max, after } => ApiReply::Garbage(r.garbage(after, page(max)).map_err(store_error)?),
            Query::ExpiredPending { now_ms } => {
                ApiReply::Count(r.expired_pending(now_ms, EXPIRE_SCAN_MAX).map_err(store_error)?)
            }
            Query::SparsePacks { after, max } => {
                ApiReply::Packs(r.sparse_packs(after, page(max)).map_err(store_error)?)
            }
            Query::PackRefs { owner, from, max } => {
                ApiReply::PackRefs(r.pack_refs(owner, from, page(max)).map_err(store_error)?)
            }
            Query::BucketConfig { bucket, kind } => {
                if r.bucket(&bucket).map_err(store_error)?.is_none() {
                    return Err(missing(Kind::Bucket, &bucket));
                }
                ApiReply::Document(r.bucket_config(&bucket, kind).map_err(store_error)?)
            }
            Query::ObjectLock(bucket) => {
                if r.bucket(&bucket).map_err(store_error)?.is_none() {
                    return Err(missing(Kind::Bucket, &bucket));
                }
                ApiReply::ObjectLock(r.object_lock(&bucket).map_err(store_error)?)
            }
            Query::Snapshots(volume) => {
                let known = r.volume(&volume).map_err(store_error)?.is_some()
                    || r.trash().map_err(store_error)?.1.iter().any(|e| e.volume.name == volume);
                if !known {
                    return Err(missing(Kind::Volume, &volume));
                }
                ApiReply::Snapshots(r.snapshots(&volume).map_err(store_error)?)
            }
            Query::SnapshotsOf(owner) => ApiReply::Snapshots(r.snapshots_of(owner).map_err(store_error)?),
            Query::SnapshotWork => {
                let (due, expired) = r.snapshot_work(chuyi_common::clock::unix_ms()).map_err(store_error)?;
                ApiReply::SnapshotWork { due, expired }
            }
            Query::SnapshotSchedules => ApiReply::SnapshotSchedules(r.snapshot_schedules().map_err(store_error)?),
            Query::BackupSchedules => ApiReply::BackupSchedules(r.backup_schedules().map_err(store_error)?),
            Query::Trash => {
                let (retention_ms, entries) = r.trash().map_err(store_error)?;
                ApiReply::Trash { retention_ms, entries }
            }
            Query::QosRules => {
                let (version, rules) = r.qos_rules().map_err(store_error)?;
                ApiReply::QosRules { version, rules }
            }
            Query::FreeablePacks { now_ms, grace_ms } => {
                ApiReply::Count(r.freeable_packs(now_ms, grace_ms, RETIRE_SCAN_MAX).map_err(store_error)?)
            }
        })
    }

    /// QoS reports meet in the leader's memory: elsewhere, `NotLeader`.
    fn leading(&self) -> Result<(), MetaError> {
        if self.raft.metrics().borrow().current_leader == Some(self.id) {
            Ok(())
        } else {
            Err(MetaError::NotLeader { leader: leader_addr(&self.raft) })
        }
    }

    fn qos_exchange(&self, report: QosReport) -> ApiResult {
        self.leading()?;
        let (version, rules) = self.reader.qos_rules().map_err(store_error)?;
        Ok(ApiReply::QosGrant(self.qos.exchange(report, Instant::now(), version, &rules)))
    }

    fn qos_status(&self) -> ApiResult {
        self.leading()?;
        let (_, rules) = self.reader.qos_rules().map_err(store_error)?;
        Ok(ApiReply::QosStatus(self.qos.status(Instant::now(), rules)))
    }

    async fn watch(&self, known_epoch: u64, wait_ms: u32) -> ApiResult {
        let wait = Duration::from_millis(u64::from(wait_ms.min(WATCH_WAIT_MAX_MS)));
        self.reader.wait_epoch_above(known_epoch, wait).await;
        Ok(ApiReply::Map(self.reader.map().map_err(store_error)?))
    }

    /// openraft's view of this member now.
    pub(crate) fn raft_metrics(&self) -> openraft::RaftMetrics<u64, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Proposals this member made and the commands in them.
    pub(crate) fn proposal_counts(&self) -> &super::proposer::ProposalCounts {
        self.proposer.counts()
    }

    pub(crate) fn status(&self) -> Result<StatusReport, MetaError> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberInfo { id: *id, addr: node.addr.clone(), voter: voters.contains(id) })
            .collect();
        let map = self.reader.map().map_err(store_error)?;
        let pools = map
            .pools
            .iter()
            .map(|pool| {
                let mut health = PoolHealth { pool: pool.clone(), clean: 0, recovering: 0, degraded: 0 };
                for pg in map.pgs.iter().filter(|pg| pg.pool == pool.id) {
                    match pg.health(pool) {
                        PgHealth::Clean => health.clean += 1,
                        PgHealth::Recovering => health.recovering += 1,
                        PgHealth::Degraded => health.degraded += 1,
                    }
                }
                health
            })
            .collect();
        Ok(StatusReport {
            member: self.id,
            leader: m.current_leader,
            term: m.current_term,
            members,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            map,
            pools,
            packs: self.reader.pack_totals().map_err(store_error)?,
        })
    }

    async fn create_user(&self, name: String, admin: bool) -> ApiResult {
        names::check_name("user name", &name)?;
        let access_key = random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 20);
        let secret_key = random_text(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 40);
        let secret = self.seal.seal(secret_key.as_bytes());
        match self.proposer.propose(Command::CreateUser { name, access_key, secret, admin }).await? {
            Reply::User(user) => Ok(ApiReply::UserCreated { user, secret_key }),
            other => Err(MetaError::Internal(format!("create user applied as {other:?}"))),
        }
    }

    async fn add_member(&self, id: u64, addr: String) -> ApiResult {
        addr.parse::<chuyi_common::rpc::Endpoint>().map_err(|e| MetaError::invalid("member address", e.0))?;
        let to_api = |e| membership_error(&self.raft, e);
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let is_voter = membership.membership().voter_ids().any(|v| v == id);
        let known = membership.membership().get_node(&id).map(|n| n.addr.clone());
        match add_step(is_voter, known.as_deref(), &addr) {
            AddStep::Done => return Ok(ApiReply::Done),
            AddStep::WaitForLearner => self.learner_caught_up(id).await?,
            AddStep::AddLearner => {
                self.raft.add_learner(id, BasicNode::new(addr), true).await.map(drop).map_err(to_api)?
            }
        }
        // Read again: the membership may have changed while the learner
        // caught up, and a stale set would undo that change.
        let mut voters: BTreeSet<u64> =
            self.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        voters.insert(id);
        self.raft.change_membership(voters, false).await.map_err(to_api)?;
        Ok(ApiReply::Done)
    }

    /// Waits until learner `id` has every entry this leader had when asked,
    /// at most [`LEARNER_WAIT`] (the caller asks again), or until this
    /// member stops leading.
    async fn learner_caught_up(&self, id: u64) -> Result<(), MetaError> {
        let me = self.id;
        let target = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        let done = move |m: &openraft::RaftMetrics<u64, BasicNode>| {
            let matched = m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten());
            m.current_leader != Some(me) || matched.is_some_and(|l| l.index >= target)
        };
        let waited = self.raft.wait(Some(LEARNER_WAIT)).metrics(done, "learner caught up").await;
        match waited {
            Ok(m) if m.current_leader == Some(me) => Ok(()),
            Ok(_) => Err(MetaError::NotLeader { leader: leader_addr(&self.raft) }),
            Err(e) => Err(MetaError::Unavailable(format!("learner {id} is still catching up: {e}"))),
        }
    }

    async fn build_snapshot(&self) -> ApiResult {
        self.raft.trigger().snapshot().await.map_err(|e| MetaError::Unavailable(e.to_string()))?;
        Ok(ApiReply::Done)
    }

    async fn remove_member(&self, id: u64) -> ApiResult {
        let mut voters: BTreeSet<u64> =
            self.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        if !voters.remove(&id) {
            return Err(MetaError::not_found(Kind::Member, id.to_string()));
        }
        if voters.is_empty() {
            return Err(MetaError::invalid("membership change", "the last member cannot be removed"));
        }
        self.raft.change_membership(voters, false).await.map_err(|e| membership_error(&self.raft, e))?;
        Ok(ApiReply::Done)
    }
}

/// What an AddMember does, given what the membership says of the member.
#[derive(Debug, PartialEq, Eq)]
enum AddStep {
    /// A retry whose first try finished: a voter at that address.
    Done,
    /// A retry while the learner catches up (a client gives up on an
    /// attempt after 5 s; a large state takes minutes). Adding it again
    /// would commit a membership entry, which restarts every replication
    /// stream and with it the snapshot being sent: the learner would never
    /// catch up.
    WaitForLearner,
    /// A new member, or one at a new address.
    AddLearner,
}

fn add_step(is_voter: bool, known_addr: Option<&str>, addr: &str) -> AddStep {
    match (is_voter, known_addr == Some(addr)) {
        (true, true) => AddStep::Done,
        (false, true) => AddStep::WaitForLearner,
        (_, false) => AddStep::AddLearner,
    }
}

/// A failed membership change as the client sees it: another member
/// leads; another change is still being committed (a retried AddMember
/// racing its first try: ask again, it will find the member added); or a
/// change that cannot be made.
fn membership_error(raft: &Raft<TypeConfig>, e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> MetaError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            MetaError::NotLeader { leader: f.leader_node.map(|n| n.addr).or_else(|| leader_addr(raft)) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(p))) => {
            MetaError::Unavailable(format!("a membership change is still in progress: {p}"))
        }
        other => MetaError::invalid("membership change", other.to_string()),
    }
}

/// `len` characters drawn uniformly from `alphabet` (whose length divides
/// 256, so no modulo bias).
fn random_text(alphabet: &[u8], len: usize) -> String {
    debug_assert!(256 % alphabet.len() == 0);
    let mut bytes = vec![0u8; len];
    fill_random(&mut bytes);
    bytes.iter().map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()])).collect()
}

impl Service for MetaService {
    type Request = Envelope;
    type Response = Envelope;

    async fn call(&self, caller: &Principal, envelope: Envelope, payload: Bytes) -> (Envelope, Bytes) {
        match envelope.channel {
            Channel::Api => {
                let reply = self.api(caller, envelope, &payload).await;
                let internal = |why: String| Err::<ApiReply, _>(MetaError::Internal(why));
                (ENVELOPE, encode_within_limit(&reply, internal))
            }
            Channel::Raft => {
                let reply = self.peer(caller, envelope, &payload).await;
                let internal = |why: String| PeerReply::Refused(MetaError::Internal(why));
                (RAFT_ENVELOPE, encode_within_limit(&reply, internal))
            }
        }
    }
}

/// `reply` encoded, or, when it cannot be or outgrows the RPC payload
/// limit, the encoding of `internal`'s error, refused here precisely rather
/// than as a frame error the client would take for a network failure.
fn encode_within_limit<T: serde::Serialize>(reply: &T, internal: impl Fn(String) -> T) -> Bytes {
    let fallback = |why: String| proto::encode(&internal(why)).unwrap_or_default();
    match proto::encode(reply) {
        Ok(b) if b.len() > RPC_PAYLOAD_MAX_BYTES => {
            fallback(format!("reply of {} bytes exceeds the {RPC_PAYLOAD_MAX_BYTES}-byte limit", b.len()))
        }
        Ok(b) => b,
        Err(e) => fallback(format!("encoding the reply: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_add_member_never_adds_again_what_is_there() {
        assert_eq!(add_step(false, None, "m4:1"), AddStep::AddLearner);
        assert_eq!(add_step(false, Some("m4:1"), "m4:1"), AddStep::WaitForLearner);
        assert_eq!(add_step(true, Some("m4:1"), "m4:1"), AddStep::Done);
        // A new address is a real change, voter or not.
        assert_eq!(add_step(false, Some("m4:1"), "m4:2"), AddStep::AddLearner);
        assert_eq!(add_step(true, Some("m4:1"), "m4:2"), AddStep::AddLearner);
    }
}
