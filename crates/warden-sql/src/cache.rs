//! The shared analysis cache: one per gateway, used by every session.
//!
//! Keyed by [`crate::cache_key`] (tokens with literals blanked), so `WHERE aid = 1` and `WHERE aid = 2` share
//! an entry. Results that read a literal's value are cached by exact text instead. Two generations bound the
//! memory: lookups promote from the old generation to the new, and when the new one fills the old is dropped,
//! which keeps the working set without tracking recency per entry.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{analyze, Analysis, ParseOptions, SqlError};

/// Texts longer than this are analysed every time rather than cached (their keys would cost memory).
const MAX_CACHED_TEXT: usize = 16 * 1024;

#[derive(Clone)]
enum Entry {
    Shared(Arc<Analysis>),
    /// The shape's analysis depends on literal values: look the exact text up.
    PerText,
}

struct Generations<V> {
    young: HashMap<String, V>,
    old: HashMap<String, V>,
}

impl<V> Default for Generations<V> {
    fn default() -> Self {
        Generations { young: HashMap::new(), old: HashMap::new() }
    }
}

impl<V: Clone> Generations<V> {
    fn get(&mut self, key: &str, capacity: usize) -> Option<V> {
        if let Some(value) = self.young.get(key) {
            return Some(value.clone());
        }
        let value = self.old.remove(key)?;
        self.insert(key.to_string(), value.clone(), capacity);
        Some(value)
    }

    fn insert(&mut self, key: String, value: V, capacity: usize) {
        if self.young.len() >= capacity {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[derive(Default)]
struct Tables {
    shapes: Generations<Entry>,
    texts: Generations<Arc<Analysis>>,
}

/// A cache of analyses shared by all sessions; cheap to call for a statement seen before.
pub struct Analyzer {
    tables: Mutex<Tables>,
    capacity: usize,
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer::new(8192)
    }
}

impl Analyzer {
    /// A cache holding about `capacity` (up to twice that) statement shapes and as many exact texts.
    pub fn new(capacity: usize) -> Self {
        Analyzer { tables: Mutex::new(Tables::default()), capacity: capacity.max(1) }
    }

    /// The analysis of `text`, from the cache when its shape was seen before.
    pub fn analyze(&self, text: &str, options: ParseOptions) -> Result<Arc<Analysis>, SqlError> {
        let key = if text.len() <= MAX_CACHED_TEXT { crate::cache_key(text, options) } else { None };
        let Some(key) = key else {
            return analyze(text, options).map(Arc::new);
        };
        {
            let mut tables = self.tables.lock();
            match tables.shapes.get(&key, self.capacity) {
                Some(Entry::Shared(analysis)) => return Ok(analysis),
                Some(Entry::PerText) => {
                    if let Some(analysis) = tables.texts.get(text, self.capacity) {
                        return Ok(analysis);
                    }
                }
                None => {}
            }
        }
        // Parse outside the lock: a slow parse must not stall other sessions' lookups.
        let analysis = Arc::new(analyze(text, options)?);
        let mut tables = self.tables.lock();
        if analysis.depends_on_literals {
            tables.shapes.insert(key, Entry::PerText, self.capacity);
            tables.texts.insert(text.to_string(), analysis.clone(), self.capacity);
        } else {
            tables.shapes.insert(key, Entry::Shared(analysis.clone()), self.capacity);
        }
        Ok(analysis)
    }

    /// How many shapes and exact texts are cached.
    pub fn len(&self) -> usize {
        let tables = self.tables.lock();
        tables.shapes.len() + tables.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_differing_in_literals_share_one_analysis() {
        let analyzer = Analyzer::new(16);
        let first = analyzer.analyze("SELECT * FROM orders WHERE id = 1", ParseOptions::default()).unwrap();
        let second = analyzer.analyze("SELECT * FROM orders WHERE id = 2", ParseOptions::default()).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(analyzer.len(), 1);
    }

    #[test]
    fn literal_dependent_statements_are_cached_per_text() {
        let analyzer = Analyzer::new(16);
        let options = ParseOptions::default();
        let harmless = analyzer.analyze("SET default_transaction_read_only = on", options).unwrap();
        let weakening = analyzer.analyze("SET default_transaction_read_only = off", options).unwrap();
        assert_eq!(harmless.statements[0].class, crate::Class::Read);
        assert_eq!(weakening.statements[0].class, crate::Class::Write);
        let again = analyzer.analyze("SET default_transaction_read_only = on", options).unwrap();
        assert!(Arc::ptr_eq(&harmless, &again));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let analyzer = Analyzer::new(4);
        for table in 0..50 {
            analyzer.analyze(&format!("SELECT * FROM t{table}"), ParseOptions::default()).unwrap();
        }
        assert!(analyzer.len() <= 8, "{}", analyzer.len());
    }

    #[test]
    fn syntax_errors_are_not_cached() {
        let analyzer = Analyzer::new(4);
        assert!(matches!(analyzer.analyze("SELEC 1", ParseOptions::default()), Err(SqlError::Syntax(_))));
        assert!(analyzer.is_empty());
    }
}
