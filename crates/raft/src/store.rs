//! The durable Raft store: log, vote, committed id and the state machine, all in one redb
//! file. Every write is a committed redb transaction (fsync) before openraft is told it
//! is done, so a crash loses nothing acknowledged.
//!
//! Tables: `raft_log` (index -> JSON entry), `raft_meta` (vote, committed, last purged),
//! `state_machine` (applied log id, membership, [`ClusterState`], last snapshot).
use std::fmt::Debug;
use std::io;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use holdfast_state::{ClusterState, Response};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch, Mutex};

use crate::TypeConfig;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const SM: TableDefinition<&str, &[u8]> = TableDefinition::new("state_machine");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";
const KEY_APPLIED: &str = "applied";
const KEY_MEMBERSHIP: &str = "membership";
const KEY_STATE: &str = "state";
const KEY_SNAPSHOT: &str = "snapshot";

/// Errors opening the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open raft store {path}: {source}")]
    Open { path: String, source: redb::DatabaseError },
    #[error("raft store {path}: {message}")]
    Corrupt { path: String, message: String },
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    serde_json::from_slice(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Opens or creates the store file; returns the log store and the state machine.
pub fn open(path: &Path) -> Result<(LogStore, StateMachine), StoreError> {
    let shown = path.display().to_string();
    let db = Database::create(path).map_err(|source| StoreError::Open { path: shown.clone(), source })?;
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt { path: shown.clone(), message: e.to_string() };
    // Create the tables so readers never meet a missing one.
    let txn = db.begin_write().map_err(|e| corrupt(&e))?;
    {
        txn.open_table(LOG).map_err(|e| corrupt(&e))?;
        txn.open_table(META).map_err(|e| corrupt(&e))?;
        txn.open_table(SM).map_err(|e| corrupt(&e))?;
    }
    txn.commit().map_err(|e| corrupt(&e))?;
    let db = Arc::new(db);

    let inner = SmInner::load(&db).map_err(|e| corrupt(&e))?;
    let (tx, _) = watch::channel(Arc::new(inner.state.clone()));
    let (events, _) = broadcast::channel(1024);
    let sm = StateMachine { db: db.clone(), inner: Arc::new(Mutex::new(inner)), publish: Arc::new(tx), events };
    Ok((LogStore { db }, sm))
}

fn get<T: DeserializeOwned>(db: &Database, table: TableDefinition<&str, &[u8]>, key: &str) -> io::Result<Option<T>> {
    let txn = db.begin_read().map_err(io_err)?;
    let t = txn.open_table(table).map_err(io_err)?;
    match t.get(key).map_err(io_err)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// Runs a blocking redb write off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io_err)?
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    fn put_meta<T: Serialize>(&self, key: &'static str, value: &T) -> io::Result<()> {
        let bytes = encode(value)?;
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut t = txn.open_table(META).map_err(io_err)?;
            t.insert(key, bytes.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(LOG).map_err(io_err)?;
        let mut out = Vec::new();
        for item in t.range(range).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        get(&self.db, META, KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<TypeConfig>> = get(&self.db, META, KEY_PURGED)?;
        let txn = self.db.begin_read().map_err(io_err)?;
        let t = txn.open_table(LOG).map_err(io_err)?;
        let last = match t.last().map_err(io_err)? {
            Some((_, v)) => Some(decode::<EntryOf<TypeConfig>>(v.value())?.log_id()),
            None => None,
        };
        Ok(LogState { last_log_id: last.or(last_purged_log_id), last_purged_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        let this = self.clone();
        let vote = *vote;
        blocking(move || this.put_meta(KEY_VOTE, &vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<TypeConfig>>) -> Result<(), io::Error> {
        let this = self.clone();
        blocking(move || this.put_meta(KEY_COMMITTED, &committed)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(get::<Option<LogIdOf<TypeConfig>>>(&self.db, META, KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + OptionalSend,
    {
        let mut encoded = Vec::new();
        for e in entries {
            encoded.push((e.index(), encode(&e)?));
        }
        let db = self.db.clone();
        let res = blocking(move || {
            let txn = db.begin_write().map_err(io_err)?;
            {
                let mut t = txn.open_table(LOG).map_err(io_err)?;
                for (i, bytes) in &encoded {
                    t.insert(*i, bytes.as_slice()).map_err(io_err)?;
                }
            }
            txn.commit().map_err(io_err)
        })
        .await;
        match res {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<TypeConfig>>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(io_err)?;
            {
                let mut t = txn.open_table(LOG).map_err(io_err)?;
                t.retain_in(from.., |_, _| false).map_err(io_err)?;
            }
            txn.commit().map_err(io_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        let db = self.db.clone();
        blocking(move || {
            let bytes = encode(&log_id)?;
            let txn = db.begin_write().map_err(io_err)?;
            {
                let mut m = txn.open_table(META).map_err(io_err)?;
                m.insert(KEY_PURGED, bytes.as_slice()).map_err(io_err)?;
                let mut t = txn.open_table(LOG).map_err(io_err)?;
                t.retain_in(..=log_id.index(), |_, _| false).map_err(io_err)?;
            }
            txn.commit().map_err(io_err)
        })
        .await
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<TypeConfig>,
    data: Vec<u8>,
}

struct SmInner {
    applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    state: ClusterState,
}

impl SmInner {
    fn load(db: &Database) -> io::Result<SmInner> {
        Ok(SmInner {
            applied: get::<Option<LogIdOf<TypeConfig>>>(db, SM, KEY_APPLIED)?.flatten(),
            membership: get(db, SM, KEY_MEMBERSHIP)?.unwrap_or_default(),
            state: get(db, SM, KEY_STATE)?.unwrap_or_default(),
        })
    }

    fn save(&self, db: &Database, snapshot: Option<&StoredSnapshot>) -> io::Result<()> {
        let applied = encode(&self.applied)?;
        let membership = encode(&self.membership)?;
        let state = encode(&self.state)?;
        let snap = snapshot.map(encode).transpose()?;
        let txn = db.begin_write().map_err(io_err)?;
        {
            let mut t = txn.open_table(SM).map_err(io_err)?;
            t.insert(KEY_APPLIED, applied.as_slice()).map_err(io_err)?;
            t.insert(KEY_MEMBERSHIP, membership.as_slice()).map_err(io_err)?;
            t.insert(KEY_STATE, state.as_slice()).map_err(io_err)?;
            if let Some(s) = &snap {
                t.insert(KEY_SNAPSHOT, s.as_slice()).map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)
    }
}

/// The state machine: a [`ClusterState`] persisted after every applied batch.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    inner: Arc<Mutex<SmInner>>,
    publish: Arc<watch::Sender<Arc<ClusterState>>>,
    events: broadcast::Sender<AppliedEvents>,
}

/// The events one applied log entry says (`holdfast_state::events`), once it is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEvents {
    /// The entry's log index: the same events have the same index on every node.
    pub index: u64,
    pub events: Vec<holdfast_state::events::Happened>,
}

impl StateMachine {
    /// A receiver of every newly applied state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.publish.subscribe()
    }

    /// A sender of the events of entries as they are applied (subscribe to receive).
    pub fn events(&self) -> broadcast::Sender<AppliedEvents> {
        self.events.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Cursor<Vec<u8>>>, io::Error> {
        let inner = self.inner.lock().await;
        let data = encode(&inner.state)?;
        let meta =
            SnapshotMetaOf::<TypeConfig> { last_log_id: inner.applied, last_membership: inner.membership.clone() };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        let db = self.db.clone();
        let bytes = encode(&stored)?;
        blocking(move || {
            let txn = db.begin_write().map_err(io_err)?;
            {
                let mut t = txn.open_table(SM).map_err(io_err)?;
                t.insert(KEY_SNAPSHOT, bytes.as_slice()).map_err(io_err)?;
            }
            txn.commit().map_err(io_err)
        })
        .await?;
        Ok(SnapshotOf::<TypeConfig, _> { meta, snapshot: Cursor::new(data) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let inner = self.inner.lock().await;
        Ok((inner.applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        let mut responders = Vec::new();
        let mut said = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            inner.applied = Some(entry.log_id());
            let response = match &entry.payload {
                EntryPayload::Blank => Response::Nothing,
                EntryPayload::Normal(req) => {
                    // The state before, only for commands that may say something (most
                    // entries are routine and copy nothing).
                    let before = holdfast_state::events::may_describe(&req.command).then(|| inner.state.clone());
                    let r = inner.state.apply(req);
                    tracing::debug!(%req, ?r, "applied");
                    if let Some(before) = before {
                        let events = holdfast_state::events::describe(&before, &req.command, &inner.state);
                        if !events.is_empty() {
                            said.push(AppliedEvents { index: entry.log_id().index, events });
                        }
                    }
                    r
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id()), m.clone());
                    Response::Nothing
                }
            };
            if let Some(r) = responder {
                responders.push((r, response));
            }
        }
        // Persist before answering: an acknowledged change is on disk.
        let db = self.db.clone();
        let snapshot =
            SmInner { applied: inner.applied, membership: inner.membership.clone(), state: inner.state.clone() };
        blocking(move || snapshot.save(&db, None)).await?;
        self.publish.send_replace(Arc::new(inner.state.clone()));
        drop(inner);
        for e in said {
            // Nobody listening (yet): nothing to keep.
            let _ = self.events.send(e);
        }
        for (r, response) in responders {
            r.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let state: ClusterState = decode(&data)?;
        let mut inner = self.inner.lock().await;
        inner.applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.state = state;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let db = self.db.clone();
        let copy = SmInner { applied: inner.applied, membership: inner.membership.clone(), state: inner.state.clone() };
        blocking(move || copy.save(&db, Some(&stored))).await?;
        self.publish.send_replace(Arc::new(inner.state.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        let stored: Option<StoredSnapshot> = get(&self.db, SM, KEY_SNAPSHOT)?;
        Ok(stored.map(|s| SnapshotOf::<TypeConfig, _> { meta: s.meta, snapshot: Cursor::new(s.data) }))
    }
}

#[cfg(test)]
mod tests {
    //! Runs openraft's own storage test suite against this store.
    use super::*;
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::StorageError;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let read_err =
                |e: io::Error| StorageError::from_io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Read, e);
            let dir = tempfile::tempdir().map_err(read_err)?;
            let (log, sm) = open(&dir.path().join("raft.redb")).map_err(|e| read_err(io_err(e)))?;
            Ok((dir, log, sm))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
        Suite::test_all(Builder).await
    }
}

/// What [`force_single_voter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The index of the membership entry written.
    pub index: u64,
    /// The voters of the configuration it replaced.
    pub old_voters: Vec<u64>,
}

/// Disaster recovery, with the node stopped: appends a membership entry that makes
/// `me` (at `addr`) the only voter, after everything this store holds. Raft takes the
/// last membership entry of a log as the configuration at once, committed or not, so on
/// the next start this node elects itself and commits the entry (and every entry before
/// it that it has) alone; the other nodes are added back as learners by the leader.
/// Entries that only the lost voters had are gone; that is the price, and why it asks.
pub fn force_single_voter(path: &Path, me: u64, addr: &str) -> Result<Recovered, StoreError> {
    let shown = path.display().to_string();
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt { path: shown.clone(), message: e.to_string() };
    let db = Database::create(path).map_err(|source| StoreError::Open { path: shown.clone(), source })?;
    let txn = db.begin_write().map_err(|e| corrupt(&e))?;
    let (index, old_voters) = {
        let mut log = txn.open_table(LOG).map_err(|e| corrupt(&e))?;
        let meta = txn.open_table(META).map_err(|e| corrupt(&e))?;
        let sm = txn.open_table(SM).map_err(|e| corrupt(&e))?;
        let read = |t: &redb::Table<&str, &[u8]>, key: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(t.get(key).map_err(|e| corrupt(&e))?.map(|v| v.value().to_vec()))
        };
        // The last log id anywhere: the log's tail, else what was purged or applied.
        let last_entry: Option<EntryOf<TypeConfig>> = match log.last().map_err(|e| corrupt(&e))? {
            Some((_, v)) => Some(decode(v.value()).map_err(|e| corrupt(&e))?),
            None => None,
        };
        let mut last: Option<LogIdOf<TypeConfig>> = last_entry.as_ref().map(|e| e.log_id());
        let mut membership: Option<StoredMembershipOf<TypeConfig>> = None;
        if let Some(b) = read(&meta, KEY_PURGED)? {
            let purged: LogIdOf<TypeConfig> = decode(&b).map_err(|e| corrupt(&e))?;
            last = last.max(Some(purged));
        }
        if let Some(b) = read(&sm, KEY_APPLIED)? {
            let applied: Option<LogIdOf<TypeConfig>> = decode(&b).map_err(|e| corrupt(&e))?;
            last = last.max(applied);
        }
        if let Some(b) = read(&sm, KEY_MEMBERSHIP)? {
            membership = Some(decode(&b).map_err(|e| corrupt(&e))?);
        }
        let Some(last) = last else {
            return Err(corrupt(&"the store is empty: this data directory never was a cluster member"));
        };
        // The configuration being replaced: the log's last membership entry, else the
        // state machine's.
        let mut old: Option<Vec<u64>> = None;
        for item in log.iter().map_err(|e| corrupt(&e))?.rev() {
            let (_, v) = item.map_err(|e| corrupt(&e))?;
            let e: EntryOf<TypeConfig> = decode(v.value()).map_err(|e| corrupt(&e))?;
            if let EntryPayload::Membership(m) = &e.payload {
                old = Some(m.voter_ids().collect());
                break;
            }
        }
        let old = old.or_else(|| membership.map(|m| m.membership().voter_ids().collect())).unwrap_or_default();
        let config = openraft::Membership::new(
            vec![std::collections::BTreeSet::from([me])],
            std::collections::BTreeMap::from([(me, openraft::BasicNode::new(addr))]),
        )
        .map_err(|e| corrupt(&e))?;
        let index = last.index() + 1;
        let entry = EntryOf::<TypeConfig>::new_membership(openraft::LogId::new(last.leader_id, index), config);
        let bytes = encode(&entry).map_err(|e| corrupt(&e))?;
        log.insert(index, bytes.as_slice()).map_err(|e| corrupt(&e))?;
        (index, old)
    };
    txn.commit().map_err(|e| corrupt(&e))?;
    Ok(Recovered { index, old_voters })
}
