//! Golden classification tests: `tests/classification.golden` holds the corpus, each case's SQL followed by
//! the expected analysis, one line per statement. `WARDEN_BLESS=1 cargo test -p warden-sql` rewrites the
//! expectations from the current output (review the diff before committing it).

use std::fmt::Write as _;
use std::path::PathBuf;

use super::*;

/// One statement as the golden file shows it:
/// `class kind [where=bool] | class:target class:target … [| effect] [# note]`.
fn render(statement: &Statement) -> String {
    let mut line = format!("{} {}", statement.class, statement.kind);
    if let Some(has_where) = statement.has_where {
        write!(line, " where={has_where}").unwrap();
    }
    line.push_str(" |");
    for access in &statement.accesses {
        match &access.target {
            Target::Connection => write!(line, " {}:connection", access.class).unwrap(),
            Target::Table(table) => write!(line, " {}:{}", access.class, table).unwrap(),
        }
    }
    if let Some(effect) = &statement.effect {
        write!(line, " | {effect:?}").unwrap();
    }
    line
}

fn render_analysis(sql: &str) -> String {
    match analyze(sql, ParseOptions::default()) {
        Ok(analysis) if analysis.statements.is_empty() => "empty".to_string(),
        Ok(analysis) => analysis.statements.iter().map(render).collect::<Vec<_>>().join("\n"),
        Err(error) => format!("error {}: {error}", error.sqlstate()),
    }
}

struct Case {
    title: String,
    sql: String,
    expected: String,
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/classification.golden")
}

/// Cases are `=== title`, the SQL, `---`, the expected lines; text before the first case is kept as a header.
fn parse_golden(text: &str) -> (String, Vec<Case>) {
    let mut header = String::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut in_expected = false;
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("=== ") {
            cases.push(Case { title: title.to_string(), sql: String::new(), expected: String::new() });
            in_expected = false;
        } else if let Some(case) = cases.last_mut() {
            if line == "---" {
                in_expected = true;
            } else if in_expected {
                if !line.is_empty() {
                    case.expected.push_str(line);
                    case.expected.push('\n');
                }
            } else {
                case.sql.push_str(line);
                case.sql.push('\n');
            }
        } else {
            header.push_str(line);
            header.push('\n');
        }
    }
    for case in &mut cases {
        case.sql = case.sql.trim_end_matches('\n').to_string();
        case.expected = case.expected.trim_end().to_string();
    }
    (header, cases)
}

#[test]
fn classification_corpus() {
    let path = golden_path();
    let text = std::fs::read_to_string(&path).expect("golden file");
    let (header, cases) = parse_golden(&text);
    let bless = std::env::var_os("WARDEN_BLESS").is_some();
    let mut failures = String::new();
    let mut blessed = header;
    for case in &cases {
        let actual = render_analysis(&case.sql);
        if actual != case.expected {
            writeln!(
                failures,
                "=== {}\n{}\n--- expected\n{}\n--- actual\n{}\n",
                case.title, case.sql, case.expected, actual
            )
            .unwrap();
        }
        write!(blessed, "=== {}\n{}\n---\n{}\n\n", case.title, case.sql, actual).unwrap();
    }
    if bless {
        std::fs::write(&path, blessed.trim_end().to_string() + "\n").expect("write golden file");
        return;
    }
    assert!(cases.len() >= 150, "the corpus has {} cases; keep at least 150", cases.len());
    assert!(failures.is_empty(), "classification differs from {}:\n\n{failures}", path.display());
}

#[test]
fn deep_nesting_is_refused_not_crashed() {
    let depth = 5000;
    let sql = format!("SELECT {}1{}", "abs(".repeat(depth), ")".repeat(depth));
    let result = analyze(&sql, ParseOptions::default());
    assert!(result.is_err(), "{result:?}");
}

#[test]
fn nul_bytes_are_refused() {
    assert_eq!(analyze("SELECT 1\0; DROP TABLE t", ParseOptions::default()), Err(SqlError::Nul));
}

#[test]
fn backslash_escaping_sessions_parse_as_the_server_would() {
    let sql = "SELECT 'a\\' || '; DROP TABLE t; --'";
    let standard = analyze(sql, ParseOptions::default()).unwrap();
    assert_eq!(standard.statements.len(), 1);
    let escaping = analyze(sql, ParseOptions { backslash_escapes: true }).unwrap();
    assert_eq!(escaping.statements.len(), 2, "{escaping:?}");
    assert_eq!(escaping.statements[1].class, Class::Ddl);
}

#[test]
fn every_statement_of_the_corpus_is_well_formed() {
    let text = std::fs::read_to_string(golden_path()).expect("golden file");
    let (_, cases) = parse_golden(&text);
    for case in &cases {
        let Ok(analysis) = analyze(&case.sql, ParseOptions::default()) else {
            continue;
        };
        for statement in &analysis.statements {
            let accesses = &statement.accesses;
            assert!(!accesses.is_empty(), "{}: no access", case.title);
            assert!(accesses.windows(2).all(|pair| pair[0] < pair[1]), "{}: {accesses:?} not sorted", case.title);
            let highest = accesses.iter().map(|access| access.class).max();
            assert_eq!(Some(statement.class), highest, "{}: class is not its highest access", case.title);
        }
    }
}

/// A FROM entry of a shape `walk_from_entry` does not know (a future grammar's) is locked whole when the query locks
/// anything, and left alone when it locks nothing.
#[test]
fn unknown_from_entries_are_locked_whole() {
    let entry = serde_json::json!({"FutureFromEntry": {"relation": {"RangeVar": {
        "catalogname": "", "schemaname": "shop", "relname": "orders", "inh": true, "relpersistence": "p", "alias": null
    }}}});
    let orders = || Target::Table(TableName { schema: Some("shop".into()), name: "orders".into() });
    let place = Place { in_query: true, locking: false };
    let mut depends_on_literals = false;

    let mut walk = walk_with(Class::Read, &mut depends_on_literals);
    walk.walk_from_entry(&entry, &Lock::Named(vec!["elsewhere".into()]), place);
    assert!(walk.accesses.contains(&Access { class: Class::Write, target: orders() }), "{:?}", walk.accesses);

    let mut walk = walk_with(Class::Read, &mut depends_on_literals);
    walk.walk_from_entry(&entry, &Lock::None, place);
    assert_eq!(walk.accesses.into_iter().collect::<Vec<_>>(), vec![Access { class: Class::Read, target: orders() }]);
}
