//! Usage accounting: the tokens LLM requests used, from the provider's usage fields as the HTTP front end recorded
//! them in each statement's `model`, `input_tokens` and `output_tokens` columns, summed per identity, connection,
//! workflow run and node (the session's) and model (the statement's).
//!
//! Only statements whose answer reported usage count: an LLM request warden refused, or one whose answer carried no
//! usage, used no tokens a provider billed. A request belongs to the period it started in. A batch's requests report
//! their usage in its results: the request that first read them whole holds their sum and counts once for each of the
//! batch's requests that reported usage (`batch_requests`); a later read of the same results holds none.
//!
//! Both queries start from the sessions (`sessions_usage`: connection, identity, ended_at) and read each session's
//! statements with usage through the partial index `statements_tokens` (session, start): a session that ended before
//! the period began cannot hold a request of it, so it is skipped without reading its statements.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use time::OffsetDateTime;

use crate::sql::{get, micros, Dialect, SqlText, Store};
use crate::StateError;

/// Which LLM requests [`crate::StateStore::usage`] sums; every field set narrows the selection.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    /// Requests that started at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Requests that started before this instant.
    pub until: Option<OffsetDateTime>,
    pub connection: Option<String>,
    pub identity: Option<String>,
    /// Requests made with a warden token issued for this workflow run (its `run` label).
    pub run: Option<String>,
    /// Requests made with a warden token issued for this workflow node (its `node` label).
    pub node: Option<String>,
}

/// What one group of LLM requests used: those of one identity on one connection, with one run and node label (from the
/// session's token; `None` without), asking for one model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UsageRow {
    pub identity: String,
    pub connection: String,
    pub run: Option<String>,
    pub node: Option<String>,
    pub model: Option<String>,
    /// Requests whose answer reported usage (a batch's results read counts its requests that did).
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl UsageRow {
    /// Input and output tokens together.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

impl<DB> Store<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// LLM usage matching `filter`, per identity, connection, run, node and model, in that order.
    pub(crate) async fn usage(&self, filter: &UsageFilter) -> Result<Vec<UsageRow>, StateError> {
        // The text and the binds follow the same conditions in the same order. sum() of a bigint is numeric in
        // PostgreSQL: cast back.
        let mut sql = SqlText::<DB>::new(
            "SELECT sessions.identity, sessions.connection, sessions.run, sessions.node, statements.model, \
             CAST(sum(COALESCE(statements.batch_requests, 1)) AS BIGINT), \
             CAST(sum(statements.input_tokens) AS BIGINT), CAST(sum(statements.output_tokens) AS BIGINT) \
             FROM sessions JOIN statements ON statements.session_id = sessions.id \
             WHERE statements.input_tokens IS NOT NULL",
        );
        if filter.connection.is_some() {
            sql.push(" AND sessions.connection = ").bind();
        }
        if filter.identity.is_some() {
            sql.push(" AND sessions.identity = ").bind();
        }
        if filter.run.is_some() {
            sql.push(" AND sessions.run = ").bind();
        }
        if filter.node.is_some() {
            sql.push(" AND sessions.node = ").bind();
        }
        if filter.since.is_some() {
            since_condition(&mut sql);
        }
        if filter.until.is_some() {
            let (before, after) = DB::TIMESTAMP_FROM_MICROS;
            sql.push(" AND sessions.started_at < ").push(before).bind().push(after);
            sql.push(" AND statements.started_at < ").push(before).bind().push(after);
        }
        sql.push(" GROUP BY sessions.identity, sessions.connection, sessions.run, sessions.node, statements.model");

        let mut query = sqlx::query(&sql.text);
        for value in [&filter.connection, &filter.identity, &filter.run, &filter.node].into_iter().flatten() {
            query = query.bind(value.as_str());
        }
        for at in [filter.since, filter.until].into_iter().flatten() {
            query = query.bind(micros(at)).bind(micros(at));
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "summing LLM usage", source })?;
        let mut usage = rows
            .iter()
            .map(|row| {
                Ok(UsageRow {
                    identity: get(row, 0)?,
                    connection: get(row, 1)?,
                    run: get(row, 2)?,
                    node: get(row, 3)?,
                    model: get(row, 4)?,
                    requests: count(get(row, 5)?, "requests")?,
                    input_tokens: count(get(row, 6)?, "input tokens")?,
                    output_tokens: count(get(row, 7)?, "output tokens")?,
                })
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        // In Rust rather than ORDER BY: the dialects sort NULLs (and, by collation, text) differently.
        usage.sort();
        Ok(usage)
    }

    /// Tokens (input + output) of the LLM requests that started at or after `since` on `connection`, per identity (of
    /// `identity` alone when given); identities that used none are absent.
    pub(crate) async fn tokens_used(
        &self,
        connection: &str,
        identity: Option<&str>,
        since: OffsetDateTime,
    ) -> Result<HashMap<String, u64>, StateError> {
        let sql = tokens_used_sql::<DB>(identity.is_some());
        let mut query = sqlx::query(&sql).bind(connection);
        if let Some(identity) = identity {
            query = query.bind(identity);
        }
        let rows = query
            .bind(micros(since))
            .bind(micros(since))
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "summing the tokens used", source })?;
        rows.iter().map(|row| Ok((get(row, 0)?, count(get(row, 1)?, "tokens")?))).collect()
    }
}

/// The query of [`Store::tokens_used`]: binds the connection, the identity when `identity`, and the start twice.
pub(crate) fn tokens_used_sql<DB: Dialect>(identity: bool) -> String {
    let mut sql = SqlText::<DB>::new(
        "SELECT sessions.identity, CAST(sum(statements.input_tokens + statements.output_tokens) AS BIGINT) \
         FROM sessions JOIN statements ON statements.session_id = sessions.id \
         WHERE statements.input_tokens IS NOT NULL AND sessions.connection = ",
    );
    sql.bind();
    if identity {
        sql.push(" AND sessions.identity = ").bind();
    }
    since_condition(&mut sql);
    sql.push(" GROUP BY sessions.identity");
    sql.text
}

/// Requests started at or after the next two binds (the same instant): the session was still open then (the index
/// skips the sessions that ended before), and the statement started then or later.
fn since_condition<DB: Dialect>(sql: &mut SqlText<DB>) {
    let (before, after) = DB::TIMESTAMP_FROM_MICROS;
    sql.push(" AND (sessions.ended_at IS NULL OR sessions.ended_at >= ").push(before).bind().push(after).push(")");
    sql.push(" AND statements.started_at >= ").push(before).bind().push(after);
}

/// A count or a sum as read back: never negative, 0 for a sum over no rows.
fn count(value: Option<i64>, what: &str) -> Result<u64, StateError> {
    let value = value.unwrap_or(0);
    u64::try_from(value).map_err(|_| StateError::CorruptRow { what: format!("{what} {value}") })
}
