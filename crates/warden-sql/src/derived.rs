//! Which columns a statement's computed output can carry: for masking, a result column computed from an expression
//! (`upper(full_name)`, `c::text`, `x || ''`) has no source column, so masking asks which columns the statement's
//! computed output expressions read.

use serde_json::Value;

/// The columns read by a statement's output expressions that are not plain column references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DerivedReferences {
    /// Names (last field of each column reference, as written, case folded like PostgreSQL does for unquoted names).
    pub columns: Vec<String>,
    /// An expression reads a whole row (`t`, `t.*`, `*` inside an expression), so it may carry any column.
    pub whole_rows: bool,
    /// A whole row read is a subquery's, a function's or a CTE's, whose columns may be renamed (`SELECT
    /// row_to_json(x) FROM (SELECT full_name AS n …) x`): its values cannot be matched to columns by name.
    pub renamed_rows: bool,
}

/// `None` when the text does not parse (the caller then assumes the worst).
pub fn derived_references(text: &str) -> Option<DerivedReferences> {
    let parsed = std::panic::catch_unwind(|| pg_query::parse(text, pg_query::ParserOptions::DEFAULT)).ok()?.ok()?;
    let mut values = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|node| node.node.as_ref()) else { continue };
        values.push(serde_json::to_value(node).ok()?);
    }
    let mut names = Names::default();
    let mut expressions = Vec::new();
    let mut bare_names = Vec::new();
    for value in &values {
        collect(value, &mut names, &mut expressions, &mut bare_names);
    }
    let mut references = DerivedReferences::default();
    for expression in expressions {
        column_refs(expression, &mut references);
    }
    // A bare name in an expression, or as a whole target, that names a table or alias is a whole row.
    for name in references.columns.iter().chain(&bare_names) {
        if names.derived.contains(name) {
            references.whole_rows = true;
            references.renamed_rows = true;
        } else if names.tables.contains(name) {
            references.whole_rows = true;
        }
    }
    if references.whole_rows && references.columns.is_empty() && bare_names.is_empty() {
        // `t.*` inside an expression: which row it is is not known by name here.
        references.renamed_rows |= !names.derived.is_empty();
    }
    references.columns.sort();
    references.columns.dedup();
    Some(references)
}

/// The row sources a statement names: tables (and their aliases), and derived rows (subqueries, functions, CTEs).
#[derive(Default)]
struct Names {
    tables: Vec<String>,
    derived: Vec<String>,
}

/// Collects range names (tables and aliases) and the output expressions that are not plain column references.
fn alias(body: &Value) -> Option<&str> {
    body.get("alias").and_then(|alias| alias.get("aliasname")).and_then(Value::as_str)
}

fn collect<'a>(value: &'a Value, names: &mut Names, expressions: &mut Vec<&'a Value>, bare_names: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(range) = object.get("RangeVar") {
                if let Some(Value::String(name)) = range.get("relname") {
                    names.tables.push(name.clone());
                }
                names.tables.extend(alias(range).map(str::to_string));
            }
            for derived in ["RangeSubselect", "RangeFunction", "RangeTableFunc", "JoinExpr"] {
                if let Some(range) = object.get(derived) {
                    names.derived.extend(alias(range).map(str::to_string));
                }
            }
            if let Some(Value::String(name)) = object.get("CommonTableExpr").and_then(|cte| cte.get("ctename")) {
                names.derived.push(name.clone());
            }
            if let Some(Value::Object(target)) = object.get("ResTarget") {
                if let Some(expression) = target.get("val") {
                    match plain_column(expression) {
                        Some(Some(bare)) => bare_names.push(bare),
                        Some(None) => {}
                        None => expressions.push(expression),
                    }
                }
            }
            for inner in object.values() {
                collect(inner, names, expressions, bare_names);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect(item, names, expressions, bare_names);
            }
        }
        _ => {}
    }
}

/// A target that is a column reference of named fields only (`email`, `c.email`) keeps its source column:
/// `Some(None)`, or `Some(Some(name))` for a single name, which may also be a whole row (`SELECT c FROM t c`).
fn plain_column(expression: &Value) -> Option<Option<String>> {
    let Some(Value::Object(reference)) = unwrap_node(expression).get("ColumnRef") else { return None };
    let Some(Value::Array(fields)) = reference.get("fields") else { return None };
    // `*` and `t.*` as whole targets expand to the table's own columns, each with its source.
    let star = |field: &Value| unwrap_node(field).get("AStar").is_some() || unwrap_node(field).get("A_Star").is_some();
    let fields = match fields.split_last() {
        Some((last, rest)) if star(last) => {
            return rest.iter().all(|field| unwrap_node(field).get("String").is_some()).then_some(None);
        }
        _ => fields,
    };
    let names: Option<Vec<&str>> = fields
        .iter()
        .map(|field| unwrap_node(field).get("String").and_then(|string| string.get("sval")).and_then(Value::as_str))
        .collect();
    match names?.as_slice() {
        [name] => Some(Some(name.to_string())),
        [] => None,
        _ => Some(None),
    }
}

fn unwrap_node(value: &Value) -> &Value {
    match value.get("node") {
        Some(inner) => unwrap_node(inner),
        None => value,
    }
}

fn column_refs(value: &Value, references: &mut DerivedReferences) {
    match value {
        Value::Object(object) => {
            if let Some(Value::Object(reference)) = object.get("ColumnRef") {
                if let Some(Value::Array(fields)) = reference.get("fields") {
                    match fields.last().map(unwrap_node) {
                        Some(last) if last.get("AStar").is_some() || last.get("A_Star").is_some() => {
                            references.whole_rows = true
                        }
                        Some(last) => {
                            if let Some(Value::String(name)) = last.get("String").and_then(|string| string.get("sval"))
                            {
                                references.columns.push(name.clone());
                            }
                        }
                        None => {}
                    }
                }
            }
            for inner in object.values() {
                column_refs(inner, references);
            }
        }
        Value::Array(items) => {
            for item in items {
                column_refs(item, references);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> (Vec<String>, bool) {
        let references = derived_references(text).expect("parses");
        (references.columns, references.whole_rows)
    }

    #[test]
    fn plain_columns_are_not_derived() {
        assert_eq!(refs("SELECT c.id, c.email FROM customers c"), (vec![], false));
        assert_eq!(refs("SELECT *, c.* FROM customers c"), (vec![], false));
    }

    #[test]
    fn expressions_name_what_they_read() {
        assert_eq!(refs("SELECT id::text AS id, full_name FROM customers"), (vec!["id".to_string()], false));
        assert_eq!(refs("SELECT upper(c.full_name), count(*) FROM customers c GROUP BY 1").0, vec!["full_name"]);
        assert_eq!(refs("SELECT (SELECT max(ssn) FROM customers) AS x").0, vec!["ssn"]);
    }

    #[test]
    fn renamed_rows_are_flagged() {
        let renamed = |text: &str| derived_references(text).expect("parses").renamed_rows;
        assert!(!renamed("SELECT row_to_json(c) FROM customers c"));
        assert!(!renamed("SELECT json_agg(customers) FROM customers"));
        assert!(renamed("SELECT row_to_json(x) FROM (SELECT full_name AS n FROM customers) x"));
        assert!(renamed("WITH x AS (SELECT full_name AS n FROM customers) SELECT row_to_json(x) FROM x"));
        assert!(renamed("SELECT to_json(f) FROM customers c, LATERAL (SELECT c.full_name) f"));
    }

    #[test]
    fn whole_rows_are_flagged() {
        assert!(refs("SELECT c::text FROM customers c").1);
        assert!(refs("SELECT row_to_json(c) FROM customers c").1);
        assert!(refs("SELECT customers FROM customers").1);
        assert!(refs("SELECT row_to_json(t.*) FROM customers t").1);
        assert!(refs("SELECT x FROM (SELECT full_name FROM customers) x").1);
    }

    #[test]
    fn bare_names_are_columns_unless_they_name_a_row() {
        assert_eq!(refs("SELECT full_name FROM customers"), (vec![], false));
        assert!(refs("SELECT c FROM customers c").1);
    }
}
