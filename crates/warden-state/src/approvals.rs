//! Approvals: requests for a human to allow one statement (bound to the identity, the connection and the exact
//! statement and parameters, usable once) or to grant an identity an action on a connection or table for a while.
//!
//! The rules of deciding ([`ApprovalRow::vote`]) are plain functions over a row; the store applies them with
//! optimistic concurrency (each row has a `version`, and an update that finds another version retries), so
//! approvers voting at once on several gateways sharing a PostgreSQL store count exactly once each.

use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use time::OffsetDateTime;

use crate::sql::{get, micros, timestamp, Dialect, SqlText, Store};
use crate::StateError;

/// What an approval allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalKind {
    /// One statement, once: the exact text and parameters, by this identity on this connection.
    Statement,
    /// An action on a connection (or one table of it) for a while.
    Grant,
}

impl ApprovalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::Statement => "statement",
            ApprovalKind::Grant => "grant",
        }
    }
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for approvers, until `expires_at`.
    Pending,
    /// Approved: a statement approval is usable once until `expires_at`, a grant is in force until then.
    Approved,
    /// An approver denied it.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// A statement approval whose statement ran.
    Used,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Used => "used",
        }
    }

    pub fn parse(text: &str) -> Option<ApprovalStatus> {
        Some(match text {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "expired" => ApprovalStatus::Expired,
            "used" => ApprovalStatus::Used,
            _ => return None,
        })
    }
}

/// How many distinct members of `group` must approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Needed {
    pub group: String,
    pub approvals: u8,
}

/// One approver's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub by: String,
    pub approve: bool,
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The needed groups the approver was in when voting: what the vote counts towards.
    pub groups: Vec<String>,
}

/// Someone deciding: their identity name and groups.
#[derive(Debug, Clone, Copy)]
pub struct Voter<'a> {
    pub name: &'a str,
    pub groups: &'a [String],
}

/// A new request.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub kind: ApprovalKind,
    pub identity: String,
    pub connection: String,
    /// The policy action (`write`, `ddl`, …).
    pub action: String,
    pub tables: Vec<String>,
    /// The statement, masked (statement approvals).
    pub statement: Option<String>,
    /// Its parameters as text, masked (extended-protocol statements).
    pub parameters: Option<Vec<Option<String>>>,
    /// Hex SHA-256 of the exact statement and parameters: what a later statement must match.
    pub fingerprint: Option<String>,
    /// Why the requester asks (grants).
    pub reason: Option<String>,
    pub needed: Vec<Needed>,
    /// The policies whose forbid the approval lifts.
    pub policies: Vec<String>,
    pub session_id: Option<String>,
    pub requested_at: OffsetDateTime,
    /// Pending until then.
    pub expires_at: OffsetDateTime,
    /// For a grant: how long it lasts once approved.
    pub grant_seconds: Option<u64>,
}

/// A stored approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRow {
    pub id: String,
    pub kind: ApprovalKind,
    pub status: ApprovalStatus,
    pub identity: String,
    pub connection: String,
    pub action: String,
    pub tables: Vec<String>,
    pub statement: Option<String>,
    pub parameters: Option<Vec<Option<String>>>,
    pub fingerprint: Option<String>,
    pub reason: Option<String>,
    pub needed: Vec<Needed>,
    pub policies: Vec<String>,
    pub votes: Vec<Vote>,
    pub session_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// Pending: when the request lapses. Approved: when the approval (or grant) stops being usable.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub grant_seconds: Option<u64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub used_at: Option<OffsetDateTime>,
    /// Bumped by every update (optimistic concurrency).
    pub version: i64,
}

/// Why a vote was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    #[error("approval {id} is {status}, not pending")]
    NotPending { id: String, status: &'static str },
    #[error("approval {id} expired at {expires_at}")]
    Expired { id: String, expires_at: String },
    #[error("{by} cannot approve their own request {id}")]
    OwnRequest { id: String, by: String },
    #[error("{by} is not in an approver group of {id} (needs {groups})")]
    NotApprover { id: String, by: String, groups: String },
    #[error("{by} has already decided approval {id}")]
    AlreadyVoted { id: String, by: String },
}

impl ApprovalRow {
    /// Applies `voter`'s answer at `now`. A deny by any approver denies; approvals count per needed group (a voter
    /// in two needed groups counts for both), and once every group has its count the approval is granted: a
    /// statement approval is then usable until as long after `now` as the request could wait, a grant lasts its
    /// `grant_seconds` from `now`.
    pub fn vote(
        &mut self,
        voter: Voter<'_>,
        approve: bool,
        reason: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), VoteError> {
        let id = self.id.clone();
        if self.status != ApprovalStatus::Pending {
            return Err(VoteError::NotPending { id, status: self.status.as_str() });
        }
        if now >= self.expires_at {
            return Err(VoteError::Expired { id, expires_at: crate::audit::timestamp(self.expires_at) });
        }
        if voter.name == self.identity {
            return Err(VoteError::OwnRequest { id, by: voter.name.to_string() });
        }
        let groups: Vec<String> = self
            .needed
            .iter()
            .filter(|needed| voter.groups.contains(&needed.group))
            .map(|needed| needed.group.clone())
            .collect();
        if groups.is_empty() {
            let names: Vec<&str> = self.needed.iter().map(|needed| needed.group.as_str()).collect();
            return Err(VoteError::NotApprover { id, by: voter.name.to_string(), groups: names.join(", ") });
        }
        if self.votes.iter().any(|vote| vote.by == voter.name) {
            return Err(VoteError::AlreadyVoted { id, by: voter.name.to_string() });
        }
        self.votes.push(Vote { by: voter.name.to_string(), approve, reason, at: now, groups });
        if !approve {
            self.status = ApprovalStatus::Denied;
            self.decided_at = Some(now);
        } else if self.complete() {
            let usable = match (self.kind, self.grant_seconds) {
                (ApprovalKind::Grant, Some(seconds)) => time::Duration::seconds(seconds.min(i64::MAX as u64) as i64),
                _ => self.expires_at - self.requested_at,
            };
            self.status = ApprovalStatus::Approved;
            self.decided_at = Some(now);
            self.expires_at = now + usable;
        }
        Ok(())
    }

    /// Whether every needed group has its count of approving votes.
    pub fn complete(&self) -> bool {
        self.needed.iter().all(|needed| self.approvals_from(&needed.group) >= usize::from(needed.approvals))
    }

    /// Approving votes that count towards `group`.
    fn approvals_from(&self, group: &str) -> usize {
        self.votes.iter().filter(|vote| vote.approve && vote.groups.iter().any(|known| known == group)).count()
    }

    /// Approvals still missing per group, e.g. `dba 1 of 2`.
    pub fn outstanding(&self) -> Vec<String> {
        self.needed
            .iter()
            .filter_map(|needed| {
                let approvals = self.approvals_from(&needed.group);
                (approvals < usize::from(needed.approvals))
                    .then(|| format!("{} {approvals} of {}", needed.group, needed.approvals))
            })
            .collect()
    }
}

/// Which approvals to list.
#[derive(Debug, Clone, Default)]
pub struct ApprovalFilter {
    pub status: Option<ApprovalStatus>,
    pub identity: Option<String>,
    pub connection: Option<String>,
    /// At most this many, newest first; 100 when unset.
    pub limit: Option<u32>,
}

const COLUMNS: &str = "id, kind, status, identity, connection, fingerprint, requested_at, expires_at, version, record";

/// Tries an update this many times when other gateways keep changing the row.
const ATTEMPTS: usize = 5;

impl<DB> Store<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Option<String>: Decode<'r, DB>,
    for<'q> String: Encode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
{
    pub(crate) async fn create_approval(&self, new: NewApproval) -> Result<ApprovalRow, StateError> {
        let random: [u8; 8] = rand::random();
        let row = ApprovalRow {
            id: format!("apr_{}", hex::encode(random)),
            kind: new.kind,
            status: ApprovalStatus::Pending,
            identity: new.identity,
            connection: new.connection,
            action: new.action,
            tables: new.tables,
            statement: new.statement,
            parameters: new.parameters,
            fingerprint: new.fingerprint,
            reason: new.reason,
            needed: new.needed,
            policies: new.policies,
            votes: Vec::new(),
            session_id: new.session_id,
            requested_at: whole_micros(new.requested_at),
            expires_at: whole_micros(new.expires_at),
            grant_seconds: new.grant_seconds,
            decided_at: None,
            used_at: None,
            version: 0,
        };
        let (before, after) = DB::TIMESTAMP_FROM_MICROS;
        let mut sql = SqlText::<DB>::new(&format!("INSERT INTO approvals ({COLUMNS}) VALUES ("));
        for _ in 0..6 {
            sql.bind().push(", ");
        }
        sql.push(before).bind().push(after).push(", ");
        sql.push(before).bind().push(after).push(", ");
        sql.bind().push(", ").bind().push(")");
        let record = serde_json::to_string(&row).map_err(corrupt)?;
        sqlx::query(&sql.text)
            .bind(row.id.as_str())
            .bind(row.kind.as_str())
            .bind(row.status.as_str())
            .bind(row.identity.as_str())
            .bind(row.connection.as_str())
            .bind(row.fingerprint.as_deref())
            .bind(micros(row.requested_at))
            .bind(micros(row.expires_at))
            .bind(row.version)
            .bind(record)
            .execute(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "recording an approval request", source })?;
        Ok(row)
    }

    pub(crate) async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, StateError> {
        let mut sql = SqlText::<DB>::new(&format!("SELECT {} FROM approvals WHERE id = ", select_columns::<DB>()));
        sql.bind();
        let row = sqlx::query(&sql.text)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "reading an approval", source })?;
        row.as_ref().map(approval_from_row::<DB>).transpose()
    }

    pub(crate) async fn list_approvals(&self, filter: &ApprovalFilter) -> Result<Vec<ApprovalRow>, StateError> {
        let mut sql = SqlText::<DB>::new(&format!("SELECT {} FROM approvals WHERE 1 = 1", select_columns::<DB>()));
        let mut binds: Vec<&str> = Vec::new();
        if let Some(status) = filter.status {
            sql.push(" AND status = ").bind();
            binds.push(status.as_str());
        }
        if let Some(identity) = &filter.identity {
            sql.push(" AND identity = ").bind();
            binds.push(identity);
        }
        if let Some(connection) = &filter.connection {
            sql.push(" AND connection = ").bind();
            binds.push(connection);
        }
        sql.push(" ORDER BY requested_at DESC, id LIMIT ").bind();
        let mut query = sqlx::query(&sql.text);
        for bind in binds {
            query = query.bind(bind);
        }
        let rows = query
            .bind(i64::from(filter.limit.unwrap_or(100)))
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "listing approvals", source })?;
        rows.iter().map(approval_from_row::<DB>).collect()
    }

    /// Writes `row` if nobody changed it since it was read (its `version`); `false` when someone did.
    async fn replace_approval(&self, row: &mut ApprovalRow) -> Result<bool, StateError> {
        let read_version = row.version;
        row.version += 1;
        row.expires_at = whole_micros(row.expires_at);
        let record = serde_json::to_string(&row).map_err(corrupt)?;
        let (before, after) = DB::TIMESTAMP_FROM_MICROS;
        let mut sql = SqlText::<DB>::new("UPDATE approvals SET status = ");
        sql.bind().push(", expires_at = ").push(before).bind().push(after);
        sql.push(", version = ").bind().push(", record = ").bind();
        sql.push(" WHERE id = ").bind().push(" AND version = ").bind();
        let result = sqlx::query(&sql.text)
            .bind(row.status.as_str())
            .bind(micros(row.expires_at))
            .bind(row.version)
            .bind(record)
            .bind(row.id.as_str())
            .bind(read_version)
            .execute(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "updating an approval", source })?;
        if DB::rows_affected(&result) == 1 {
            Ok(true)
        } else {
            row.version = read_version;
            Ok(false)
        }
    }

    /// Reads approval `id`, applies `change` and writes it back, again from a fresh read when another writer got
    /// there first. `change` returns `Ok(false)` to leave the row as it is.
    pub(crate) async fn change_approval<E>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut ApprovalRow) -> Result<bool, E>,
    ) -> Result<Result<Option<ApprovalRow>, E>, StateError> {
        for _ in 0..ATTEMPTS {
            let Some(mut row) = self.approval(id).await? else { return Ok(Ok(None)) };
            match change(&mut row) {
                Err(error) => return Ok(Err(error)),
                Ok(false) => return Ok(Ok(Some(row))),
                Ok(true) => {
                    if self.replace_approval(&mut row).await? {
                        return Ok(Ok(Some(row)));
                    }
                }
            }
        }
        Err(StateError::Contended { what: format!("approval {id}") })
    }

    /// Approvals of `identity` on `connection` in `status`, optionally only those with `fingerprint`.
    async fn approvals_of(
        &self,
        identity: &str,
        connection: &str,
        status: ApprovalStatus,
        fingerprint: Option<&str>,
    ) -> Result<Vec<ApprovalRow>, StateError> {
        let mut sql =
            SqlText::<DB>::new(&format!("SELECT {} FROM approvals WHERE identity = ", select_columns::<DB>()));
        sql.bind().push(" AND connection = ").bind().push(" AND status = ").bind();
        if fingerprint.is_some() {
            sql.push(" AND fingerprint = ").bind();
        }
        sql.push(" ORDER BY requested_at, id");
        let mut query = sqlx::query(&sql.text).bind(identity).bind(connection).bind(status.as_str());
        if let Some(fingerprint) = fingerprint {
            query = query.bind(fingerprint);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "looking up approvals", source })?;
        rows.iter().map(approval_from_row::<DB>).collect()
    }

    /// Takes an approved, unused, unexpired statement approval matching `fingerprint`, marking it used; `None`
    /// when there is none. Two gateways racing for one approval: only one gets it.
    pub(crate) async fn use_statement_approval(
        &self,
        identity: &str,
        connection: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<ApprovalRow>, StateError> {
        let candidates = self.approvals_of(identity, connection, ApprovalStatus::Approved, Some(fingerprint)).await?;
        for mut row in candidates {
            if row.kind != ApprovalKind::Statement || row.expires_at <= now {
                continue;
            }
            row.status = ApprovalStatus::Used;
            row.used_at = Some(now);
            if self.replace_approval(&mut row).await? {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }

    /// A pending request for the same statement (a client sending it again while it waits), if any.
    pub(crate) async fn pending_statement_approval(
        &self,
        identity: &str,
        connection: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Option<ApprovalRow>, StateError> {
        let pending = self.approvals_of(identity, connection, ApprovalStatus::Pending, Some(fingerprint)).await?;
        Ok(pending.into_iter().find(|row| row.kind == ApprovalKind::Statement && row.expires_at > now))
    }

    /// A grant in force at `now` for `action` on `connection`, covering every one of `tables` (a grant naming
    /// no table covers the whole connection).
    pub(crate) async fn active_grant(
        &self,
        identity: &str,
        connection: &str,
        action: &str,
        tables: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<ApprovalRow>, StateError> {
        let approved = self.approvals_of(identity, connection, ApprovalStatus::Approved, None).await?;
        Ok(approved.into_iter().find(|row| {
            row.kind == ApprovalKind::Grant
                && row.action == action
                && row.expires_at > now
                && (row.tables.is_empty() || tables.iter().all(|table| row.tables.contains(table)))
        }))
    }

    /// Marks the pending requests whose time ran out as expired; returns them.
    pub(crate) async fn expire_approvals(&self, now: OffsetDateTime) -> Result<Vec<ApprovalRow>, StateError> {
        let mut sql = SqlText::<DB>::new(&format!(
            "SELECT {} FROM approvals WHERE status = 'pending' AND expires_at <= ",
            select_columns::<DB>()
        ));
        let (before, after) = DB::TIMESTAMP_FROM_MICROS;
        sql.push(before).bind().push(after);
        let rows = sqlx::query(&sql.text)
            .bind(micros(now))
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "looking up expired approvals", source })?;
        let mut expired = Vec::new();
        for row in rows.iter().map(approval_from_row::<DB>) {
            let mut row = row?;
            row.status = ApprovalStatus::Expired;
            if self.replace_approval(&mut row).await? {
                expired.push(row);
            }
        }
        Ok(expired)
    }
}

fn select_columns<DB: Dialect>() -> String {
    format!("id, status, {}, version, record", DB::micros_from_timestamp("expires_at"))
}

/// The row's JSON record, with the authoritative columns (status, expiry, version) laid over it.
fn approval_from_row<DB>(row: &DB::Row) -> Result<ApprovalRow, StateError>
where
    DB: Dialect,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let id: String = get(row, 0)?;
    let status: String = get(row, 1)?;
    let record: String = get(row, 4)?;
    let mut approval: ApprovalRow = serde_json::from_str(&record)
        .map_err(|error| StateError::CorruptRow { what: format!("approval {id}: {error}") })?;
    approval.status = ApprovalStatus::parse(&status)
        .ok_or_else(|| StateError::CorruptRow { what: format!("approval {id} status") })?;
    approval.expires_at = timestamp(get(row, 2)?)?;
    approval.version = get(row, 3)?;
    Ok(approval)
}

/// `at` to the microsecond, as the timestamp columns keep it (so a row reads back equal to what was written).
fn whole_micros(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1000 * 1000).unwrap_or(at)
}

fn corrupt(error: serde_json::Error) -> StateError {
    StateError::CorruptRow { what: format!("approval record: {error}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(needed: &[(&str, u8)]) -> ApprovalRow {
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        ApprovalRow {
            id: "apr_1".into(),
            kind: ApprovalKind::Statement,
            status: ApprovalStatus::Pending,
            identity: "agent".into(),
            connection: "shop".into(),
            action: "write".into(),
            tables: vec!["public.orders".into()],
            statement: Some("DELETE FROM orders WHERE id = 7".into()),
            parameters: None,
            fingerprint: Some("f".into()),
            reason: None,
            needed: needed
                .iter()
                .map(|(group, approvals)| Needed { group: group.to_string(), approvals: *approvals })
                .collect(),
            policies: vec!["deletes-need-a-dba".into()],
            votes: Vec::new(),
            session_id: None,
            requested_at: at,
            expires_at: at + time::Duration::minutes(30),
            grant_seconds: None,
            decided_at: None,
            used_at: None,
            version: 0,
        }
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn two_of_three_dbas_approve_and_the_approval_is_usable_as_long_as_the_request_could_wait() {
        let mut row = pending(&[("dba", 2)]);
        let dba = groups(&["dba"]);
        let now = row.requested_at + time::Duration::minutes(5);
        row.vote(Voter { name: "alice", groups: &dba }, true, None, now).unwrap();
        assert_eq!(row.status, ApprovalStatus::Pending);
        assert_eq!(row.outstanding(), ["dba 1 of 2"]);
        assert_eq!(
            row.vote(Voter { name: "alice", groups: &dba }, true, None, now),
            Err(VoteError::AlreadyVoted { id: "apr_1".into(), by: "alice".into() })
        );
        row.vote(Voter { name: "bob", groups: &dba }, true, Some("checked".into()), now).unwrap();
        assert_eq!(row.status, ApprovalStatus::Approved);
        assert_eq!(row.expires_at, now + time::Duration::minutes(30));
        assert!(matches!(
            row.vote(Voter { name: "carol", groups: &dba }, true, None, now),
            Err(VoteError::NotPending { status: "approved", .. })
        ));
    }

    #[test]
    fn the_requester_outsiders_and_late_votes_are_refused_and_one_deny_denies() {
        let mut row = pending(&[("dba", 2), ("security", 1)]);
        let now = row.requested_at;
        let both = groups(&["agents", "dba"]);
        assert!(matches!(
            row.vote(Voter { name: "agent", groups: &both }, true, None, now),
            Err(VoteError::OwnRequest { .. })
        ));
        let outsider = groups(&["staff"]);
        assert_eq!(
            row.vote(Voter { name: "mallory", groups: &outsider }, true, None, now),
            Err(VoteError::NotApprover { id: "apr_1".into(), by: "mallory".into(), groups: "dba, security".into() })
        );
        let late = row.expires_at;
        assert!(matches!(
            row.vote(Voter { name: "alice", groups: &groups(&["dba"]) }, true, None, late),
            Err(VoteError::Expired { .. })
        ));
        // A voter in two needed groups counts for both.
        row.vote(Voter { name: "alice", groups: &groups(&["dba", "security"]) }, true, None, now).unwrap();
        assert_eq!(row.outstanding(), ["dba 1 of 2"]);
        row.vote(Voter { name: "bob", groups: &groups(&["dba"]) }, false, Some("not today".into()), now).unwrap();
        assert_eq!(row.status, ApprovalStatus::Denied);
        assert_eq!(row.votes[1].reason.as_deref(), Some("not today"));
    }

    #[test]
    fn a_grant_lasts_its_length_from_the_approval() {
        let mut row = pending(&[("dba", 1)]);
        row.kind = ApprovalKind::Grant;
        row.grant_seconds = Some(1800);
        let now = row.requested_at + time::Duration::minutes(10);
        row.vote(Voter { name: "alice", groups: &groups(&["dba"]) }, true, None, now).unwrap();
        assert_eq!((row.status, row.expires_at), (ApprovalStatus::Approved, now + time::Duration::minutes(30)));
    }
}
