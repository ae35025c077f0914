//! Masking per connection: the compiled masker (detectors, strategies, the hash key), the column rules, and the
//! catalog cache that maps a result column (table OID, attribute number) to `schema.table.column`.
//!
//! A session gets a [`SessionMasker`] unless policy lets its identity `unmask` the connection. The relay (warden-pg)
//! owns the wire formats and asks it the questions only the gateway can answer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use warden_config::{Config, MaskedColumn};
use warden_mask::{Masker, Strategy};
use warden_pg::catalog::CatalogClient;
use warden_pg::upstream::UpstreamTarget;
use warden_pg::{Annotation, CopyColumn, CopyShape, DerivedRule, MaskFuture, ResponseMasking, SourceColumn};
use warden_state::Decision;

/// The file beside a SQLite state database holding the masking hash key, created on first run.
pub const MASK_KEY_FILE: &str = "mask.key";

/// How long a table's catalog entry is trusted before it is read again (a renamed column or table).
const CATALOG_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MaskingError {
    #[error("masking hash key {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("masking hash key {path}: not 64 hex digits")]
    KeyFormat { path: String },
    #[error("connection \"{connection}\": masking: {source}")]
    Masker {
        connection: String,
        #[source]
        source: warden_mask::MaskError,
    },
}

/// `[masking] hash_key` when configured, else a random key for this process alone (for masking the audit log when
/// no connection masks, without creating a key file).
pub fn hash_key_if_configured(config: &Config) -> [u8; 32] {
    configured_key(config).unwrap_or_else(rand::random)
}

fn configured_key(config: &Config) -> Option<[u8; 32]> {
    use sha2::Digest;
    let secret = config.masking.hash_key.as_ref()?;
    Some(sha2::Sha256::digest(secret.expose().as_bytes()).into())
}

/// The masking hash key: SHA-256 of `[masking] hash_key` when configured, else a random key kept in
/// [`MASK_KEY_FILE`] beside the SQLite state database (created with mode 0600 on first run).
pub fn hash_key(config: &Config) -> Result<[u8; 32], MaskingError> {
    if let Some(key) = configured_key(config) {
        return Ok(key);
    }
    let directory = config.state.directory().unwrap_or_else(|| Path::new(".").to_path_buf());
    let path = directory.join(MASK_KEY_FILE);
    let display = path.display().to_string();
    let io = |source| MaskingError::KeyFile { path: display.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = hex_decode(text.trim()).ok_or_else(|| MaskingError::KeyFormat { path: display.clone() })?;
            Ok(bytes)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let text: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
            std::fs::create_dir_all(&directory).map_err(io)?;
            write_private(&path, &format!("{text}\n")).map_err(io)?;
            Ok(key)
        }
        Err(error) => Err(io(error)),
    }
}

fn hex_decode(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(out)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Every connection's masking, by connection name.
#[derive(Default)]
pub(crate) struct Maskings {
    by_connection: HashMap<String, Arc<ConnectionMasking>>,
}

impl Maskings {
    pub fn new(
        config: &Config,
        targets: &HashMap<String, Arc<UpstreamTarget>>,
        hash_key: [u8; 32],
    ) -> Result<Maskings, MaskingError> {
        let mut by_connection = HashMap::new();
        for connection in &config.connections {
            let Some(masking) = &connection.masking else { continue };
            let masker = Masker::new(&masking.masker_config(hash_key))
                .map_err(|source| MaskingError::Masker { connection: connection.name.clone(), source })?;
            let Some(target) = targets.get(&connection.name) else { continue };
            let catalog = Arc::new(Catalog {
                client: CatalogClient::new(target.clone(), config.limits.connect_timeout),
                tables: Mutex::new(HashMap::new()),
            });
            let rules = masking.columns.iter().map(Rule::new).collect();
            by_connection.insert(
                connection.name.clone(),
                Arc::new(ConnectionMasking { masker, rules, catalog, derived: Mutex::default() }),
            );
        }
        Ok(Maskings { by_connection })
    }

    pub fn get(&self, connection: &str) -> Option<&Arc<ConnectionMasking>> {
        self.by_connection.get(connection)
    }
}

/// A column rule, its pattern split: `[schema, table, column]`, each `*` or a name.
struct Rule {
    parts: [String; 3],
    strategy: Strategy,
}

impl Rule {
    fn new(column: &MaskedColumn) -> Rule {
        let parts: Vec<&str> = column.pattern.split('.').collect();
        let parts = match parts.as_slice() {
            [schema, table, column] => [schema.to_string(), table.to_string(), column.to_string()],
            [table, column] => ["*".to_string(), table.to_string(), column.to_string()],
            // Validated by the config; a pattern of another shape masks everything rather than nothing.
            _ => ["*".to_string(), "*".to_string(), "*".to_string()],
        };
        Rule { parts, strategy: column.strategy }
    }

    fn part(wanted: &str, actual: &str) -> bool {
        wanted == "*" || wanted == actual
    }

    fn covers_table(&self, schema: &str, table: &str) -> bool {
        Rule::part(&self.parts[0], schema) && Rule::part(&self.parts[1], table)
    }

    fn matches(&self, schema: &str, table: &str, column: &str) -> bool {
        self.covers_table(schema, table) && Rule::part(&self.parts[2], column)
    }
}

pub(crate) struct ConnectionMasking {
    masker: Masker,
    rules: Vec<Rule>,
    catalog: Arc<Catalog>,
    /// Statements' derived-value rules, by text (parsing is the costly part).
    derived: Mutex<HashMap<String, DerivedRule>>,
}

/// Statements whose derived-value rule is remembered per connection; the cache is emptied when full.
const DERIVED_CACHE_ENTRIES: usize = 4096;

impl ConnectionMasking {
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// The first rule covering `schema.table.column`.
    fn rule(&self, schema: &str, table: &str, column: &str) -> Option<Strategy> {
        self.rules.iter().find(|rule| rule.matches(schema, table, column)).map(|rule| rule.strategy)
    }
}

/// What the catalog says of a table.
struct CachedTable {
    schema: String,
    name: String,
    columns: HashMap<i16, String>,
    fetched: Instant,
}

struct Catalog {
    client: CatalogClient,
    tables: Mutex<HashMap<u32, Arc<CachedTable>>>,
}

impl Catalog {
    async fn load(&self, tables: Vec<u32>) -> Result<(), String> {
        if tables.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = tables.iter().map(u32::to_string).collect();
        let sql = format!(
            "SELECT c.oid::text, n.nspname, c.relname, a.attnum::text, a.attname \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE c.oid IN ({})",
            list.join(", ")
        );
        let rows = self.client.query(&sql).await.map_err(|error| error.to_string())?;
        let mut found: HashMap<u32, CachedTable> = HashMap::new();
        let now = Instant::now();
        for row in rows {
            let [Some(oid), Some(schema), Some(name), attnum, attname] =
                <[Option<String>; 5]>::try_from(row).map_err(|_| "unexpected catalog row shape".to_string())?
            else {
                return Err("unexpected NULL in the catalog".into());
            };
            let oid: u32 = oid.parse().map_err(|_| format!("bad table OID {oid}"))?;
            let entry =
                found.entry(oid).or_insert_with(|| CachedTable { schema, name, columns: HashMap::new(), fetched: now });
            if let (Some(attnum), Some(attname)) = (attnum, attname) {
                let attnum: i16 = attnum.parse().map_err(|_| format!("bad attribute number {attnum}"))?;
                entry.columns.insert(attnum, attname);
            }
        }
        let mut cache = self.tables.lock();
        for oid in tables {
            // A table the catalog does not know (dropped meanwhile) has no columns to mask.
            let table = found.remove(&oid).unwrap_or(CachedTable {
                schema: String::new(),
                name: String::new(),
                columns: HashMap::new(),
                fetched: now,
            });
            cache.insert(oid, Arc::new(table));
        }
        Ok(())
    }
}

/// One session's masking questions, answered for its connection.
pub(crate) struct SessionMasker {
    connection: Arc<ConnectionMasking>,
}

impl SessionMasker {
    pub fn new(connection: Arc<ConnectionMasking>) -> SessionMasker {
        SessionMasker { connection }
    }

    /// The tables a statement touches, `(schema, table)`; `None` when unknown.
    fn tables(annotation: Option<&Annotation>) -> Option<Vec<(&str, &str)>> {
        let decision = annotation?.downcast_ref::<Decision>()?;
        Some(decision.tables.iter().filter_map(|table| table.split_once('.')).collect())
    }
}

impl ResponseMasking for SessionMasker {
    fn masker(&self) -> &Masker {
        &self.connection.masker
    }

    fn has_column_rules(&self) -> bool {
        !self.connection.rules.is_empty()
    }

    fn column_rules(&self, columns: &[SourceColumn]) -> Result<Vec<Option<Strategy>>, Vec<u32>> {
        let cache = self.connection.catalog.tables.lock();
        let mut missing: Vec<u32> = Vec::new();
        let mut rules = Vec::with_capacity(columns.len());
        for column in columns {
            match cache.get(&column.table).filter(|table| table.fetched.elapsed() < CATALOG_TTL) {
                Some(table) => rules.push(
                    table
                        .columns
                        .get(&column.attnum)
                        .and_then(|name| self.connection.rule(&table.schema, &table.name, name)),
                ),
                None => {
                    if !missing.contains(&column.table) {
                        missing.push(column.table);
                    }
                }
            }
        }
        if missing.is_empty() {
            Ok(rules)
        } else {
            Err(missing)
        }
    }

    fn look_up(&self, tables: Vec<u32>) -> MaskFuture<()> {
        let catalog = self.connection.catalog.clone();
        Box::pin(async move { catalog.load(tables).await })
    }

    fn derived_rule(&self, statement: &str, annotation: Option<&Annotation>) -> DerivedRule {
        const WHOLE: DerivedRule = DerivedRule { text: Some(Strategy::Redact), json: Some(Strategy::Redact) };
        let Some(tables) = SessionMasker::tables(annotation) else {
            // Unknown statement: assume its computed values carry a masked column.
            return WHOLE;
        };
        let masked: Vec<&(&str, &str)> = tables
            .iter()
            .filter(|(schema, table)| self.connection.rules.iter().any(|rule| rule.covers_table(schema, table)))
            .collect();
        if masked.is_empty() {
            return DerivedRule::default();
        }
        let mut cache = self.connection.derived.lock();
        if let Some(cached) = cache.get(statement) {
            return *cached;
        }
        let rule = match warden_sql::derived_references(statement) {
            // An expression reads a masked column by name: what it computes is withheld, JSON included.
            Some(references)
                if references.columns.iter().any(|column| {
                    masked.iter().any(|(schema, table)| self.connection.rule(schema, table, column).is_some())
                }) =>
            {
                WHOLE
            }
            // Whole rows: text renderings are withheld; JSON keeps its keys (column names) unless the rows are a
            // subquery's, whose columns may be renamed.
            Some(references) if references.whole_rows => {
                DerivedRule { text: Some(Strategy::Redact), json: references.renamed_rows.then_some(Strategy::Redact) }
            }
            Some(_) => DerivedRule::default(),
            None => WHOLE,
        };
        if cache.len() >= DERIVED_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(statement.to_string(), rule);
        rule
    }

    fn json_member_rule(&self, annotation: Option<&Annotation>, key: &str) -> Option<Strategy> {
        match SessionMasker::tables(annotation) {
            Some(tables) => tables.iter().find_map(|(schema, table)| self.connection.rule(schema, table, key)),
            None => self.connection.rules.iter().find(|rule| Rule::part(&rule.parts[2], key)).map(|rule| rule.strategy),
        }
    }

    fn copy_out(&self, statement: &str, index: usize, annotation: Option<&Annotation>) -> MaskFuture<CopyShape> {
        let copy = warden_sql::copy_to(statement, index);
        let derived =
            if self.has_column_rules() { self.derived_rule(statement, annotation) } else { DerivedRule::default() };
        let connection = self.connection.clone();
        let has_rules = self.has_column_rules();
        Box::pin(async move {
            let Some(copy) = copy else {
                return Err("the COPY statement could not be read".to_string());
            };
            let mut shape = CopyShape {
                columns: Vec::new(),
                delimiter: copy.delimiter.unwrap_or(if copy.csv { b',' } else { b'\t' }),
                csv: copy.csv,
                quote: copy.quote.unwrap_or(b'"'),
                null: copy.null.clone().unwrap_or_else(|| if copy.csv { String::new() } else { "\\N".to_string() }),
                header: copy.csv && copy.header,
                derived,
            };
            let described = match connection.catalog.client.describe(&copy.select).await {
                Ok(described) => described,
                // Without column rules, content detection over every field is all there is to do.
                Err(_) if !has_rules => return Ok(shape),
                Err(error) => return Err(format!("describing its columns failed: {error}")),
            };
            let masker = SessionMasker { connection: connection.clone() };
            let sources: Vec<SourceColumn> = described
                .iter()
                .filter(|column| column.table != 0)
                .map(|column| SourceColumn { table: column.table, attnum: column.attnum })
                .collect();
            let rules = match masker.column_rules(&sources) {
                Ok(rules) => rules,
                Err(tables) => {
                    connection.catalog.load(tables).await?;
                    masker.column_rules(&sources).map_err(|_| "the catalog does not describe a column's table")?
                }
            };
            let mut rules = rules.into_iter();
            shape.columns = described
                .iter()
                .map(|column| CopyColumn {
                    rule: if column.table != 0 { rules.next().flatten() } else { None },
                    table: column.table,
                    type_oid: column.type_oid,
                })
                .collect();
            Ok(shape)
        })
    }

    fn table_has_rules(&self, schema: &str, table: &str) -> bool {
        self.connection.rules.iter().any(|rule| rule.covers_table(schema, table))
    }
}
