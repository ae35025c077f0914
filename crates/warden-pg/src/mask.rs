//! Masking of what the upstream sends, in PostgreSQL's wire formats: DataRow values in text and binary format,
//! CopyData rows (text, csv, binary), ErrorResponse and NoticeResponse fields, notification payloads, fast-path
//! function results.
//!
//! The relay hands each whole message here with the plan for its columns; the values are masked with the session's
//! [`warden_mask::Masker`] (content detection) and column rules (a strategy whatever the content). A value whose type
//! cannot hold a mask (a number, a date, a binary value of a type warden does not decode) is sent as NULL when it must
//! be masked, never as the original. Nothing here does IO.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use warden_mask::{Kind, Strategy};

use crate::codec::{BodyReader, CodecError, HEADER_LEN};
use crate::hooks::{Annotation, CopyShape, DerivedRule, ResponseMasking, SourceColumn};

/// What warden knows of a value's type, for masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueKind {
    /// Text in both formats (text, varchar, bpchar, name, char, xml, unknown, citext-like domains are `Other`).
    Text,
    /// `json` (text in both formats).
    Json,
    /// `jsonb` (binary format: a version byte, then the text).
    Jsonb,
    /// Types that cannot carry text (numbers, booleans, dates and times, UUIDs): never scanned.
    Safe,
    /// One-dimensional or more arrays of text-like elements.
    TextArray,
    /// `inet`, `cidr`: an address, which the IP detectors may mask.
    Inet,
    /// Anything else: composite rows, enums, domains, extension types, bytea.
    Other,
}

pub(crate) fn value_kind(type_oid: u32) -> ValueKind {
    match type_oid {
        25 | 1043 | 1042 | 19 | 18 | 705 | 142 => ValueKind::Text,
        114 => ValueKind::Json,
        3802 => ValueKind::Jsonb,
        16 | 20 | 21 | 23 | 26 | 700 | 701 | 1700 | 1082 | 1083 | 1114 | 1184 | 1186 | 1266 | 2950 | 790 | 28 | 29
        | 3220 => ValueKind::Safe,
        1009 | 1015 | 1014 | 1003 | 199 | 3807 | 1002 | 143 => ValueKind::TextArray,
        869 | 650 => ValueKind::Inet,
        _ => ValueKind::Other,
    }
}

/// How one result column is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ColumnPlan {
    pub kind: ValueKind,
    pub binary: bool,
    /// A column rule (or the derived-value rule): applied whatever the content.
    pub rule: Option<Strategy>,
    /// JSON members are masked by key (column rules by column name).
    pub json_members: bool,
}

/// The columns of a result, with the statement they belong to.
pub(crate) struct Shape {
    pub columns: Vec<ColumnPlan>,
    pub annotation: Option<Annotation>,
}

/// A RowDescription field, as masking needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub source: SourceColumn,
    pub type_oid: u32,
    pub format: i16,
}

pub(crate) fn row_description(message: &[u8]) -> Result<Vec<Field>, CodecError> {
    let mut reader = BodyReader::new(message);
    let count = reader.i16()?;
    let count = usize::try_from(count).map_err(|_| malformed(b'T', "negative field count"))?;
    let mut fields = Vec::with_capacity(count.min(message.len() / 19 + 1));
    for _ in 0..count {
        reader.cstr()?;
        let table = reader.i32()? as u32;
        let attnum = reader.i16()?;
        let type_oid = reader.i32()? as u32;
        let _type_size = reader.i16()?;
        let _type_modifier = reader.i32()?;
        let format = reader.i16()?;
        fields.push(Field { source: SourceColumn { table, attnum }, type_oid, format });
    }
    Ok(fields)
}

fn malformed(tag: u8, reason: &'static str) -> CodecError {
    CodecError::Malformed { tag: tag as char, reason }
}

/// The rule for a computed value of `kind`.
fn derived_for(kind: ValueKind, derived: DerivedRule) -> Option<Strategy> {
    match kind {
        ValueKind::Text | ValueKind::TextArray | ValueKind::Other => derived.text,
        ValueKind::Json | ValueKind::Jsonb => derived.json,
        ValueKind::Safe | ValueKind::Inet => None,
    }
}

/// A masked value: unchanged, SQL NULL, or new bytes.
enum Masked<'a> {
    Same,
    Null,
    Bytes(Cow<'a, [u8]>),
}

/// One session's masking: the gateway's hooks and the counts of masked values.
pub(crate) struct SessionMasking {
    pub hooks: Box<dyn ResponseMasking>,
    counts: HashMap<Kind, u64>,
    columns: u64,
}

impl SessionMasking {
    pub fn new(hooks: Box<dyn ResponseMasking>) -> SessionMasking {
        SessionMasking { hooks, counts: HashMap::new(), columns: 0 }
    }

    /// Counts by detector name, `column` for column rules.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let masker = self.hooks.masker();
        let mut counts: BTreeMap<String, u64> =
            self.counts.iter().map(|(kind, count)| (masker.name(*kind).to_string(), *count)).collect();
        if self.columns > 0 {
            counts.insert("column".to_string(), self.columns);
        }
        counts
    }

    /// Plans a result's columns; `Err` names the tables to look up first.
    pub fn plan(&self, fields: &[Field], statement: &str, annotation: Option<Annotation>) -> Result<Shape, Vec<u32>> {
        let rules = if self.hooks.has_column_rules() {
            let sources: Vec<SourceColumn> =
                fields.iter().filter(|field| field.source.table != 0).map(|field| field.source).collect();
            if sources.is_empty() {
                Vec::new()
            } else {
                self.hooks.column_rules(&sources)?
            }
        } else {
            Vec::new()
        };
        let computes =
            fields.iter().any(|field| field.source.table == 0 && value_kind(field.type_oid) != ValueKind::Safe);
        let derived = if computes && self.hooks.has_column_rules() {
            self.hooks.derived_rule(statement, annotation.as_ref())
        } else {
            DerivedRule::default()
        };
        let mut next_rule = rules.into_iter();
        let columns = fields
            .iter()
            .map(|field| {
                let kind = value_kind(field.type_oid);
                let rule =
                    if field.source.table != 0 { next_rule.next().flatten() } else { derived_for(kind, derived) };
                ColumnPlan {
                    kind,
                    binary: field.format == 1,
                    rule,
                    json_members: self.hooks.has_column_rules() && matches!(kind, ValueKind::Json | ValueKind::Jsonb),
                }
            })
            .collect();
        Ok(Shape { columns, annotation })
    }

    /// Appends `message` (a DataRow) to `out`, its values masked per `shape`.
    pub fn data_row(&mut self, message: &[u8], shape: &Shape, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut reader = BodyReader::new(message);
        let count = reader.i16()?;
        if usize::try_from(count).ok() != Some(shape.columns.len()) {
            return Err(malformed(b'D', "column count differs from the row description"));
        }
        let start = out.len();
        out.extend_from_slice(&message[..HEADER_LEN + 2]);
        for plan in &shape.columns {
            let length = reader.i32()?;
            if length < 0 {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            let value = reader.take(length as usize)?;
            match self.value(plan, value, shape.annotation.as_ref()) {
                Masked::Same => push_value(out, Some(value)),
                Masked::Null => push_value(out, None),
                Masked::Bytes(bytes) => push_value(out, Some(&bytes)),
            }
        }
        if !reader.is_empty() {
            return Err(malformed(b'D', "trailing bytes after the last column"));
        }
        patch_length(out, start)
    }

    fn value<'v>(&mut self, plan: &ColumnPlan, value: &'v [u8], annotation: Option<&Annotation>) -> Masked<'v> {
        if let Some(strategy) = plan.rule {
            self.columns += 1;
            return self.rule_value(plan, value, strategy);
        }
        match plan.kind {
            ValueKind::Safe => Masked::Same,
            ValueKind::Text => self.text_value(value),
            ValueKind::Json => self.json_value(value, plan.json_members, annotation),
            ValueKind::Jsonb if plan.binary => match value.split_first() {
                Some((1, document)) => match self.json_value(document, plan.json_members, annotation) {
                    Masked::Bytes(masked) => {
                        let mut bytes = Vec::with_capacity(masked.len() + 1);
                        bytes.push(1);
                        bytes.extend_from_slice(&masked);
                        Masked::Bytes(Cow::Owned(bytes))
                    }
                    other => other,
                },
                _ => self.opaque_value(value),
            },
            ValueKind::Jsonb => self.json_value(value, plan.json_members, annotation),
            ValueKind::TextArray if plan.binary => match self.binary_array(value) {
                Some(masked) => masked,
                None => self.opaque_value(value),
            },
            ValueKind::TextArray => self.text_value(value),
            ValueKind::Inet if plan.binary => match render_inet(value) {
                Some(text) if self.count_findings(&text) => Masked::Null,
                Some(_) => Masked::Same,
                None => self.opaque_value(value),
            },
            // An address masked in text would not parse as an address: NULL.
            ValueKind::Inet => match self.text_value(value) {
                Masked::Same => Masked::Same,
                _ => Masked::Null,
            },
            ValueKind::Other if plan.binary => self.opaque_value(value),
            ValueKind::Other => self.text_value(value),
        }
    }

    /// A column rule's value: text-like types get the strategy's rendering, JSON a JSON string; other types NULL.
    fn rule_value<'v>(&self, plan: &ColumnPlan, value: &'v [u8], strategy: Strategy) -> Masked<'v> {
        let text = String::from_utf8_lossy(value);
        let masked = match plan.kind {
            ValueKind::Text | ValueKind::Other if !plan.binary || plan.kind == ValueKind::Text => {
                self.hooks.masker().mask_value(&text, strategy, None)
            }
            ValueKind::Json | ValueKind::Jsonb => {
                let document = match (plan.kind, plan.binary) {
                    (ValueKind::Jsonb, true) => String::from_utf8_lossy(value.get(1..).unwrap_or_default()),
                    _ => text,
                };
                let Some(masked) = self.hooks.masker().mask_value(&document, strategy, None) else {
                    return Masked::Null;
                };
                let mut rendered = if plan.kind == ValueKind::Jsonb && plan.binary { vec![1u8] } else { Vec::new() };
                rendered.extend_from_slice(json_string(&masked).as_bytes());
                return Masked::Bytes(Cow::Owned(rendered));
            }
            _ => None,
        };
        match masked {
            Some(masked) => Masked::Bytes(Cow::Owned(masked.into_bytes())),
            None => Masked::Null,
        }
    }

    /// Counts what is detected in `text`; whether anything was.
    fn count_findings(&mut self, text: &str) -> bool {
        let findings = self.hooks.masker().find(text);
        for finding in &findings {
            *self.counts.entry(finding.kind).or_default() += 1;
        }
        !findings.is_empty()
    }

    /// Content detection over a text value.
    fn text_value<'v>(&mut self, value: &'v [u8]) -> Masked<'v> {
        match std::str::from_utf8(value) {
            Ok(text) => {
                let counts = &mut self.counts;
                match self.hooks.masker().mask_counting(text, &mut |kind| *counts.entry(kind).or_default() += 1) {
                    Cow::Borrowed(_) => Masked::Same,
                    Cow::Owned(masked) => Masked::Bytes(Cow::Owned(masked.into_bytes())),
                }
            }
            // Not UTF-8 (another client encoding): a value with anything detected in it is withheld whole.
            Err(_) => self.opaque_value(value),
        }
    }

    /// A value warden cannot rewrite in place: scanned as text as far as it is text; withheld (NULL) when anything is
    /// detected in it.
    fn opaque_value<'v>(&mut self, value: &'v [u8]) -> Masked<'v> {
        if self.count_findings(&String::from_utf8_lossy(value)) {
            Masked::Null
        } else {
            Masked::Same
        }
    }

    fn json_value<'v>(&mut self, value: &'v [u8], members: bool, annotation: Option<&Annotation>) -> Masked<'v> {
        let Ok(text) = std::str::from_utf8(value) else {
            return self.opaque_value(value);
        };
        let by_key = if members {
            let hooks = &self.hooks;
            let mut masked_members = 0u64;
            let rule = |key: &str| hooks.json_member_rule(annotation, key);
            let result = warden_mask::mask_json_members(text, hooks.masker(), &rule, &mut || masked_members += 1);
            self.columns += masked_members;
            let document = text.trim_start().starts_with(['{', '[']);
            if result.is_none() && document {
                // A document warden cannot walk (malformed, or nested too deep) may hide a masked column's value
                // under its key: withheld whole.
                self.columns += 1;
                return Masked::Bytes(Cow::Owned(json_string("[MASKED]").into_bytes()));
            }
            result
        } else {
            None
        };
        let counts = &mut self.counts;
        let masker = self.hooks.masker();
        let mut count = |kind| *counts.entry(kind).or_default() += 1;
        match by_key {
            Some(Cow::Owned(document)) => {
                let masked = masker.mask_counting(&document, &mut count).into_owned();
                Masked::Bytes(Cow::Owned(masked.into_bytes()))
            }
            _ => match masker.mask_counting(text, &mut count) {
                Cow::Borrowed(_) => Masked::Same,
                Cow::Owned(masked) => Masked::Bytes(Cow::Owned(masked.into_bytes())),
            },
        }
    }

    /// A binary-format array of text-like elements, each element masked; `None` when it does not decode.
    fn binary_array<'v>(&mut self, value: &'v [u8]) -> Option<Masked<'v>> {
        let mut reader = BodyReader::over(b'D', value);
        let dimensions = reader.i32().ok()?;
        let _flags = reader.i32().ok()?;
        let element_type = reader.i32().ok()? as u32;
        if !(0..=6).contains(&dimensions) {
            return None;
        }
        let mut elements: usize = 1;
        for _ in 0..dimensions {
            let length = usize::try_from(reader.i32().ok()?).ok()?;
            let _lower = reader.i32().ok()?;
            elements = elements.checked_mul(length)?;
        }
        if dimensions == 0 {
            elements = 0;
        }
        let element_kind = value_kind(element_type);
        let header = value.len() - reader.rest().len();
        let mut out = value[..header].to_vec();
        let mut changed = false;
        for _ in 0..elements {
            let length = reader.i32().ok()?;
            if length < 0 {
                push_value(&mut out, None);
                continue;
            }
            let element = reader.take(length as usize).ok()?;
            let masked = match element_kind {
                ValueKind::Text | ValueKind::Json => self.text_value(element),
                ValueKind::Jsonb => self.opaque_value(element),
                _ => return None,
            };
            match masked {
                Masked::Same => push_value(&mut out, Some(element)),
                Masked::Null => {
                    changed = true;
                    push_value(&mut out, None);
                }
                Masked::Bytes(bytes) => {
                    changed = true;
                    push_value(&mut out, Some(&bytes));
                }
            }
        }
        if !reader.is_empty() {
            return None;
        }
        Some(if changed { Masked::Bytes(Cow::Owned(out)) } else { Masked::Same })
    }

    /// Appends an ErrorResponse or NoticeResponse with its text fields masked. When the error names a table that has
    /// masked columns, the row values quoted in its detail (`Key (email)=(…)`, `Failing row contains (…)`) are
    /// withheld whole.
    pub fn error_fields(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let tag = message[0];
        let mut fields: Vec<(u8, &[u8])> = Vec::new();
        let mut reader = BodyReader::new(message);
        loop {
            let code = reader.u8()?;
            if code == 0 {
                break;
            }
            fields.push((code, reader.cstr()?));
        }
        let field = |code: u8| fields.iter().find(|(c, _)| *c == code).map(|(_, value)| String::from_utf8_lossy(value));
        let withhold_row = match (field(b's'), field(b't')) {
            (Some(schema), Some(table)) => self.hooks.has_column_rules() && self.hooks.table_has_rules(&schema, &table),
            _ => false,
        };
        let start = out.len();
        out.push(tag);
        out.extend_from_slice(&[0; 4]);
        for (code, value) in &fields {
            out.push(*code);
            let masked = match code {
                b'M' | b'D' | b'H' | b'W' | b'q' | b'P' => {
                    let mut text = String::from_utf8_lossy(value).into_owned();
                    if withhold_row && *code == b'D' {
                        text = withhold_row_values(&text);
                    }
                    let counts = &mut self.counts;
                    let masked =
                        self.hooks.masker().mask_counting(&text, &mut |kind| *counts.entry(kind).or_default() += 1);
                    masked.replace('\0', "").into_bytes()
                }
                _ => value.to_vec(),
            };
            out.extend_from_slice(&masked);
            out.push(0);
        }
        out.push(0);
        patch_length(out, start)
    }

    /// NotificationResponse: the payload masked.
    pub fn notification(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut reader = BodyReader::new(message);
        let process = reader.i32()?;
        let channel = reader.cstr()?;
        let payload = String::from_utf8_lossy(reader.cstr()?).into_owned();
        let counts = &mut self.counts;
        let masked = self.hooks.masker().mask_counting(&payload, &mut |kind| *counts.entry(kind).or_default() += 1);
        let start = out.len();
        out.push(message[0]);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&process.to_be_bytes());
        out.extend_from_slice(channel);
        out.push(0);
        out.extend_from_slice(masked.as_bytes());
        out.push(0);
        patch_length(out, start)
    }

    /// FunctionCallResponse: a result of unknown type, withheld when anything is detected in it.
    pub fn function_result(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut reader = BodyReader::new(message);
        let length = reader.i32()?;
        let start = out.len();
        out.extend_from_slice(&message[..HEADER_LEN]);
        if length < 0 {
            push_value(out, None);
        } else {
            let value = reader.take(length as usize)?;
            match self.opaque_value(value) {
                Masked::Same => push_value(out, Some(value)),
                _ => push_value(out, None),
            }
        }
        patch_length(out, start)
    }
}

/// `Key (a, b)=(x, y) already exists.` → `Key (a, b)=([MASKED]) already exists.`; `Failing row contains (…).` →
/// `Failing row contains ([MASKED]).`
fn withhold_row_values(detail: &str) -> String {
    let open = detail.find("=(").map(|at| at + 2).or_else(|| detail.find("contains (").map(|at| at + 10));
    match (open, detail.rfind(')')) {
        (Some(open), Some(close)) if close >= open => format!("{}[MASKED]{}", &detail[..open], &detail[close..]),
        // A detail naming the table but with no recognisable values: withheld whole.
        _ => "[MASKED]".to_string(),
    }
}

fn render_inet(value: &[u8]) -> Option<String> {
    let [family, bits, _is_cidr, length, address @ ..] = value else {
        return None;
    };
    let address: std::net::IpAddr = match (*family, *length, address.len()) {
        (2, 4, 4) => std::net::Ipv4Addr::new(address[0], address[1], address[2], address[3]).into(),
        (3, 16, 16) => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(address).ok()?).into(),
        _ => return None,
    };
    Some(format!("{address}/{bits}"))
}

/// A JSON string literal of `text`.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if (control as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", control as u32)),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

fn push_value(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(value) => {
            out.extend_from_slice(&(value.len() as i32).to_be_bytes());
            out.extend_from_slice(value);
        }
    }
}

/// Sets the length of the message that starts at `start` in `out` and runs to its end.
fn patch_length(out: &mut [u8], start: usize) -> Result<(), CodecError> {
    let length = u32::try_from(out.len() - start - 1)
        .ok()
        .filter(|length| *length <= i32::MAX as u32)
        .ok_or_else(|| malformed(out[start], "masked message too large"))?;
    out[start + 1..start + HEADER_LEN].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// A COPY TO STDOUT in progress.
pub(crate) struct CopyOut {
    pub binary: bool,
    pub shape: CopyShape,
    /// Binary format: whether the file header has passed; text and csv: whether the header line has.
    header_done: bool,
}

const BINARY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl CopyOut {
    pub fn new(binary: bool, shape: CopyShape) -> CopyOut {
        let header_done = !binary && !shape.header;
        CopyOut { binary, shape, header_done }
    }
}

impl SessionMasking {
    /// Appends a CopyData message with its rows masked.
    pub fn copy_data(&mut self, message: &[u8], copy: &mut CopyOut, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let data = &message[HEADER_LEN..];
        let start = out.len();
        out.extend_from_slice(&message[..HEADER_LEN]);
        if copy.binary {
            self.copy_binary(data, copy, out)?;
        } else {
            for line in data.split_inclusive(|byte| *byte == b'\n') {
                if !copy.header_done {
                    // Column names, not values.
                    out.extend_from_slice(line);
                    copy.header_done = line.ends_with(b"\n");
                    continue;
                }
                let (row, newline) = match line.strip_suffix(b"\n") {
                    Some(row) => (row, true),
                    None => (line, false),
                };
                if copy.shape.csv {
                    self.copy_csv_row(row, &copy.shape, out)?;
                } else {
                    self.copy_text_row(row, &copy.shape, out)?;
                }
                if newline {
                    out.push(b'\n');
                }
            }
        }
        patch_length(out, start)
    }

    fn copy_plan(&self, shape: &CopyShape, index: usize, fields: usize) -> Result<ColumnPlan, CodecError> {
        if shape.columns.is_empty() {
            return Ok(ColumnPlan { kind: ValueKind::Other, binary: false, rule: None, json_members: false });
        }
        if fields != shape.columns.len() {
            return Err(malformed(b'd', "COPY row has a different number of fields than its columns"));
        }
        let column = shape.columns[index];
        let kind = value_kind(column.type_oid);
        let rule = if column.table == 0 { derived_for(kind, shape.derived) } else { column.rule };
        let json_members = self.hooks.has_column_rules() && matches!(kind, ValueKind::Json | ValueKind::Jsonb);
        Ok(ColumnPlan { kind, binary: false, rule, json_members })
    }

    fn copy_text_row(&mut self, row: &[u8], shape: &CopyShape, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let fields: Vec<&[u8]> = split_text_fields(row, shape.delimiter);
        for (index, field) in fields.iter().enumerate() {
            if index > 0 {
                out.push(shape.delimiter);
            }
            if *field == shape.null.as_bytes() {
                out.extend_from_slice(field);
                continue;
            }
            let mut plan = self.copy_plan(shape, index, fields.len())?;
            // Text COPY escapes (`\t`, `\\`) stay as they are for detection; a rule's value is re-escaped.
            plan.binary = false;
            match self.value(&plan, field, None) {
                Masked::Same => out.extend_from_slice(field),
                Masked::Null => out.extend_from_slice(shape.null.as_bytes()),
                Masked::Bytes(bytes) => escape_text(&bytes, shape.delimiter, out),
            }
        }
        Ok(())
    }

    fn copy_csv_row(&mut self, row: &[u8], shape: &CopyShape, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let fields = split_csv_fields(row, shape.delimiter, shape.quote)
            .ok_or_else(|| malformed(b'd', "CSV row with a quoted field spanning messages"))?;
        let count = fields.len();
        for (index, (field, quoted)) in fields.into_iter().enumerate() {
            if index > 0 {
                out.push(shape.delimiter);
            }
            if !quoted && field.as_ref() == shape.null.as_bytes() {
                out.extend_from_slice(&field);
                continue;
            }
            let plan = self.copy_plan(shape, index, count)?;
            match self.value(&plan, &field, None) {
                Masked::Same => write_csv(&field, quoted, shape, out),
                Masked::Null => out.extend_from_slice(shape.null.as_bytes()),
                Masked::Bytes(bytes) => write_csv(&bytes, quoted, shape, out),
            }
        }
        Ok(())
    }

    fn copy_binary(&mut self, mut data: &[u8], copy: &mut CopyOut, out: &mut Vec<u8>) -> Result<(), CodecError> {
        if !copy.header_done {
            let rest = data
                .strip_prefix(BINARY_SIGNATURE)
                .ok_or_else(|| malformed(b'd', "binary COPY without its signature"))?;
            let mut reader = BodyReader::over(b'd', rest);
            let _flags = reader.i32()?;
            let extension = usize::try_from(reader.i32()?).map_err(|_| malformed(b'd', "negative extension length"))?;
            reader.take(extension)?;
            let header = data.len() - reader.rest().len();
            out.extend_from_slice(&data[..header]);
            data = &data[header..];
            copy.header_done = true;
        }
        let mut reader = BodyReader::over(b'd', data);
        while !reader.is_empty() {
            let count = reader.i16()?;
            out.extend_from_slice(&count.to_be_bytes());
            if count < 0 {
                continue;
            }
            let count = count as usize;
            for index in 0..count {
                let mut plan = self.copy_plan(&copy.shape, index, count)?;
                plan.binary = true;
                let length = reader.i32()?;
                if length < 0 {
                    push_value(out, None);
                    continue;
                }
                let value = reader.take(length as usize)?;
                match self.value(&plan, value, None) {
                    Masked::Same => push_value(out, Some(value)),
                    Masked::Null => push_value(out, None),
                    Masked::Bytes(bytes) => push_value(out, Some(&bytes)),
                }
            }
        }
        Ok(())
    }
}

/// Splits a text-format COPY row on unescaped delimiters (a backslash escapes the next byte).
fn split_text_fields(row: &[u8], delimiter: u8) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut index = 0;
    while index < row.len() {
        match row[index] {
            b'\\' => index += 2,
            byte if byte == delimiter => {
                fields.push(&row[start..index]);
                index += 1;
                start = index;
            }
            _ => index += 1,
        }
    }
    fields.push(&row[start.min(row.len())..]);
    fields
}

fn escape_text(value: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &byte in value {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' if delimiter == b'\t' => out.extend_from_slice(b"\\t"),
            byte if byte == delimiter => out.extend_from_slice(&[b'\\', byte]),
            byte => out.push(byte),
        }
    }
}

/// Splits a CSV row into fields (unquoted content, whether quoted); `None` when a quote is left open (a quoted
/// newline split the row across messages).
fn split_csv_fields(row: &[u8], delimiter: u8, quote: u8) -> Option<Vec<(Cow<'_, [u8]>, bool)>> {
    let mut fields = Vec::new();
    let mut index = 0;
    loop {
        if row.get(index) == Some(&quote) {
            let mut value = Vec::new();
            index += 1;
            loop {
                match row.get(index) {
                    None => return None,
                    Some(&byte) if byte == quote => {
                        if row.get(index + 1) == Some(&quote) {
                            value.push(quote);
                            index += 2;
                        } else {
                            index += 1;
                            break;
                        }
                    }
                    Some(&byte) => {
                        value.push(byte);
                        index += 1;
                    }
                }
            }
            fields.push((Cow::Owned(value), true));
        } else {
            let end = row[index..].iter().position(|byte| *byte == delimiter).map_or(row.len(), |at| index + at);
            fields.push((Cow::Borrowed(&row[index..end]), false));
            index = end;
        }
        match row.get(index) {
            Some(&byte) if byte == delimiter => index += 1,
            _ => return Some(fields),
        }
    }
}

fn write_csv(value: &[u8], quoted: bool, shape: &CopyShape, out: &mut Vec<u8>) {
    let needs_quotes = quoted
        || value.is_empty()
        || value.iter().any(|byte| matches!(*byte, b'\n' | b'\r') || *byte == shape.delimiter || *byte == shape.quote);
    if !needs_quotes {
        out.extend_from_slice(value);
        return;
    }
    out.push(shape.quote);
    for &byte in value {
        if byte == shape.quote {
            out.push(shape.quote);
        }
        out.push(byte);
    }
    out.push(shape.quote);
}

/// Parses a CopyOutResponse: whether the copy is binary.
pub(crate) fn copy_out_binary(message: &[u8]) -> Result<bool, CodecError> {
    let mut reader = BodyReader::new(message);
    Ok(reader.u8()? == 1)
}

/// Shared shapes of described portals, by name.
pub(crate) type PortalShapes = HashMap<Arc<str>, Arc<Shape>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::{CopyColumn, MaskFuture};
    use proptest::prelude::{any, prop_assert_eq, proptest};

    /// Content detection with every built-in detector; table 16384 column 2 has a `redact` rule.
    struct TestMasking(warden_mask::Masker);

    impl ResponseMasking for TestMasking {
        fn masker(&self) -> &warden_mask::Masker {
            &self.0
        }
        fn has_column_rules(&self) -> bool {
            true
        }
        fn column_rules(&self, columns: &[SourceColumn]) -> Result<Vec<Option<Strategy>>, Vec<u32>> {
            Ok(columns
                .iter()
                .map(|column| (column.table == 16384 && column.attnum == 2).then_some(Strategy::Redact))
                .collect())
        }
        fn look_up(&self, _tables: Vec<u32>) -> MaskFuture<()> {
            Box::pin(async { Ok(()) })
        }
        fn derived_rule(&self, _statement: &str, _annotation: Option<&Annotation>) -> DerivedRule {
            DerivedRule::default()
        }
        fn json_member_rule(&self, _annotation: Option<&Annotation>, key: &str) -> Option<Strategy> {
            (key == "full_name").then_some(Strategy::Redact)
        }
        fn copy_out(&self, _statement: &str, _index: usize, _annotation: Option<&Annotation>) -> MaskFuture<CopyShape> {
            Box::pin(async { Ok(CopyShape::default()) })
        }
        fn table_has_rules(&self, _schema: &str, table: &str) -> bool {
            table == "customers"
        }
    }

    fn session() -> SessionMasking {
        let masker = warden_mask::Masker::new(&warden_mask::MaskerConfig::all([7; 32])).expect("built-ins compile");
        SessionMasking::new(Box::new(TestMasking(masker)))
    }

    fn field(table: u32, attnum: i16, type_oid: u32, format: i16) -> Field {
        Field { source: SourceColumn { table, attnum }, type_oid, format }
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = (values.len() as i16).to_be_bytes().to_vec();
        for value in values {
            push_value(&mut body, *value);
        }
        message(b'D', &body)
    }

    fn values(row: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut reader = BodyReader::new(row);
        let count = reader.i16().expect("count");
        (0..count)
            .map(|_| {
                let length = reader.i32().expect("length");
                (length >= 0).then(|| reader.take(length as usize).expect("value").to_vec())
            })
            .collect()
    }

    #[test]
    fn rows_are_masked_by_content_rule_and_type() {
        let mut masking = session();
        let fields = [
            field(16384, 1, 23, 1),   // id int4, binary
            field(16384, 2, 25, 0),   // full_name text, rule
            field(16384, 3, 25, 1),   // email text, binary
            field(16384, 4, 1082, 0), // a date
            field(0, 0, 114, 0),      // derived json
            field(16384, 2, 23, 0),   // a rule on an int column: NULL
        ];
        let shape = masking.plan(&fields, "", None).expect("no lookup");
        let json = br#"{"full_name": "Ada Lovelace", "note": "mail ada@example.com"}"#;
        let row = data_row(&[
            Some(&7i32.to_be_bytes()),
            Some(b"Ada Lovelace"),
            Some(b"ada@example.com"),
            Some(b"2026-11-21"),
            Some(json),
            Some(b"42"),
        ]);
        let mut out = Vec::new();
        masking.data_row(&row, &shape, &mut out).expect("masks");
        let masked = values(&out);
        assert_eq!(masked[0].as_deref(), Some(&7i32.to_be_bytes()[..]));
        assert_eq!(masked[1].as_deref(), Some(&b"[MASKED]"[..]));
        assert_eq!(masked[2].as_deref(), Some(&b"***@example.com"[..]));
        assert_eq!(masked[3].as_deref(), Some(&b"2026-11-21"[..]));
        let document = String::from_utf8(masked[4].clone().expect("json")).expect("utf-8");
        assert_eq!(document, r#"{"full_name": "[MASKED]", "note": "mail ***@example.com"}"#);
        assert_eq!(masked[5], None);
        assert_eq!(masking.counts().get("email"), Some(&2));
        assert_eq!(masking.counts().get("column"), Some(&3));
    }

    #[test]
    fn copy_rows_keep_their_format() {
        let mut masking = session();
        let shape = CopyShape {
            columns: vec![
                CopyColumn { rule: None, table: 16384, type_oid: 23 },
                CopyColumn { rule: Some(Strategy::Redact), table: 16384, type_oid: 25 },
                CopyColumn { rule: None, table: 16384, type_oid: 25 },
            ],
            delimiter: b',',
            csv: true,
            quote: b'"',
            null: String::new(),
            header: true,
            derived: DerivedRule::default(),
        };
        let mut copy = CopyOut::new(false, shape);
        let mut out = Vec::new();
        masking.copy_data(&message(b'd', b"id,full_name,email\n"), &mut copy, &mut out).expect("header");
        masking.copy_data(&message(b'd', b"1,\"Lovelace, Ada\",ada@example.com\n"), &mut copy, &mut out).expect("row");
        masking.copy_data(&message(b'd', b"2,,\n"), &mut copy, &mut out).expect("nulls");
        let mut text = Vec::new();
        let mut rest = &out[..];
        while !rest.is_empty() {
            let (_, total) = crate::codec::header(rest).expect("header").expect("valid");
            text.extend_from_slice(&rest[HEADER_LEN..total]);
            rest = &rest[total..];
        }
        assert_eq!(String::from_utf8(text).unwrap(), "id,full_name,email\n1,\"[MASKED]\",***@example.com\n2,,\n");
    }

    #[test]
    fn errors_lose_row_values_of_masked_tables() {
        let mut masking = session();
        let mut body = Vec::new();
        for (code, value) in [
            (b'S', "ERROR"),
            (b'C', "23505"),
            (b'M', "duplicate key value violates unique constraint \"customers_email_key\""),
            (b'D', "Key (full_name)=(Ada Lovelace) already exists."),
            (b's', "public"),
            (b't', "customers"),
        ] {
            body.push(code);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = Vec::new();
        masking.error_fields(&message(b'E', &body), &mut out).expect("masks");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("Key (full_name)=([MASKED]) already exists."), "{text}");
        assert!(!text.contains("Ada"), "{text}");
    }

    proptest! {
        /// Whatever the upstream sends, masking answers with a well-formed message or an error, never a panic.
        #[test]
        fn arbitrary_messages_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256), kind in 0u8..5) {
            let mut masking = session();
            let mut out = Vec::new();
            let result = match kind {
                0 => {
                    let fields = [field(16384, 2, 25, 0), field(0, 0, 1009, 1), field(0, 0, 3802, 1), field(1, 1, 869, 1)];
                    let shape = masking.plan(&fields, "", None).expect("no lookup");
                    masking.data_row(&message(b'D', &body), &shape, &mut out)
                }
                1 => masking.error_fields(&message(b'E', &body), &mut out),
                2 => {
                    let mut copy = CopyOut::new(true, CopyShape::default());
                    masking.copy_data(&message(b'd', &body), &mut copy, &mut out)
                }
                3 => {
                    let shape = CopyShape { delimiter: b'\t', null: "\\N".into(), ..CopyShape::default() };
                    let mut copy = CopyOut::new(false, shape);
                    masking.copy_data(&message(b'd', &body), &mut copy, &mut out)
                }
                _ => masking.notification(&message(b'A', &body), &mut out),
            };
            // On error the session ends and `out` is dropped; on success it is exactly one message.
            if result.is_ok() {
                let (_, total) = crate::codec::header(&out).expect("a header").expect("a valid length");
                prop_assert_eq!(total, out.len());
            }
        }
    }

    #[test]
    fn text_fields_split_on_unescaped_delimiters() {
        assert_eq!(split_text_fields(b"a\tb\\tc\t\\N", b'\t'), vec![&b"a"[..], &b"b\\tc"[..], &b"\\N"[..]]);
        assert_eq!(split_text_fields(b"", b'\t'), vec![&b""[..]]);
    }

    #[test]
    fn csv_fields_unquote_and_detect_open_quotes() {
        let fields = split_csv_fields(b"1,\"a,\"\"b\"\"\",\"\"", b',', b'"').expect("closed");
        let fields: Vec<(Vec<u8>, bool)> =
            fields.into_iter().map(|(field, quoted)| (field.into_owned(), quoted)).collect();
        assert_eq!(fields, vec![(b"1".to_vec(), false), (b"a,\"b\"".to_vec(), true), (b"".to_vec(), true)]);
        assert!(split_csv_fields(b"1,\"open", b',', b'"').is_none());
    }

    #[test]
    fn row_values_in_details_are_withheld() {
        assert_eq!(
            withhold_row_values("Key (email)=(alice@example.com) already exists."),
            "Key (email)=([MASKED]) already exists."
        );
        assert_eq!(withhold_row_values("Failing row contains (1, Alice, null)."), "Failing row contains ([MASKED]).");
        assert_eq!(withhold_row_values("something else"), "[MASKED]");
    }

    #[test]
    fn binary_inet_renders() {
        assert_eq!(render_inet(&[2, 32, 0, 4, 10, 1, 2, 3]).as_deref(), Some("10.1.2.3/32"));
        assert_eq!(render_inet(&[2, 32, 0, 5, 10]), None);
    }
}
