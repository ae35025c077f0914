//! Cutting a query into its statements' texts, for people reading an explanation (not on the data path).

/// The text of each statement of `query`, trimmed, in order; empty when the query does not parse.
///
/// Cut by PostgreSQL's parser, so the texts line up one to one with [`crate::analyze`]'s statements.
pub fn split_statements(query: &str) -> Vec<&str> {
    pg_query::split_with_parser(query)
        .map(|statements| statements.into_iter().map(str::trim).filter(|text| !text.is_empty()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn statements_are_cut_where_the_parser_cuts_them() {
        assert_eq!(
            split_statements("SELECT ';'; /* ; */ DELETE FROM t WHERE a = $$;$$ ;  SELECT 1"),
            vec!["SELECT ';'", "DELETE FROM t WHERE a = $$;$$", "SELECT 1"]
        );
        assert!(split_statements("SELEC 1").is_empty());
    }
}
