//! The SQL, written once for both dialects: batched writes and the read queries.
//!
//! SQLite and PostgreSQL differ here only in how a timestamp column is stored (INTEGER microseconds
//! since the Unix epoch in SQLite, `timestamptz` in PostgreSQL); [`Dialect`] supplies the conversion,
//! and every bound or read timestamp is an `i64` of microseconds on the Rust side. Placeholders (`?`
//! versus `$1`) are written by [`SqlText`].
//!
//! Why not sqlx's QueryBuilder: its `build()` borrows the builder for a lifetime shorter than its
//! arguments', which generic code over `Database` cannot reconcile (the arguments type is invariant
//! there). Writing the text first and binding with `sqlx::query` afterwards has no such problem, and
//! equal row counts give equal texts, which keeps the prepared-statement cache warm.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::marker::PhantomData;

use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Postgres, Row, Sqlite, Type};
use time::OffsetDateTime;

use crate::recorder::{SessionEnd, SessionMasked};
use crate::{
    AuditSigner, Decision, Revocation, RevocationKind, RevocationRow, SessionFilter, SessionRow, SessionStart,
    StateError, StatementRecord, StatementRow, Tokens,
};

/// At most this many bind parameters in one statement: SQLite's limit since 3.32 (PostgreSQL allows 65,535).
const MAX_BIND_PARAMETERS: usize = 32_766;

/// Rows per multi-row statement. Batches are cut into chunks of this size (or fewer, to stay within
/// the bind-parameter limit).
pub(crate) const ROWS_PER_STATEMENT: usize = 512;

/// Statement text (and error text) per multi-row insert, give or take the last row.
pub(crate) const BYTES_PER_STATEMENT: usize = 8 << 20;

/// What differs between the two SQL dialects.
pub(crate) trait Dialect: Database {
    const NAME: &'static str;

    /// The SQL around an `int8` expression of microseconds since the Unix epoch that converts it into
    /// the type of a timestamp column: (before, after).
    const TIMESTAMP_FROM_MICROS: (&'static str, &'static str);

    /// An SQL expression reading the timestamp column `column` as `int8` microseconds since the Unix epoch.
    fn micros_from_timestamp(column: &str) -> String;

    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Writes the placeholder for the `index`th bind (from 1).
    fn push_placeholder(sql: &mut String, index: usize);

    /// What follows a text comparison for it to compare bytes, whatever the database's collation.
    const BYTE_ORDER: &'static str;

    /// [`Dialect::TIMESTAMP_FROM_MICROS`] applied to `micros`.
    fn timestamp_from_micros(micros: &str) -> String {
        let (before, after) = Self::TIMESTAMP_FROM_MICROS;
        format!("{before}{micros}{after}")
    }
}

impl Dialect for Sqlite {
    const NAME: &'static str = "sqlite";

    const TIMESTAMP_FROM_MICROS: (&'static str, &'static str) = ("", "");

    fn micros_from_timestamp(column: &str) -> String {
        column.to_string()
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn push_placeholder(sql: &mut String, _index: usize) {
        sql.push('?');
    }

    // BINARY, SQLite's default.
    const BYTE_ORDER: &'static str = "";
}

impl Dialect for Postgres {
    const NAME: &'static str = "postgres";

    // Exact: the float8 product of an integer below 2^53 and one microsecond.
    const TIMESTAMP_FROM_MICROS: (&'static str, &'static str) =
        ("(timestamptz 'epoch' + (", ") * interval '1 microsecond')");

    fn micros_from_timestamp(column: &str) -> String {
        // extract() returns numeric since PostgreSQL 14, so this is exact.
        format!("(extract(epoch from {column}) * 1000000)::int8")
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn push_placeholder(sql: &mut String, index: usize) {
        write!(sql, "${index}").expect("writing to a String cannot fail");
    }

    const BYTE_ORDER: &'static str = " COLLATE \"C\"";
}

/// One batch of recorded events, split by kind, each kind in recording order.
pub(crate) struct Batch<'a> {
    /// The batch's events sealed into the audit chain, written first, in the same transaction.
    pub(crate) audit: &'a [warden_audit::Sealed],
    pub(crate) starts: Vec<&'a SessionStart>,
    pub(crate) statements: Vec<&'a StatementRecord>,
    pub(crate) masked: Vec<&'a SessionMasked>,
    pub(crate) ends: Vec<&'a SessionEnd>,
}

/// A pool of one dialect, with the queries the store runs against it.
pub(crate) struct Store<DB: Database> {
    /// Readers (CLI, admin API, budgets, approvals).
    pub(crate) pool: Pool<DB>,
    /// The state writer's own connection (a pool of one, so it is reopened if it breaks): on SQLite, a connection
    /// whose database another connection has written discards its page cache, so a writer rotating through the
    /// readers' connections read its indexes back from disk on every batch.
    pub(crate) writer: Pool<DB>,
}

impl<DB: Database> Clone for Store<DB> {
    fn clone(&self) -> Self {
        Store { pool: self.pool.clone(), writer: self.writer.clone() }
    }
}

type DbQuery<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

const SESSION_COLUMNS: &str = "id, identity, connection, client_address, user_name, application_name, started_at, \
                               credential, token_id, run, node";
const SESSION_BINDS: usize = 11;

const AUDIT_COLUMNS: &str = "chain, seq, at, kind, session_id, identity, connection, run, node, body, prev, hash";
const AUDIT_BINDS: usize = 12;
const CHECKPOINT_COLUMNS: &str = "chain, seq, head, at, key_id, signature";

const STATEMENT_COLUMNS: &str =
    "session_id, seq, started_at, duration_us, text, rows, error, decision, classes, tables, policies";
const STATEMENT_BINDS: usize = 11;

/// An LLM request's usage columns, after [`STATEMENT_COLUMNS`]. Only an insert some of whose rows carry usage writes
/// them: one of statements without (every SQL statement) has the same text and binds as before they existed.
const USAGE_COLUMNS: &str = "model, input_tokens, output_tokens, batch_requests";
const USAGE_BINDS: usize = 4;

impl<DB> Store<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Writes a whole batch in one transaction: session starts, then statements, then statement
    /// counters, then masked counts, then session ends. Applying the kinds in this order gives the same
    /// result as applying the events one by one, because a statement only needs its session to exist,
    /// and masked counts and an end only touch their own session's row (of several masked counts for
    /// one session, only the last recorded is written, as it would have replaced the others).
    ///
    /// Statements whose session does not exist (its start was dropped, or never recorded) are
    /// skipped rather than failing the batch; the number skipped is returned.
    pub(crate) async fn write_batch(&self, batch: &Batch<'_>) -> Result<u64, sqlx::Error> {
        let mut transaction = self.writer.begin().await?;

        for chunk in batch.audit.chunks(rows_per_statement(AUDIT_BINDS)) {
            let mut sql = SqlText::<DB>::new(&format!("INSERT INTO audit_events ({AUDIT_COLUMNS}) "));
            sql.values(chunk.len(), AUDIT_BINDS);
            let query = chunk.iter().fold(sqlx::query(&sql.text), |query, sealed| bind_audit(query, sealed));
            query.execute(&mut *transaction).await?;
        }

        for chunk in batch.starts.chunks(rows_per_statement(SESSION_BINDS)) {
            let sql = insert_sessions::<DB>(chunk.len());
            let query = chunk.iter().fold(sqlx::query(&sql), |query, start| bind_session(query, start));
            query.execute(&mut *transaction).await?;
        }

        let mut recounted = Vec::new();
        for record in batch.statements.iter().filter(|record| claims_batch(record)) {
            if !claim_batch(&mut transaction, record).await? {
                recounted.push((&*record.session_id, record.seq));
            }
        }
        let mut orphaned = 0;
        for chunk in statement_chunks(&batch.statements) {
            let usage = chunk.iter().any(|record| has_usage(record));
            let mut sql = insert_statements::<DB>(chunk.len(), usage);
            sql.push(" WHERE EXISTS (SELECT 1 FROM sessions WHERE sessions.id = v.column1)");
            let query = chunk.iter().fold(sqlx::query(&sql.text), |query, record| {
                let counted = !recounted.contains(&(&*record.session_id, record.seq));
                bind_statement(query, record, usage, counted)
            });
            let result = query.execute(&mut *transaction).await?;
            orphaned += (chunk.len() as u64).saturating_sub(DB::rows_affected(&result));
        }

        let touched = session_tables(&batch.statements);
        for chunk in touched.chunks(rows_per_statement(3)) {
            let sql = insert_session_tables::<DB>(chunk.len());
            let query = chunk.iter().fold(sqlx::query(&sql), |query, &(table, name, session_id)| {
                query.bind(table).bind(name).bind(session_id)
            });
            query.execute(&mut *transaction).await?;
        }

        let counts = statement_counts(&batch.statements);
        for chunk in counts.chunks(rows_per_statement(2)) {
            let mut sql = SqlText::<DB>::new("WITH counts (id, n) AS (");
            sql.values(chunk.len(), 2).push(
                ") UPDATE sessions SET statement_count = sessions.statement_count + counts.n \
                 FROM counts WHERE sessions.id = counts.id",
            );
            let query = chunk
                .iter()
                .fold(sqlx::query(&sql.text), |query, &(session_id, count)| query.bind(session_id).bind(count));
            query.execute(&mut *transaction).await?;
        }

        let masked = last_masked_per_session(&batch.masked);
        for chunk in masked.chunks(rows_per_statement(2)) {
            let mut sql = SqlText::<DB>::new("WITH masked_counts (id, masked) AS (");
            sql.values(chunk.len(), 2).push(
                ") UPDATE sessions SET masked = masked_counts.masked \
                 FROM masked_counts WHERE sessions.id = masked_counts.id",
            );
            let query = chunk
                .iter()
                .fold(sqlx::query(&sql.text), |query, &(session_id, masked)| query.bind(session_id).bind(masked));
            query.execute(&mut *transaction).await?;
        }

        for chunk in batch.ends.chunks(rows_per_statement(3)) {
            let mut sql = SqlText::<DB>::new("WITH ended (id, ended_at, end_reason) AS (");
            sql.values(chunk.len(), 3);
            sql.push(") UPDATE sessions SET ended_at = ");
            sql.push(&DB::timestamp_from_micros("ended.ended_at"));
            sql.push(", end_reason = ended.end_reason FROM ended WHERE sessions.id = ended.id");
            let query = chunk.iter().fold(sqlx::query(&sql.text), |query, end| {
                query.bind(end.id.as_str()).bind(micros(end.ended_at)).bind(end.end_reason.as_deref())
            });
            query.execute(&mut *transaction).await?;
        }

        transaction.commit().await?;
        Ok(orphaned)
    }

    /// Writes sealed audit events alone, in one transaction (the slow path after a batch failed).
    pub(crate) async fn write_audit(&self, sealed: &[warden_audit::Sealed]) -> Result<(), sqlx::Error> {
        let batch =
            Batch { audit: sealed, starts: Vec::new(), statements: Vec::new(), masked: Vec::new(), ends: Vec::new() };
        self.write_batch(&batch).await.map(|_| ())
    }

    pub(crate) async fn write_checkpoint(&self, checkpoint: &warden_audit::Checkpoint) -> Result<(), sqlx::Error> {
        let mut sql = SqlText::<DB>::new(&format!("INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) "));
        sql.values(1, 6);
        sqlx::query(&sql.text)
            .bind(checkpoint.chain.as_str())
            .bind(i64::try_from(checkpoint.seq).unwrap_or(i64::MAX))
            .bind(checkpoint.head.as_str())
            .bind(checkpoint.at.as_str())
            .bind(checkpoint.key_id.as_str())
            .bind(checkpoint.signature.as_str())
            .execute(&self.writer)
            .await
            .map(|_| ())
    }

    /// Every chain's latest checkpoint.
    pub(crate) async fn latest_checkpoints(&self) -> Result<Vec<warden_audit::Checkpoint>, StateError> {
        self.checkpoints(
            " WHERE seq = (SELECT max(seq) FROM audit_checkpoints AS later WHERE later.chain = audit_checkpoints.chain)",
        )
        .await
    }

    /// Every checkpoint, by chain and seq.
    pub(crate) async fn all_checkpoints(&self) -> Result<Vec<warden_audit::Checkpoint>, StateError> {
        self.checkpoints("").await
    }

    async fn checkpoints(&self, condition: &str) -> Result<Vec<warden_audit::Checkpoint>, StateError> {
        let sql = format!("SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints{condition} ORDER BY chain, seq");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "reading audit checkpoints", source })?;
        rows.iter().map(checkpoint_from_row::<DB>).collect()
    }

    /// Audit events at or after `since` (RFC 3339 text compares in time order), by chain and seq.
    pub(crate) async fn audit_events(&self, since: Option<&str>) -> Result<Vec<warden_audit::Sealed>, StateError> {
        let mut sql = SqlText::<DB>::new(&format!("SELECT {AUDIT_COLUMNS} FROM audit_events"));
        if since.is_some() {
            sql.push(" WHERE at >= ").bind();
        }
        sql.push(" ORDER BY chain, seq");
        let mut query = sqlx::query(&sql.text);
        if let Some(since) = since {
            query = query.bind(since);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "reading audit events", source })?;
        rows.iter().map(sealed_from_row::<DB>).collect()
    }

    /// One session's audit events, by chain and seq; with `after` (a chain and a seq), only that chain's events
    /// after that seq. A session's events are all in the chain of the gateway process that served it, so a reader
    /// following a live session passes the last event it has seen.
    pub(crate) async fn audit_events_for_session(
        &self,
        session_id: &str,
        after: Option<(&str, u64)>,
    ) -> Result<Vec<warden_audit::Sealed>, StateError> {
        let mut sql = SqlText::<DB>::new(&format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE session_id = "));
        sql.bind();
        if after.is_some() {
            sql.push(" AND chain = ").bind().push(" AND seq > ").bind();
        }
        sql.push(" ORDER BY chain, seq");
        let mut query = sqlx::query(&sql.text).bind(session_id);
        if let Some((chain, seq)) = after {
            query = query.bind(chain).bind(i64::try_from(seq).unwrap_or(i64::MAX));
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "reading a session's audit events", source })?;
        rows.iter().map(sealed_from_row::<DB>).collect()
    }

    /// Writes one session start (the slow path after a batch failed).
    pub(crate) async fn write_start(&self, start: &SessionStart) -> Result<(), sqlx::Error> {
        let sql = insert_sessions::<DB>(1);
        bind_session(sqlx::query(&sql), start).execute(&self.writer).await?;
        Ok(())
    }

    /// Writes one statement and counts it, in its own transaction (the slow path after a batch failed).
    pub(crate) async fn write_statement(&self, record: &StatementRecord) -> Result<(), sqlx::Error> {
        let mut transaction = self.writer.begin().await?;
        let counted = !claims_batch(record) || claim_batch(&mut transaction, record).await?;
        let usage = has_usage(record);
        let sql = insert_statements::<DB>(1, usage);
        bind_statement(sqlx::query(&sql.text), record, usage, counted).execute(&mut *transaction).await?;
        let mut sql = SqlText::<DB>::new("UPDATE sessions SET statement_count = statement_count + 1 WHERE id = ");
        sql.bind();
        sqlx::query(&sql.text).bind(&*record.session_id).execute(&mut *transaction).await?;
        let touched = session_tables(&[record]);
        if !touched.is_empty() {
            let sql = insert_session_tables::<DB>(touched.len());
            let query = touched.iter().fold(sqlx::query(&sql), |query, &(table, name, session_id)| {
                query.bind(table).bind(name).bind(session_id)
            });
            query.execute(&mut *transaction).await?;
        }
        transaction.commit().await
    }

    /// Writes one session end (the slow path after a batch failed).
    pub(crate) async fn write_end(&self, end: &SessionEnd) -> Result<(), sqlx::Error> {
        let (before, after) = DB::TIMESTAMP_FROM_MICROS;
        let mut sql = SqlText::<DB>::new("UPDATE sessions SET ended_at = ");
        sql.push(before).bind().push(after);
        sql.push(", end_reason = ").bind().push(" WHERE id = ").bind();
        sqlx::query(&sql.text)
            .bind(micros(end.ended_at))
            .bind(end.end_reason.as_deref())
            .bind(end.id.as_str())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Writes one session's masked counts (the slow path after a batch failed).
    pub(crate) async fn write_masked(&self, masked: &SessionMasked) -> Result<(), sqlx::Error> {
        let mut sql = SqlText::<DB>::new("UPDATE sessions SET masked = ");
        sql.bind().push(" WHERE id = ").bind();
        sqlx::query(&sql.text).bind(masked.masked.as_deref()).bind(masked.id.as_str()).execute(&self.writer).await?;
        Ok(())
    }

    pub(crate) async fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionRow>, StateError> {
        // The text and the binds follow the same conditions in the same order.
        let mut sql = SqlText::<DB>::new(&session_select::<DB>());
        sql.push(" WHERE 1 = 1");
        if filter.identity.is_some() {
            sql.push(" AND identity = ").bind();
        }
        if filter.connection.is_some() {
            sql.push(" AND connection = ").bind();
        }
        if filter.since.is_some() {
            let (before, after) = DB::TIMESTAMP_FROM_MICROS;
            sql.push(" AND started_at >= ").push(before).bind().push(after);
        }
        if filter.until.is_some() {
            let (before, after) = DB::TIMESTAMP_FROM_MICROS;
            sql.push(" AND started_at < ").push(before).bind().push(after);
        }
        if filter.run.is_some() {
            sql.push(" AND run = ").bind();
        }
        if filter.node.is_some() {
            sql.push(" AND node = ").bind();
        }
        if filter.table.is_some() {
            // Both columns are indexed: the qualified name by the primary key, the bare one by session_tables_name.
            sql.push(" AND id IN (SELECT session_id FROM session_tables WHERE table_name = ").bind();
            sql.push(" UNION SELECT session_id FROM session_tables WHERE name = ").bind().push(")");
        }
        if filter.active_only {
            sql.push(" AND ended_at IS NULL");
        }
        sql.push(" ORDER BY started_at DESC, id DESC LIMIT ").bind();

        let mut query = sqlx::query(&sql.text);
        if let Some(identity) = &filter.identity {
            query = query.bind(identity.as_str());
        }
        if let Some(connection) = &filter.connection {
            query = query.bind(connection.as_str());
        }
        if let Some(since) = filter.since {
            query = query.bind(micros(since));
        }
        if let Some(until) = filter.until {
            query = query.bind(micros(until));
        }
        if let Some(run) = &filter.run {
            query = query.bind(run.as_str());
        }
        if let Some(node) = &filter.node {
            query = query.bind(node.as_str());
        }
        if let Some(table) = &filter.table {
            query = query.bind(table.as_str()).bind(table.as_str());
        }
        let limit = filter.limit.unwrap_or(crate::DEFAULT_SESSION_LIMIT);
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "listing sessions", source })?;
        rows.iter().map(session_row::<DB>).collect()
    }

    pub(crate) async fn session(&self, id: &str) -> Result<Option<SessionRow>, StateError> {
        let mut sql = SqlText::<DB>::new(&session_select::<DB>());
        sql.push(" WHERE id = ").bind();
        let row = sqlx::query(&sql.text)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "reading a session", source })?;
        row.as_ref().map(session_row::<DB>).transpose()
    }

    pub(crate) async fn revoke(&self, revocation: &Revocation) -> Result<i64, StateError> {
        let (before, after) = DB::TIMESTAMP_FROM_MICROS;
        let mut sql =
            SqlText::<DB>::new("INSERT INTO revocations (kind, subject, reason, revoked_by, revoked_at) VALUES (");
        sql.bind().push(", ").bind().push(", ").bind().push(", ").bind().push(", ");
        sql.push(before).bind().push(after).push(") RETURNING id");
        let row = sqlx::query(&sql.text)
            .bind(revocation.kind.as_str())
            .bind(revocation.subject.as_str())
            .bind(revocation.reason.as_deref())
            .bind(revocation.revoked_by.as_str())
            .bind(micros(revocation.revoked_at))
            .fetch_one(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "recording a revocation", source })?;
        get(&row, 0)
    }

    pub(crate) async fn revocations_after(&self, after: i64) -> Result<Vec<RevocationRow>, StateError> {
        let mut sql = SqlText::<DB>::new(&format!(
            "SELECT id, kind, subject, reason, revoked_by, {} FROM revocations WHERE id > ",
            DB::micros_from_timestamp("revoked_at")
        ));
        sql.bind().push(" ORDER BY id");
        let rows = sqlx::query(&sql.text)
            .bind(after)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "reading revocations", source })?;
        rows.iter()
            .map(|row| {
                let kind: String = get(row, 1)?;
                Ok(RevocationRow {
                    id: get(row, 0)?,
                    kind: RevocationKind::parse(&kind)
                        .ok_or_else(|| StateError::CorruptRow { what: format!("revocation kind \"{kind}\"") })?,
                    subject: get(row, 2)?,
                    reason: get(row, 3)?,
                    revoked_by: get(row, 4)?,
                    revoked_at: timestamp(get(row, 5)?)?,
                })
            })
            .collect()
    }

    /// What a pruning pass with this cutoff may delete: every chain's pruning mark (those the latest trusted
    /// `audit.pruned` event of each chain names, grown to each chain's latest checkpoint before the cutoff), and how
    /// many sessions ended before it.
    ///
    /// Trusted means signed with `signer`'s key: a mark is taken from an `audit.pruned` event only when a checkpoint
    /// of its chain, whose signature `signer` reproduces (Ed25519 is deterministic), covers it through links that
    /// recompute; a new mark only from such a checkpoint. Records signed with another key (before a key rotation) are
    /// left alone: the pass cannot vouch for them.
    pub(crate) async fn prune_plan(
        &self,
        before: OffsetDateTime,
        signer: &dyn AuditSigner,
    ) -> Result<PrunePlan, StateError> {
        let read = |source| StateError::Query { operation: "planning a pruning pass", source };
        let rows = sqlx::query(
            "SELECT chain, seq, body FROM audit_events WHERE kind = 'audit.pruned' ORDER BY chain, seq DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(read)?;
        let mut marks: BTreeMap<String, Mark> = BTreeMap::new();
        let mut trusted_chain: Option<String> = None;
        for row in &rows {
            let chain: String = get(row, 0)?;
            let seq: i64 = get(row, 1)?;
            let body: String = get(row, 2)?;
            if trusted_chain.as_deref() == Some(chain.as_str()) {
                // Marks only grow: the chain's latest trusted event names all its earlier ones did.
                continue;
            }
            let Ok(seq) = u64::try_from(seq) else { continue };
            if !self.sealed_by(&chain, seq, signer).await? {
                tracing::warn!(chain, seq, "an audit.pruned event no checkpoint of this key seals is ignored");
                continue;
            }
            for (named, mark) in marks_of(&body) {
                merge_mark(&mut marks, named, mark);
            }
            trusted_chain = Some(chain);
        }
        let recorded = marks.clone();

        let mut sql = SqlText::<DB>::new("SELECT chain, max(seq) FROM audit_checkpoints WHERE at");
        sql.push(DB::BYTE_ORDER).push(" < ").bind().push(" GROUP BY chain");
        let rows = sqlx::query(&sql.text).bind(checkpoint_bound(before)).fetch_all(&self.pool).await.map_err(read)?;
        for row in &rows {
            let chain: String = get(row, 0)?;
            let seq: i64 = get(row, 1)?;
            let Ok(seq) = u64::try_from(seq) else { continue };
            if marks.get(&chain).is_some_and(|mark| mark.through >= seq) {
                continue;
            }
            match self.checkpoint(&chain, seq, false).await? {
                Some(checkpoint) if signed_by(signer, &checkpoint) => {
                    merge_mark(&mut marks, chain, Mark { through: seq, head: checkpoint.head.to_ascii_lowercase() });
                }
                _ => tracing::warn!(chain, seq, "a checkpoint this key did not sign is not pruned up to"),
            }
        }

        let (before_ts, after_ts) = DB::TIMESTAMP_FROM_MICROS;
        let mut sql = SqlText::<DB>::new("SELECT count(*) FROM sessions WHERE ended_at < ");
        sql.push(before_ts).bind().push(after_ts);
        let row = sqlx::query(&sql.text).bind(micros(before)).fetch_one(&self.pool).await.map_err(read)?;
        let sessions: i64 = get(&row, 0)?;
        Ok(PrunePlan { grown: marks != recorded, marks, sessions: u64::try_from(sessions).unwrap_or(0) })
    }

    /// Whether event `seq` of `chain` is covered by a checkpoint `signer` signed: the chain's first checkpoint at or
    /// after it reproduces with `signer`, and the stored events from `seq` to it link up to its head.
    async fn sealed_by(&self, chain: &str, seq: u64, signer: &dyn AuditSigner) -> Result<bool, StateError> {
        let Some(checkpoint) = self.checkpoint(chain, seq, true).await? else { return Ok(false) };
        if !signed_by(signer, &checkpoint) {
            return Ok(false);
        }
        let mut sql = SqlText::<DB>::new(&format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE chain = "));
        sql.bind().push(" AND seq >= ").bind().push(" AND seq <= ").bind().push(" ORDER BY seq");
        let rows = sqlx::query(&sql.text)
            .bind(chain)
            .bind(saturating_i64(seq))
            .bind(saturating_i64(checkpoint.seq))
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "planning a pruning pass", source })?;
        let events: Vec<warden_audit::Sealed> = rows.iter().map(sealed_from_row::<DB>).collect::<Result<_, _>>()?;
        let Some(first) = events.first() else { return Ok(false) };
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(&first.prev, &mut hash).is_err() {
            return Ok(false);
        }
        for (index, sealed) in events.iter().enumerate() {
            if sealed.event.seq != seq + index as u64 {
                return Ok(false);
            }
            hash = warden_audit::link(&hash, &sealed.event);
        }
        Ok(events.len() as u64 == checkpoint.seq - seq + 1 && hex::encode(hash) == checkpoint.head.to_ascii_lowercase())
    }

    /// Checkpoint `seq` of `chain`; with `at_or_after`, the chain's first checkpoint at or after it.
    async fn checkpoint(
        &self,
        chain: &str,
        seq: u64,
        at_or_after: bool,
    ) -> Result<Option<warden_audit::Checkpoint>, StateError> {
        let mut sql = SqlText::<DB>::new(&format!("SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE chain = "));
        sql.bind().push(if at_or_after { " AND seq >= " } else { " AND seq = " }).bind();
        sql.push(" ORDER BY seq LIMIT 1");
        let row = sqlx::query(&sql.text)
            .bind(chain)
            .bind(saturating_i64(seq))
            .fetch_optional(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "reading audit checkpoints", source })?;
        row.as_ref().map(checkpoint_from_row::<DB>).transpose()
    }

    /// Deletes, in one transaction, the sessions that ended before `before` (their statements and session_tables
    /// rows with them), and each chain's events and checkpoints up to its mark.
    pub(crate) async fn prune_delete(
        &self,
        before: OffsetDateTime,
        marks: &BTreeMap<String, Mark>,
    ) -> Result<Pruned, sqlx::Error> {
        let mut transaction = self.writer.begin().await?;
        let (before_ts, after_ts) = DB::TIMESTAMP_FROM_MICROS;
        let ended = format!("(SELECT id FROM sessions WHERE ended_at < {before_ts}{}{after_ts})", placeholder::<DB>(1));
        let cutoff = micros(before);
        sqlx::query(&format!("DELETE FROM session_tables WHERE session_id IN {ended}"))
            .bind(cutoff)
            .execute(&mut *transaction)
            .await?;
        let statements = sqlx::query(&format!("DELETE FROM statements WHERE session_id IN {ended}"))
            .bind(cutoff)
            .execute(&mut *transaction)
            .await?;
        let sessions = sqlx::query(&format!(
            "DELETE FROM sessions WHERE ended_at < {before_ts}{}{after_ts}",
            placeholder::<DB>(1)
        ))
        .bind(cutoff)
        .execute(&mut *transaction)
        .await?;
        let mut pruned = Pruned {
            sessions: DB::rows_affected(&sessions),
            statements: DB::rows_affected(&statements),
            chains: Vec::new(),
        };
        for (chain, mark) in marks {
            let mut counts = [0; 2];
            for (count, table) in counts.iter_mut().zip(["audit_events", "audit_checkpoints"]) {
                let mut sql = SqlText::<DB>::new(&format!("DELETE FROM {table} WHERE chain = "));
                sql.bind().push(" AND seq <= ").bind();
                let result = sqlx::query(&sql.text)
                    .bind(chain.as_str())
                    .bind(saturating_i64(mark.through))
                    .execute(&mut *transaction)
                    .await?;
                *count = DB::rows_affected(&result);
            }
            pruned.chains.push(crate::PrunedChain {
                chain: chain.clone(),
                through: mark.through,
                events: counts[0],
                checkpoints: counts[1],
            });
        }
        transaction.commit().await?;
        Ok(pruned)
    }

    pub(crate) async fn statements(&self, session_id: &str) -> Result<Vec<StatementRow>, StateError> {
        let mut sql = SqlText::<DB>::new(&format!(
            "SELECT session_id, seq, {}, duration_us, text, rows, error, decision, classes, tables, policies, \
             model, input_tokens, output_tokens FROM statements WHERE session_id = ",
            DB::micros_from_timestamp("started_at")
        ));
        sql.bind().push(" ORDER BY seq");
        let rows = sqlx::query(&sql.text)
            .bind(session_id)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "reading a session's statements", source })?;
        rows.iter()
            .map(|row| {
                Ok(StatementRow {
                    session_id: get(row, 0)?,
                    seq: get(row, 1)?,
                    started_at: timestamp(get(row, 2)?)?,
                    duration_us: get(row, 3)?,
                    text: get(row, 4)?,
                    rows: get(row, 5)?,
                    error: get(row, 6)?,
                    decision: decision_from_columns(get(row, 7)?, [get(row, 8)?, get(row, 9)?, get(row, 10)?])?,
                    model: get(row, 11)?,
                    tokens: tokens_from_columns(get(row, 12)?, get(row, 13)?)?,
                })
            })
            .collect()
    }
}

/// SQL text whose placeholders are written in the dialect's syntax, numbered as they are written.
pub(crate) struct SqlText<DB> {
    pub(crate) text: String,
    binds: usize,
    dialect: PhantomData<DB>,
}

impl<DB: Dialect> SqlText<DB> {
    pub(crate) fn new(start: &str) -> Self {
        SqlText { text: start.to_string(), binds: 0, dialect: PhantomData }
    }

    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    pub(crate) fn bind(&mut self) -> &mut Self {
        self.binds += 1;
        DB::push_placeholder(&mut self.text, self.binds);
        self
    }

    /// `VALUES (…), (…)`: `rows` tuples of `columns` placeholders each.
    pub(crate) fn values(&mut self, rows: usize, columns: usize) -> &mut Self {
        self.text.reserve(rows * columns * 6 + 8);
        self.text.push_str("VALUES ");
        for row in 0..rows {
            self.text.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..columns {
                if column > 0 {
                    self.text.push_str(", ");
                }
                self.bind();
            }
            self.text.push(')');
        }
        self
    }
}

/// Inserts `rows` sessions, bound by [`bind_session`].
fn insert_sessions<DB: Dialect>(rows: usize) -> String {
    let mut sql = SqlText::<DB>::new(&format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) SELECT column1, column2, column3, column4, \
         column5, column6, {}, column8, column9, column10, column11 FROM (",
        DB::timestamp_from_micros("column7")
    ));
    sql.values(rows, SESSION_BINDS).push(") AS v");
    sql.text
}

/// Inserts `rows` statements, bound by [`bind_statement`] with the same `usage`; the caller may add a WHERE clause on
/// `v`.
fn insert_statements<DB: Dialect>(rows: usize, usage: bool) -> SqlText<DB> {
    let (columns, usage_values, binds) = if usage {
        (
            format!("{STATEMENT_COLUMNS}, {USAGE_COLUMNS}"),
            ", column12, column13, column14, column15",
            STATEMENT_BINDS + USAGE_BINDS,
        )
    } else {
        (STATEMENT_COLUMNS.to_string(), "", STATEMENT_BINDS)
    };
    let mut sql = SqlText::<DB>::new(&format!(
        "INSERT INTO statements ({columns}) SELECT column1, column2, {}, column4, \
         column5, column6, column7, column8, column9, column10, column11{usage_values} FROM (",
        DB::timestamp_from_micros("column3")
    ));
    sql.values(rows, binds).push(") AS v");
    sql
}

/// Whether a statement has usage columns to write (an LLM request).
fn has_usage(record: &StatementRecord) -> bool {
    record.model.is_some() || record.tokens.is_some()
}

/// Whether a statement read a batch's results and has their tokens to count, once per batch.
fn claims_batch(record: &StatementRecord) -> bool {
    record.batch.is_some() && record.tokens.is_some()
}

/// Claims the batch whose results `record` read, in `transaction`: true when no statement claimed it before (its
/// tokens count), false when one did (they counted then). A statement whose session is unknown claims nothing (it
/// is not written). With PostgreSQL, a claim by another replica's open transaction waits for it to end.
async fn claim_batch<DB>(
    transaction: &mut sqlx::Transaction<'_, DB>,
    record: &StatementRecord,
) -> Result<bool, sqlx::Error>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let Some(batch) = &record.batch else { return Ok(true) };
    let mut sql = SqlText::<DB>::new("INSERT INTO batch_results (batch, session_id, seq) SELECT ");
    sql.bind().push(", ").bind().push(", ").bind();
    sql.push(" WHERE EXISTS (SELECT 1 FROM sessions WHERE sessions.id = ").bind();
    sql.push(") ON CONFLICT (batch) DO NOTHING");
    let result = sqlx::query(&sql.text)
        .bind(batch.key.as_str())
        .bind(&*record.session_id)
        .bind(saturating_i64(record.seq))
        .bind(&*record.session_id)
        .execute(&mut **transaction)
        .await?;
    Ok(DB::rows_affected(&result) > 0)
}

fn bind_audit<'q, DB>(query: DbQuery<'q, DB>, sealed: &'q warden_audit::Sealed) -> DbQuery<'q, DB>
where
    DB: Database,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
{
    let event = &sealed.event;
    query
        .bind(event.chain.as_str())
        .bind(i64::try_from(event.seq).unwrap_or(i64::MAX))
        .bind(event.at.as_str())
        .bind(event.kind.as_str())
        .bind(event.session.as_deref())
        .bind(event.identity.as_deref())
        .bind(event.connection.as_deref())
        .bind(event.run.as_deref())
        .bind(event.node.as_deref())
        .bind(event.body.canonical())
        .bind(sealed.prev.as_str())
        .bind(sealed.hash.as_str())
}

fn bind_session<'q, DB>(query: DbQuery<'q, DB>, start: &'q SessionStart) -> DbQuery<'q, DB>
where
    DB: Database,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    query
        .bind(start.id.as_str())
        .bind(start.identity.as_str())
        .bind(start.connection.as_str())
        .bind(start.client_address.as_str())
        .bind(start.user_name.as_str())
        .bind(start.application_name.as_deref())
        .bind(micros(start.started_at))
        .bind(start.credential.as_deref())
        .bind(start.token_id.as_deref())
        .bind(start.run.as_deref())
        .bind(start.node.as_deref())
}

/// Binds a statement's columns, and with `usage` its usage columns (NULL when it has none; its tokens NULL too when
/// they are a batch's that were `counted` before).
fn bind_statement<'q, DB>(
    query: DbQuery<'q, DB>,
    record: &'q StatementRecord,
    usage: bool,
    counted: bool,
) -> DbQuery<'q, DB>
where
    DB: Database,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
{
    let query = query
        .bind(&*record.session_id)
        .bind(saturating_i64(record.seq))
        .bind(micros(record.started_at))
        .bind(i64::try_from(record.duration.as_micros()).unwrap_or(i64::MAX))
        .bind(&*record.text)
        .bind(record.rows.map(saturating_i64))
        .bind(record.error.as_deref())
        .bind(record.decision.as_ref().map(|decision| if decision.allowed { "allowed" } else { "denied" }))
        .bind(record.decision.as_ref().map(|decision| decision.stored_lists()[0].as_str()))
        .bind(record.decision.as_ref().map(|decision| decision.stored_lists()[1].as_str()))
        .bind(record.decision.as_ref().map(|decision| decision.stored_lists()[2].as_str()));
    if !usage {
        return query;
    }
    let tokens = record.tokens.filter(|_| counted);
    let batch_requests = record.batch.as_ref().filter(|_| tokens.is_some()).map(|batch| saturating_i64(batch.requests));
    query
        .bind(record.model.as_deref())
        .bind(tokens.map(|tokens| saturating_i64(tokens.input)))
        .bind(tokens.map(|tokens| saturating_i64(tokens.output)))
        .bind(batch_requests)
}

/// The list columns of a statement row back into a [`Decision`]; `None` when the statement was not judged.
fn decision_from_columns(decision: Option<String>, lists: [Option<String>; 3]) -> Result<Option<Decision>, StateError> {
    let Some(decision) = decision else { return Ok(None) };
    let allowed = match decision.as_str() {
        "allowed" => true,
        "denied" => false,
        other => return Err(StateError::CorruptRow { what: format!("statement decision \"{other}\"") }),
    };
    let [classes, tables, policies] = lists.map(|list| match list {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str::<Vec<String>>(&text)
            .map_err(|error| StateError::CorruptRow { what: format!("statement decision list {text:?}: {error}") }),
    });
    Ok(Some(Decision::new(allowed, classes?, tables?, policies?)))
}

/// The token columns of a statement row back into [`Tokens`]; `None` when the statement reported no usage.
fn tokens_from_columns(input: Option<i64>, output: Option<i64>) -> Result<Option<Tokens>, StateError> {
    match (input, output) {
        (None, None) => Ok(None),
        (Some(input), Some(output)) => match (u64::try_from(input), u64::try_from(output)) {
            (Ok(input), Ok(output)) => Ok(Some(Tokens { input, output })),
            _ => Err(StateError::CorruptRow { what: format!("statement tokens {input} and {output}") }),
        },
        (input, output) => Err(StateError::CorruptRow { what: format!("statement tokens {input:?} and {output:?}") }),
    }
}

fn session_select<DB: Dialect>() -> String {
    format!(
        "SELECT id, identity, connection, client_address, user_name, application_name, {}, {}, \
         end_reason, statement_count, credential, token_id, run, node, masked FROM sessions",
        DB::micros_from_timestamp("started_at"),
        DB::micros_from_timestamp("ended_at")
    )
}

fn session_row<DB>(row: &DB::Row) -> Result<SessionRow, StateError>
where
    DB: Database,
    for<'a> i64: Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let ended_at: Option<i64> = get(row, 7)?;
    Ok(SessionRow {
        id: get(row, 0)?,
        identity: get(row, 1)?,
        connection: get(row, 2)?,
        client_address: get(row, 3)?,
        user_name: get(row, 4)?,
        application_name: get(row, 5)?,
        started_at: timestamp(get(row, 6)?)?,
        ended_at: ended_at.map(timestamp).transpose()?,
        end_reason: get(row, 8)?,
        statement_count: get(row, 9)?,
        credential: get(row, 10)?,
        token_id: get(row, 11)?,
        run: get(row, 12)?,
        node: get(row, 13)?,
        masked: masked_from_column(get(row, 14)?)?,
    })
}

/// An `audit_events` row, selected as [`AUDIT_COLUMNS`], back into a sealed event.
fn sealed_from_row<DB>(row: &DB::Row) -> Result<warden_audit::Sealed, StateError>
where
    DB: Database,
    for<'a> i64: Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let seq: i64 = get(row, 1)?;
    let body: String = get(row, 9)?;
    Ok(warden_audit::Sealed {
        event: warden_audit::Event {
            chain: get(row, 0)?,
            seq: u64::try_from(seq).map_err(|_| StateError::CorruptRow { what: format!("audit event seq {seq}") })?,
            at: get(row, 2)?,
            kind: get(row, 3)?,
            session: get(row, 4)?,
            identity: get(row, 5)?,
            connection: get(row, 6)?,
            run: get(row, 7)?,
            node: get(row, 8)?,
            // A body that is not JSON is kept as a string: verification then fails on it, naming it.
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)).into(),
        },
        prev: get(row, 10)?,
        hash: get(row, 11)?,
    })
}

/// An `audit_checkpoints` row, selected as [`CHECKPOINT_COLUMNS`], back into a checkpoint.
fn checkpoint_from_row<DB>(row: &DB::Row) -> Result<warden_audit::Checkpoint, StateError>
where
    DB: Database,
    for<'a> i64: Decode<'a, DB> + Type<DB>,
    for<'a> String: Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let seq: i64 = get(row, 1)?;
    Ok(warden_audit::Checkpoint {
        chain: get(row, 0)?,
        seq: u64::try_from(seq).map_err(|_| StateError::CorruptRow { what: format!("checkpoint seq {seq}") })?,
        head: get(row, 2)?,
        at: get(row, 3)?,
        key_id: get(row, 4)?,
        signature: get(row, 5)?,
    })
}

/// How far a pruning pass may delete a chain: events and checkpoints 1..=`through`; event `through` hashed to `head`
/// (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) through: u64,
    pub(crate) head: String,
}

/// What [`Store::prune_plan`] found.
#[derive(Debug)]
pub(crate) struct PrunePlan {
    /// Every chain's mark, the recorded ones grown by this pass.
    pub(crate) marks: BTreeMap<String, Mark>,
    /// Whether this pass grows any mark (or marks a new chain).
    pub(crate) grown: bool,
    /// Sessions that ended before the cutoff.
    pub(crate) sessions: u64,
}

/// What [`Store::prune_delete`] deleted.
#[derive(Debug)]
pub(crate) struct Pruned {
    pub(crate) sessions: u64,
    pub(crate) statements: u64,
    pub(crate) chains: Vec<crate::PrunedChain>,
}

/// Keeps the greater of two marks of a chain.
pub(crate) fn merge_mark(marks: &mut BTreeMap<String, Mark>, chain: String, mark: Mark) {
    match marks.get(&chain) {
        Some(known) if known.through >= mark.through => {}
        _ => {
            marks.insert(chain, mark);
        }
    }
}

/// The marks an `audit.pruned` body names (`{"before": …, "chains": [{"chain", "through", "head"}, …]}`); entries
/// that are not such are skipped.
fn marks_of(body: &str) -> Vec<(String, Mark)> {
    let Ok(body) = serde_json::from_str::<serde_json::Value>(body) else { return Vec::new() };
    let Some(entries) = body.get("chains").and_then(serde_json::Value::as_array) else { return Vec::new() };
    entries
        .iter()
        .filter_map(|entry| {
            let chain = entry.get("chain")?.as_str()?;
            let through = entry.get("through")?.as_u64()?;
            let head = entry.get("head")?.as_str()?;
            Some((chain.to_string(), Mark { through, head: head.to_ascii_lowercase() }))
        })
        .collect()
}

/// Whether `signer` signed `checkpoint`: Ed25519 signatures are deterministic, so signing its message again gives
/// the stored signature exactly.
fn signed_by(signer: &dyn AuditSigner, checkpoint: &warden_audit::Checkpoint) -> bool {
    checkpoint.key_id == signer.key_id()
        && warden_audit::sign_checkpoint(
            &checkpoint.chain,
            checkpoint.seq,
            &checkpoint.head,
            &checkpoint.at,
            &checkpoint.key_id,
            |message| signer.sign(message),
        )
        .signature
            == checkpoint.signature
}

/// A checkpoint `at` (RFC 3339 UTC text, as the writer formats it) that compares, as bytes, below this bound is before
/// `before`: the bound is the whole second before `before`, without a fraction ("…:41Z"), which sorts after every
/// time within that second ("…:41.5Z": '.' sorts before 'Z') and before every later one. Up to a second early.
fn checkpoint_bound(before: OffsetDateTime) -> String {
    let at = before.to_offset(time::UtcOffset::UTC) - time::Duration::seconds(1);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn placeholder<DB: Dialect>(index: usize) -> String {
    let mut text = String::new();
    DB::push_placeholder(&mut text, index);
    text
}

/// The `masked` column of a session row back into counts; empty when it is NULL.
fn masked_from_column(masked: Option<String>) -> Result<BTreeMap<String, u64>, StateError> {
    let Some(text) = masked else { return Ok(BTreeMap::new()) };
    serde_json::from_str(&text)
        .map_err(|error| StateError::CorruptRow { what: format!("session masked counts {text:?}: {error}") })
}

pub(crate) fn get<'r, R, T>(row: &'r R, index: usize) -> Result<T, StateError>
where
    R: Row,
    T: Decode<'r, R::Database> + Type<R::Database>,
    usize: ColumnIndex<R>,
{
    row.try_get(index).map_err(|source| StateError::Query { operation: "decoding a row", source })
}

/// The (table, bare name, session) rows of `session_tables` the statements add, each once: the tables their
/// decisions name, as stored (`schema.table`), and the name after the schema.
fn session_tables<'a>(statements: &[&'a StatementRecord]) -> Vec<(&'a str, &'a str, &'a str)> {
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::new();
    for record in statements {
        let Some(decision) = &record.decision else { continue };
        for table in &decision.tables {
            if seen.insert((table.as_str(), &*record.session_id)) {
                let name = table.split_once('.').map_or(table.as_str(), |(_, name)| name);
                rows.push((table.as_str(), name, &*record.session_id));
            }
        }
    }
    rows
}

/// Inserts `rows` (table, name, session) rows into `session_tables`, skipping those already there and those of
/// sessions the store does not know (their statements were skipped too).
fn insert_session_tables<DB: Dialect>(rows: usize) -> String {
    let mut sql = SqlText::<DB>::new(
        "INSERT INTO session_tables (table_name, name, session_id) SELECT column1, column2, column3 FROM (",
    );
    sql.values(rows, 3).push(
        ") AS v WHERE EXISTS (SELECT 1 FROM sessions WHERE sessions.id = v.column3) \
         ON CONFLICT (table_name, session_id) DO NOTHING",
    );
    sql.text
}

/// Per session, how many statements of the batch belong to it.
fn statement_counts<'a>(statements: &[&'a StatementRecord]) -> Vec<(&'a str, i64)> {
    let mut counts: HashMap<&'a str, i64> = HashMap::new();
    for record in statements {
        *counts.entry(&*record.session_id).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// Per session, the masked counts recorded last in the batch: each replaces the ones recorded before it.
fn last_masked_per_session<'a>(masked: &[&'a SessionMasked]) -> Vec<(&'a str, Option<&'a str>)> {
    let mut last: HashMap<&'a str, Option<&'a str>> = HashMap::new();
    for event in masked {
        last.insert(event.id.as_str(), event.masked.as_deref());
    }
    last.into_iter().collect()
}

/// Cuts statements into chunks of at most [`ROWS_PER_STATEMENT`] rows (within the bind-parameter
/// limit) and about [`BYTES_PER_STATEMENT`] of text, so a run of huge statements cannot exceed a
/// protocol message limit (PostgreSQL refuses messages over 1 GiB) or balloon one insert's memory.
pub(crate) fn statement_chunks<'b, 'a>(
    statements: &'b [&'a StatementRecord],
) -> impl Iterator<Item = &'b [&'a StatementRecord]> {
    let max_rows = rows_per_statement(STATEMENT_BINDS + USAGE_BINDS);
    let mut rest = statements;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut rows = 0;
        let mut bytes = 0;
        while rows < rest.len() && rows < max_rows && (rows == 0 || bytes < BYTES_PER_STATEMENT) {
            let record = rest[rows];
            bytes += record.text.len()
                + record.error.as_ref().map_or(0, String::len)
                + record.model.as_ref().map_or(0, String::len)
                + decision_bytes(record);
            rows += 1;
        }
        // A power of two, so a busy writer cycles through a handful of INSERT texts that stay in the
        // prepared-statement cache instead of parsing a new one for every batch size.
        let rows = 1 << (usize::BITS - 1 - rows.leading_zeros());
        let (chunk, remaining) = rest.split_at(rows);
        rest = remaining;
        Some(chunk)
    })
}

/// How much text a statement's decision adds to an insert (its stored lists, encoded once and then bound).
fn decision_bytes(record: &StatementRecord) -> usize {
    record.decision.as_ref().map_or(0, |decision| decision.stored_lists().iter().map(String::len).sum())
}

fn rows_per_statement(columns: usize) -> usize {
    ROWS_PER_STATEMENT.min(MAX_BIND_PARAMETERS / columns)
}

/// Microseconds since the Unix epoch; saturates outside ±292,000 years.
pub(crate) fn micros(at: OffsetDateTime) -> i64 {
    let micros = at.unix_timestamp_nanos().div_euclid(1000);
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

pub(crate) fn timestamp(micros: i64) -> Result<OffsetDateTime, StateError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).map_err(|_| StateError::CorruptRow {
        what: format!("timestamp {micros} µs since the Unix epoch is out of range"),
    })
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
