//! What a `COPY … TO STDOUT` outputs, for masking its rows: the equivalent SELECT (to describe its columns) and the
//! format options that shape each row.

use pg_query::protobuf::{self, node::Node};

/// A `COPY … TO` statement's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTo {
    /// A SELECT with the same columns, in order, as the COPY outputs.
    pub select: String,
    /// `FORMAT csv` (binary is told by the protocol).
    pub csv: bool,
    pub delimiter: Option<u8>,
    pub quote: Option<u8>,
    pub null: Option<String>,
    /// csv `HEADER`: the first line is the column names.
    pub header: bool,
}

/// The `index`-th (0-based) `COPY … TO` in `query`; `None` when there is none or the text does not parse.
pub fn copy_to(query: &str, index: usize) -> Option<CopyTo> {
    let parsed = std::panic::catch_unwind(|| pg_query::parse(query, pg_query::ParserOptions::DEFAULT)).ok()?.ok()?;
    let copy = parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|raw| match raw.stmt.as_ref()?.node.as_ref()? {
            Node::CopyStmt(copy) if !copy.is_from => Some(copy),
            _ => None,
        })
        .nth(index)?;
    let select = match (&copy.relation, &copy.query) {
        (Some(relation), _) => {
            let columns: Vec<String> = copy
                .attlist
                .iter()
                .filter_map(|node| match node.node.as_ref()? {
                    Node::String(name) => Some(quote_identifier(&name.sval)),
                    _ => None,
                })
                .collect();
            let list = if columns.is_empty() { "*".to_string() } else { columns.join(", ") };
            let table = if relation.schemaname.is_empty() {
                quote_identifier(&relation.relname)
            } else {
                format!("{}.{}", quote_identifier(&relation.schemaname), quote_identifier(&relation.relname))
            };
            format!("SELECT {list} FROM {table}")
        }
        (None, Some(query)) => {
            let result = protobuf::ParseResult {
                version: parsed.protobuf.version,
                stmts: vec![protobuf::RawStmt {
                    stmt: Some(Box::new((**query).clone())),
                    stmt_location: 0,
                    stmt_len: 0,
                }],
            };
            std::panic::catch_unwind(|| pg_query::deparse(&result, pg_query::DeparseOptions::default())).ok()?.ok()?
        }
        (None, None) => return None,
    };
    let mut out = CopyTo { select, csv: false, delimiter: None, quote: None, null: None, header: false };
    for option in &copy.options {
        let Some(Node::DefElem(element)) = option.node.as_ref() else { continue };
        let argument = element.arg.as_ref().and_then(|arg| match arg.node.as_ref()? {
            Node::String(value) => Some(value.sval.clone()),
            Node::Boolean(value) => Some(value.boolval.to_string()),
            Node::Integer(value) => Some(value.ival.to_string()),
            _ => None,
        });
        match element.defname.as_str() {
            "format" => out.csv = argument.as_deref().is_some_and(|format| format.eq_ignore_ascii_case("csv")),
            "delimiter" => out.delimiter = argument.and_then(|value| value.bytes().next()),
            "quote" => out.quote = argument.and_then(|value| value.bytes().next()),
            "null" => out.null = argument,
            "header" => out.header = argument.as_deref().is_none_or(|value| !matches!(value, "false" | "0" | "off")),
            _ => {}
        }
    }
    Some(out)
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_copies_become_selects() {
        let copy = copy_to("COPY public.customers (email, \"Full Name\") TO STDOUT", 0).expect("a copy");
        assert_eq!(copy.select, "SELECT \"email\", \"Full Name\" FROM \"public\".\"customers\"");
        assert!(!copy.csv);
        let copy = copy_to("COPY customers TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';')", 0).expect("a copy");
        assert_eq!(copy.select, "SELECT * FROM \"customers\"");
        assert!(copy.csv && copy.header);
        assert_eq!(copy.delimiter, Some(b';'));
    }

    #[test]
    fn query_copies_keep_their_query_and_order() {
        let text = "SELECT 1; COPY (SELECT email FROM customers WHERE id > 1) TO STDOUT CSV; COPY t TO STDOUT";
        assert_eq!(copy_to(text, 0).expect("first").select, "SELECT email FROM customers WHERE id > 1");
        assert!(copy_to(text, 0).expect("first").csv);
        assert_eq!(copy_to(text, 1).expect("second").select, "SELECT * FROM \"t\"");
        assert_eq!(copy_to(text, 2), None);
        assert_eq!(copy_to("COPY t FROM STDIN", 0), None);
    }
}
