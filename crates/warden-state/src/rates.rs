//! Rate counts shared by gateway replicas: the requests and tokens each replica counted per connection, identity and
//! time slot (`rate_counts`), so that a per-minute limit holds for an identity across every replica sharing the
//! store, not per replica. Each replica adds its own counts ([`StateStore::add_rate_counts`]), reads the others'
//! ([`StateStore::rate_counts_of_others`]) and deletes slots nobody needs any more
//! ([`StateStore::prune_rate_counts`]). What a slot is (its length) is the caller's.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use crate::sql::{get, Dialect, SqlText, Store};
use crate::{Backend, StateError, StateStore};

/// Rows added by one statement (6 binds each, well under either dialect's limit).
const RATE_ROWS_PER_STATEMENT: usize = 500;

/// What one replica counted for one identity on one connection in one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCount {
    pub connection: String,
    pub identity: String,
    pub slot: i64,
    pub requests: u64,
    pub tokens: u64,
}

impl StateStore {
    /// Adds `counts` (this replica's, since it last added; one per connection, identity and slot) to what the store
    /// holds for `replica`, in one transaction.
    pub async fn add_rate_counts(&self, replica: &str, counts: &[RateCount]) -> Result<(), StateError> {
        if counts.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Sqlite(store) => store.add_rate_counts(replica, counts).await,
            Backend::Postgres(store) => store.add_rate_counts(replica, counts).await,
        }
    }

    /// What every replica but `replica` counted on `connection` in slots `since` and later, per identity and slot.
    pub async fn rate_counts_of_others(
        &self,
        replica: &str,
        connection: &str,
        since: i64,
    ) -> Result<Vec<RateCount>, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.rate_counts_of_others(replica, connection, since).await,
            Backend::Postgres(store) => store.rate_counts_of_others(replica, connection, since).await,
        }
    }

    /// Deletes the counts of slots before `before`; how many rows went.
    pub async fn prune_rate_counts(&self, before: i64) -> Result<u64, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => store.prune_rate_counts(before).await,
            Backend::Postgres(store) => store.prune_rate_counts(before).await,
        }
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
    async fn add_rate_counts(&self, replica: &str, counts: &[RateCount]) -> Result<(), StateError> {
        let failed = |source| StateError::Query { operation: "adding rate counts", source };
        let mut transaction = self.pool.begin().await.map_err(failed)?;
        // One statement per chunk; a chunk's rows are distinct (one per connection, identity and slot).
        for chunk in counts.chunks(RATE_ROWS_PER_STATEMENT) {
            let mut sql =
                SqlText::<DB>::new("INSERT INTO rate_counts (connection, slot, identity, replica, requests, tokens) ");
            sql.values(chunk.len(), 6).push(
                " ON CONFLICT (connection, slot, identity, replica) DO UPDATE SET \
                 requests = rate_counts.requests + excluded.requests, tokens = rate_counts.tokens + excluded.tokens",
            );
            let mut query = sqlx::query(&sql.text);
            for count in chunk {
                query = query
                    .bind(count.connection.as_str())
                    .bind(count.slot)
                    .bind(count.identity.as_str())
                    .bind(replica)
                    .bind(i64::try_from(count.requests).unwrap_or(i64::MAX))
                    .bind(i64::try_from(count.tokens).unwrap_or(i64::MAX));
            }
            query.execute(&mut *transaction).await.map_err(failed)?;
        }
        transaction.commit().await.map_err(failed)
    }

    async fn rate_counts_of_others(
        &self,
        replica: &str,
        connection: &str,
        since: i64,
    ) -> Result<Vec<RateCount>, StateError> {
        let mut sql = SqlText::<DB>::new(
            "SELECT identity, slot, CAST(sum(requests) AS BIGINT), CAST(sum(tokens) AS BIGINT) FROM rate_counts \
             WHERE connection = ",
        );
        sql.bind().push(" AND slot >= ").bind().push(" AND replica <> ").bind().push(" GROUP BY identity, slot");
        let rows = sqlx::query(&sql.text)
            .bind(connection)
            .bind(since)
            .bind(replica)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "reading other replicas' rate counts", source })?;
        rows.iter()
            .map(|row| {
                let number = |index: usize, what: &str| -> Result<u64, StateError> {
                    let value: i64 = get(row, index)?;
                    u64::try_from(value)
                        .map_err(|_| StateError::CorruptRow { what: format!("rate count {what} {value}") })
                };
                Ok(RateCount {
                    connection: connection.to_string(),
                    identity: get(row, 0)?,
                    slot: get(row, 1)?,
                    requests: number(2, "requests")?,
                    tokens: number(3, "tokens")?,
                })
            })
            .collect()
    }

    async fn prune_rate_counts(&self, before: i64) -> Result<u64, StateError> {
        let mut sql = SqlText::<DB>::new("DELETE FROM rate_counts WHERE slot < ");
        sql.bind();
        let done = sqlx::query(&sql.text)
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(|source| StateError::Query { operation: "deleting old rate counts", source })?;
        Ok(DB::rows_affected(&done))
    }
}
