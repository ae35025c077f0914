//! A side connection to a connection's upstream for what masking must ask the server: which table and column a
//! result column comes from (`pg_class`, `pg_attribute`), and what a `COPY (…) TO` outputs (Describe without running).
//!
//! It opens with the connection's own credential on first use, serves one request at a time, and is dropped and
//! reopened after any failure. Each request is bounded by a timeout; callers fail closed on any error.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::codec::{backend, frontend, BodyReader};
use crate::stream::Stream;
use crate::upstream::{self, UpstreamError, UpstreamTarget};

/// A column of a described statement's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescribedColumn {
    /// `pg_class` OID of its table (0: computed).
    pub table: u32,
    pub attnum: i16,
    pub type_oid: u32,
}

pub struct CatalogClient {
    target: Arc<UpstreamTarget>,
    timeout: Duration,
    connection: tokio::sync::Mutex<Option<(Stream, BytesMut)>>,
}

impl CatalogClient {
    pub fn new(target: Arc<UpstreamTarget>, timeout: Duration) -> CatalogClient {
        CatalogClient { target, timeout, connection: tokio::sync::Mutex::new(None) }
    }

    /// Runs one simple query; its rows as text (`None`: NULL).
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, UpstreamError> {
        let mut rows = Vec::new();
        self.exchange(&frontend::query(sql), |tag, message| {
            if tag == backend::DATA_ROW {
                rows.push(text_row(message)?);
            }
            Ok(())
        })
        .await?;
        Ok(rows)
    }

    /// Describes `sql` without running it: the source and type of each result column.
    pub async fn describe(&self, sql: &str) -> Result<Vec<DescribedColumn>, UpstreamError> {
        let mut request = frontend::parse("", sql);
        request.extend_from_slice(&describe_statement());
        request.extend_from_slice(&sync());
        let mut columns = Vec::new();
        self.exchange(&request, |tag, message| {
            if tag == backend::ROW_DESCRIPTION {
                let mut reader = BodyReader::new(message);
                let count = reader.i16()?.max(0);
                for _ in 0..count {
                    reader.cstr()?;
                    let table = reader.i32()? as u32;
                    let attnum = reader.i16()?;
                    let type_oid = reader.i32()? as u32;
                    reader.take(8)?;
                    columns.push(DescribedColumn { table, attnum, type_oid });
                }
            }
            Ok(())
        })
        .await?;
        Ok(columns)
    }

    /// Sends `request` and reads up to ReadyForQuery, handing each message to `on_message`; the first
    /// ErrorResponse is the result.
    async fn exchange(
        &self,
        request: &[u8],
        mut on_message: impl FnMut(u8, &[u8]) -> Result<(), crate::codec::CodecError> + Send,
    ) -> Result<(), UpstreamError> {
        let mut slot = self.connection.lock().await;
        let work = async {
            if slot.is_none() {
                let session =
                    upstream::connect(&self.target, &[("application_name".into(), "warden-catalog".into())]).await?;
                *slot = Some((session.stream, BytesMut::from(&session.early_bytes[..])));
            }
            let (stream, buffer) = slot.as_mut().expect("just opened");
            stream.write_all(request).await?;
            stream.flush().await?;
            let mut failure = None;
            loop {
                let message = upstream::read_message(stream, buffer).await?;
                match message[0] {
                    backend::ERROR_RESPONSE => {
                        failure.get_or_insert(UpstreamError::Refused(backend::error_fields(&message)?));
                    }
                    backend::READY_FOR_QUERY => break,
                    tag => on_message(tag, &message)?,
                }
            }
            match failure {
                Some(error) => Err(error),
                None => Ok(()),
            }
        };
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Protocol(format!("no answer within {:?}", self.timeout))),
        };
        // After a protocol or IO failure the connection's state is unknown: reopen next time. A server error
        // (Refused) leaves it usable.
        if matches!(&result, Err(error) if !matches!(error, UpstreamError::Refused(_))) {
            *slot = None;
        }
        result
    }
}

fn describe_statement() -> Vec<u8> {
    vec![frontend::DESCRIBE, 0, 0, 0, 6, b'S', 0]
}

fn sync() -> [u8; 5] {
    [frontend::SYNC, 0, 0, 0, 4]
}

fn text_row(message: &[u8]) -> Result<Vec<Option<String>>, crate::codec::CodecError> {
    let mut reader = BodyReader::new(message);
    let count = reader.i16()?.max(0);
    let mut values = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let length = reader.i32()?;
        if length < 0 {
            values.push(None);
        } else {
            values.push(Some(String::from_utf8_lossy(reader.take(length as usize)?).into_owned()));
        }
    }
    Ok(values)
}
