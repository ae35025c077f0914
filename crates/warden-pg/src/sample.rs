//! Result sampling for the audit trail: the first rows of each statement's result, decoded to text, as the
//! client received them (after masking, when the session masks). The gateway masks the sample again with the
//! connection's masker before it is recorded, so the audit trail holds no more than masking lets through.
//!
//! The sample is bounded twice: at most `max_rows` rows and [`SAMPLE_BYTES`] bytes of values per statement; a
//! row that would pass either bound is not kept (never cut in the middle of a value, where a detector could miss
//! half of it). What was not kept is counted from the server's row count.
//!
//! Column names and formats come from the RowDescription that precedes the rows. An extended-protocol Execute of a
//! statement described in an earlier batch has none: its rows are kept with `columns: null`, and values whose
//! format is unknown are rendered as text when they are printable UTF-8, as `\x` hex otherwise.

use crate::codec::{BodyReader, CodecError};

/// The most bytes of values one statement's sample keeps.
pub const SAMPLE_BYTES: usize = 64 * 1024;

/// The rows of a statement's result kept for its audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSample {
    /// One per result set (a simple query may hold several statements).
    pub sets: Vec<ResultSet>,
    /// Rows the server sent that the sample does not hold.
    pub cut: u64,
}

/// One result set's columns and kept rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// The column names, when a RowDescription announced them.
    pub columns: Option<Vec<String>>,
    /// Each row's values as text; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

impl ResultSample {
    /// Rows kept, over all sets.
    pub fn kept(&self) -> u64 {
        self.sets.iter().map(|set| set.rows.len() as u64).sum()
    }

    /// Applies `mask` to every value (and column name).
    pub fn map_values(&mut self, mut mask: impl FnMut(&str) -> Option<String>) {
        for set in &mut self.sets {
            for row in &mut set.rows {
                for value in row.iter_mut().flatten() {
                    if let Some(masked) = mask(value) {
                        *value = masked;
                    }
                }
            }
        }
    }
}

/// How a column's values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Binary(u32),
    /// Described by a statement Describe: the Bind that follows chose the format.
    Unknown,
}

struct Described {
    names: Vec<String>,
    formats: Vec<Format>,
}

/// Builds the sample of the statement whose response is flowing, one message at a time.
pub(crate) struct Sampler {
    max_rows: u64,
    /// The columns the next rows have, from the RowDescription before them.
    described: Option<Described>,
    /// The last message was a ParameterDescription: a RowDescription now describes a statement, not a portal.
    after_parameters: bool,
    /// The set rows are being added to.
    open: bool,
    sample: Option<ResultSample>,
    kept: u64,
    bytes: usize,
}

impl Sampler {
    pub(crate) fn new(max_rows: u32) -> Sampler {
        Sampler {
            max_rows: u64::from(max_rows),
            described: None,
            after_parameters: false,
            open: false,
            sample: None,
            kept: 0,
            bytes: 0,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.max_rows > 0
    }

    /// Whether a DataRow of `total` bytes would still be kept: the relay inspects only those (and lets the others
    /// pass without holding them whole).
    pub(crate) fn wants_row(&self, total: usize) -> bool {
        self.enabled() && self.kept < self.max_rows && self.bytes + total <= SAMPLE_BYTES
    }

    /// A ParameterDescription: the RowDescription or NoData right after it answers a statement Describe.
    pub(crate) fn on_parameter_description(&mut self) {
        self.after_parameters = true;
    }

    /// NoData: what follows has no columns.
    pub(crate) fn on_no_data(&mut self) {
        self.after_parameters = false;
        self.described = None;
        self.open = false;
    }

    pub(crate) fn on_row_description(&mut self, message: &[u8]) -> Result<(), CodecError> {
        if !self.enabled() {
            return Ok(());
        }
        let statement = std::mem::take(&mut self.after_parameters);
        let mut reader = BodyReader::new(message);
        let count = usize::try_from(reader.i16()?).unwrap_or(0);
        let mut names = Vec::with_capacity(count.min(message.len() / 19 + 1));
        let mut formats = Vec::with_capacity(names.capacity());
        for _ in 0..count {
            names.push(String::from_utf8_lossy(reader.cstr()?).into_owned());
            let _table = reader.i32()?;
            let _attnum = reader.i16()?;
            let type_oid = reader.i32()? as u32;
            let _size = reader.i16()?;
            let _modifier = reader.i32()?;
            let format = reader.i16()?;
            formats.push(match (statement, format) {
                (true, _) => Format::Unknown,
                (false, 1) => Format::Binary(type_oid),
                (false, _) => Format::Text,
            });
        }
        self.described = Some(Described { names, formats });
        self.open = false;
        Ok(())
    }

    /// A DataRow the relay chose to inspect ([`Sampler::wants_row`]); `message` is what the client received.
    pub(crate) fn on_data_row(&mut self, message: &[u8]) -> Result<(), CodecError> {
        self.after_parameters = false;
        if !self.wants_row(message.len()) {
            return Ok(());
        }
        let mut reader = BodyReader::new(message);
        let count = usize::try_from(reader.i16()?).unwrap_or(0);
        let formats = match &self.described {
            Some(described) if described.formats.len() == count => Some(&described.formats),
            _ => None,
        };
        let mut row = Vec::with_capacity(count.min(message.len() / 4 + 1));
        for index in 0..count {
            let length = reader.i32()?;
            if length < 0 {
                row.push(None);
                continue;
            }
            let value = reader.take(length as usize)?;
            let format = formats.map_or(Format::Unknown, |formats| formats[index]);
            row.push(Some(render(value, format)));
        }
        let sample = self.sample.get_or_insert_with(ResultSample::default);
        if !self.open {
            let columns = match &self.described {
                Some(described) if described.names.len() == count => Some(described.names.clone()),
                _ => None,
            };
            sample.sets.push(ResultSet { columns, rows: Vec::new() });
            self.open = true;
        }
        if let Some(set) = sample.sets.last_mut() {
            set.rows.push(row);
        }
        self.kept += 1;
        self.bytes += message.len();
        Ok(())
    }

    /// A result set ended (CommandComplete, PortalSuspended, an error): its columns do not carry over.
    pub(crate) fn end_of_set(&mut self) {
        self.after_parameters = false;
        if self.open || self.described.is_some() {
            // A described result with no rows is still a result: keep its columns.
            if !self.open {
                if let Some(described) = &self.described {
                    self.sample
                        .get_or_insert_with(ResultSample::default)
                        .sets
                        .push(ResultSet { columns: Some(described.names.clone()), rows: Vec::new() });
                }
            }
            self.open = false;
            self.described = None;
        }
    }

    /// A statement completed with `rows` rows (when the server counted them): its sample, if it had a result.
    pub(crate) fn take(&mut self, rows: Option<u64>) -> Option<ResultSample> {
        self.end_of_set();
        let mut sample = self.sample.take()?;
        sample.cut = rows.unwrap_or(0).saturating_sub(self.kept);
        self.kept = 0;
        self.bytes = 0;
        Some(sample)
    }

    /// ReadyForQuery: nothing described before it describes what comes after.
    pub(crate) fn on_ready(&mut self) {
        self.after_parameters = false;
        self.described = None;
        self.open = false;
        self.sample = None;
        self.kept = 0;
        self.bytes = 0;
    }
}

fn render(value: &[u8], format: Format) -> String {
    match format {
        Format::Text => String::from_utf8_lossy(value).into_owned(),
        Format::Binary(type_oid) => binary(value, type_oid).unwrap_or_else(|| hex(value)),
        Format::Unknown => match std::str::from_utf8(value) {
            Ok(text) if !text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) => text.to_string(),
            _ => hex(value),
        },
    }
}

/// The common binary encodings, as PostgreSQL prints them in text.
fn binary(value: &[u8], type_oid: u32) -> Option<String> {
    Some(match (type_oid, value.len()) {
        (16, 1) => if value[0] != 0 { "t" } else { "f" }.to_string(),
        (21, 2) => i16::from_be_bytes(value.try_into().ok()?).to_string(),
        (23, 4) => i32::from_be_bytes(value.try_into().ok()?).to_string(),
        (26, 4) => u32::from_be_bytes(value.try_into().ok()?).to_string(),
        (20, 8) => i64::from_be_bytes(value.try_into().ok()?).to_string(),
        (700, 4) => f32::from_be_bytes(value.try_into().ok()?).to_string(),
        (701, 8) => f64::from_be_bytes(value.try_into().ok()?).to_string(),
        (2950, 16) => {
            let hex = hex::encode(value);
            format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
        }
        (25 | 1043 | 1042 | 19 | 18 | 705 | 114, _) => String::from_utf8_lossy(value).into_owned(),
        (3802, _) if value.first() == Some(&1) => String::from_utf8_lossy(&value[1..]).into_owned(),
        _ => return None,
    })
}

fn hex(value: &[u8]) -> String {
    format!("\\x{}", hex::encode(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::build;

    fn row_description(columns: &[(&str, u32, i16)]) -> Vec<u8> {
        let mut out = Vec::new();
        build(&mut out, b'T', |body| {
            body.extend_from_slice(&(columns.len() as i16).to_be_bytes());
            for (name, type_oid, format) in columns {
                body.extend_from_slice(name.as_bytes());
                body.push(0);
                body.extend_from_slice(&0i32.to_be_bytes());
                body.extend_from_slice(&0i16.to_be_bytes());
                body.extend_from_slice(&(*type_oid as i32).to_be_bytes());
                body.extend_from_slice(&(-1i16).to_be_bytes());
                body.extend_from_slice(&(-1i32).to_be_bytes());
                body.extend_from_slice(&format.to_be_bytes());
            }
        });
        out
    }

    fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = Vec::new();
        build(&mut out, b'D', |body| {
            body.extend_from_slice(&(values.len() as i16).to_be_bytes());
            for value in values {
                match value {
                    Some(value) => {
                        body.extend_from_slice(&(value.len() as i32).to_be_bytes());
                        body.extend_from_slice(value);
                    }
                    None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        });
        out
    }

    fn feed_row(sampler: &mut Sampler, row: &[u8]) {
        if sampler.wants_row(row.len()) {
            sampler.on_data_row(row).expect("row");
        }
    }

    #[test]
    fn keeps_the_first_rows_and_counts_the_rest() {
        let mut sampler = Sampler::new(2);
        sampler.on_row_description(&row_description(&[("id", 23, 0), ("email", 25, 0)])).unwrap();
        for id in 1..=5 {
            let id = id.to_string();
            feed_row(&mut sampler, &data_row(&[Some(id.as_bytes()), None]));
        }
        let sample = sampler.take(Some(5)).expect("a sample");
        assert_eq!(sample.cut, 3);
        assert_eq!(sample.sets.len(), 1);
        assert_eq!(sample.sets[0].columns.as_deref(), Some(&["id".to_string(), "email".to_string()][..]));
        assert_eq!(sample.sets[0].rows, vec![vec![Some("1".into()), None], vec![Some("2".into()), None]]);
        // The next statement starts afresh.
        assert!(sampler.take(Some(0)).is_none());
    }

    #[test]
    fn binary_values_are_rendered_as_text() {
        let mut sampler = Sampler::new(10);
        sampler
            .on_row_description(&row_description(&[("n", 20, 1), ("ok", 16, 1), ("u", 2950, 1), ("b", 17, 1)]))
            .unwrap();
        let uuid = [0x12u8; 16];
        feed_row(&mut sampler, &data_row(&[Some(&(-7i64).to_be_bytes()), Some(&[1]), Some(&uuid), Some(&[0, 0xff])]));
        let sample = sampler.take(Some(1)).unwrap();
        assert_eq!(
            sample.sets[0].rows[0],
            vec![
                Some("-7".to_string()),
                Some("t".to_string()),
                Some("12121212-1212-1212-1212-121212121212".to_string()),
                Some("\\x00ff".to_string())
            ]
        );
    }

    #[test]
    fn a_statement_description_leaves_the_format_unknown() {
        let mut sampler = Sampler::new(10);
        sampler.on_parameter_description();
        sampler.on_row_description(&row_description(&[("name", 25, 0), ("n", 23, 0)])).unwrap();
        feed_row(&mut sampler, &data_row(&[Some(b"alice@example.com"), Some(&5i32.to_be_bytes())]));
        let sample = sampler.take(Some(1)).unwrap();
        assert_eq!(sample.sets[0].rows[0], vec![Some("alice@example.com".into()), Some("\\x00000005".into())]);
    }

    #[test]
    fn rows_without_a_description_have_no_column_names_and_ready_forgets_descriptions() {
        let mut sampler = Sampler::new(10);
        sampler.on_row_description(&row_description(&[("a", 25, 0)])).unwrap();
        sampler.on_ready();
        feed_row(&mut sampler, &data_row(&[Some(b"x")]));
        let sample = sampler.take(Some(1)).unwrap();
        assert_eq!(sample.sets, vec![ResultSet { columns: None, rows: vec![vec![Some("x".into())]] }]);
    }

    #[test]
    fn the_byte_bound_skips_whole_rows_and_several_sets_are_kept_apart() {
        let mut sampler = Sampler::new(100);
        sampler.on_row_description(&row_description(&[("a", 25, 0)])).unwrap();
        let big = vec![b'x'; SAMPLE_BYTES];
        feed_row(&mut sampler, &data_row(&[Some(b"small")]));
        feed_row(&mut sampler, &data_row(&[Some(&big)]));
        sampler.end_of_set();
        sampler.on_row_description(&row_description(&[("b", 25, 0)])).unwrap();
        sampler.end_of_set();
        let sample = sampler.take(Some(2)).unwrap();
        assert_eq!(sample.cut, 1);
        assert_eq!(sample.sets.len(), 2);
        assert_eq!(sample.sets[1], ResultSet { columns: Some(vec!["b".into()]), rows: Vec::new() });
    }

    #[test]
    fn disabled_keeps_nothing() {
        let mut sampler = Sampler::new(0);
        sampler.on_row_description(&row_description(&[("a", 25, 0)])).unwrap();
        assert!(!sampler.wants_row(10));
        assert!(sampler.take(Some(3)).is_none());
    }

    #[test]
    fn malformed_rows_are_errors_not_panics() {
        let mut sampler = Sampler::new(10);
        let mut row = data_row(&[Some(b"abc")]);
        row.truncate(row.len() - 1);
        let length = (row.len() - 1) as i32;
        row[1..5].copy_from_slice(&length.to_be_bytes());
        assert!(sampler.on_data_row(&row).is_err());
    }
}
