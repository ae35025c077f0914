use super::*;

fn key(text: &str) -> String {
    cache_key(text, ParseOptions::default()).expect("keyable")
}

#[test]
fn literals_and_comments_do_not_change_the_key() {
    let first = key("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;");
    let second = key("select_placeholder");
    assert_ne!(first, second);
    assert_eq!(
        key("SELECT abalance /* a */ FROM pgbench_accounts WHERE aid = 1; -- x"),
        key("SELECT  abalance /* c */ FROM pgbench_accounts\n WHERE aid = 7; -- done")
    );
    assert_eq!(key("SELECT 'a', E'b\\'c', $$d$$, 1.5e3"), key("SELECT 'x', E'y', $q$z$q$, 2"));
}

#[test]
fn structure_changes_the_key() {
    assert_ne!(key("SELECT * FROM orders"), key("SELECT * FROM customers"));
    assert_ne!(key("SELECT * FROM t WHERE a = 1"), key("SELECT * FROM t WHERE a = $1"));
    assert_ne!(key("SELECT \"a\" FROM t"), key("SELECT \"b\" FROM t"));
}

#[test]
fn string_continuation_is_lexed_as_the_server_does() {
    // An E-string continued on the next line keeps backslash escapes; a plain one does not. A lexer that
    // got this wrong would give the harmless first text and the harmful second the same key.
    let harmless = "SELECT E'x'\n'\\'; DROP TABLE t; --'";
    let harmful = "SELECT 'x'\n'\\'; DROP TABLE t; --'";
    assert_ne!(key(harmless), key(harmful));
    assert!(key(harmful).contains("DROP TABLE t"), "{}", key(harmful));
    assert!(!key(harmless).contains("DROP"), "{}", key(harmless));
}

#[test]
fn backslash_escaping_sessions_are_not_keyed() {
    assert_eq!(cache_key("SELECT 1", ParseOptions { backslash_escapes: true }), None);
}

#[test]
fn plain_text_takes_the_fast_path() {
    let fast = key("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;");
    assert!(fast.starts_with(FAST));
    assert_eq!(fast, key("SELECT  abalance\nFROM pgbench_accounts WHERE aid = 99;  "));
    assert_ne!(fast, key("SELECT abalance FROM pgbench_accounts WHERE aid = $1;"));
    assert_eq!(key("SELECT t1.c2 FROM t1 WHERE x = $1"), format!("{FAST}SELECT t1.c2 FROM t1 WHERE x = $1"));
    // Anything with quotes or comments goes to the server's lexer.
    assert!(!key("SELECT 'a'").starts_with(FAST));
    assert!(!key("SELECT 1 -- c").starts_with(FAST));
    assert!(!key("SELECT 1 /* c */").starts_with(FAST));
    assert!(!key("SELECT $$a$$").starts_with(FAST));
    assert!(!key("SELECT a$1").starts_with(FAST));
}

#[test]
fn fast_keys_keep_adjacency() {
    assert_ne!(key("SELECT 1 e5"), key("SELECT 1e5"));
    assert_ne!(key("SELECT a-1"), key("SELECT a - 1"));
}
