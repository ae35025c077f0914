//! Config → validated form, and config → diagnostics, through one `check` helper each.

use std::collections::HashMap;
use std::path::Path;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "SHOP_PG_PASSWORD" => Some("s3cret-upstream".to_string()),
        "AGENT_KEY" => Some("wk_agent".to_string()),
        "WEBHOOK_SECRET" => Some("hook-secret".to_string()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/warden/warden.toml"), &env)
}

/// Asserts that `text` is refused with exactly these `line:column: field: message` diagnostics.
fn check_invalid(text: &str, expected: &[&str]) {
    let error = parse(text).expect_err("config should be refused");
    let actual: Vec<String> =
        error.diagnostics().iter().map(|d| format!("{}:{}: {}: {}", d.line, d.column, d.field, d.message)).collect();
    assert_eq!(actual, expected, "diagnostics for:\n{text}");
}

const VALID: &str = r#"
[state]
url = "sqlite://data/warden.db"

[listen]
postgres = "127.0.0.1:15432"
admin = "127.0.0.1:18081"

[[connection]]
name = "shop"
kind = "postgres"
address = "127.0.0.1:5432"
database = "shop"
user = "warden_shop"
password = { env = "SHOP_PG_PASSWORD" }

[[api_key]]
name = "research-agent"
key = { sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }
groups = ["agents"]

[[api_key]]
name = "dev"
key = { env = "AGENT_KEY" }
"#;

#[test]
fn valid_config_resolves_secrets_paths_and_defaults() {
    let config = parse(VALID).expect("valid config");
    assert_eq!(config.state.url.expose(), "sqlite:///etc/warden/data/warden.db");
    assert_eq!(config.listen.postgres, Some("127.0.0.1:15432".parse().unwrap()));
    let shop = config.connection("shop").expect("shop connection");
    let postgres = shop.postgres().expect("a postgres connection");
    assert_eq!(postgres.password.as_ref().map(Secret::expose), Some("s3cret-upstream"));
    assert_eq!(postgres.address, UpstreamAddress::Tcp { host: "127.0.0.1".into(), port: 5432 });
    assert_eq!(postgres.tls.mode, UpstreamTlsMode::Prefer);
    assert_eq!(config.api_keys[0].groups, vec!["agents".to_string()]);
    assert_eq!(
        hex::encode(config.api_keys[0].sha256),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
    // An env key is hashed at load; the key itself is not kept.
    let expected: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(b"wk_agent").into();
    assert_eq!(config.api_keys[1].sha256, expected);
    assert_eq!(config.limits.max_message_bytes, 64 * 1024 * 1024);
}

#[test]
fn secret_debug_never_shows_the_value() {
    let config = parse(VALID).expect("valid config");
    let printed = format!("{config:?}");
    assert!(!printed.contains("s3cret-upstream"), "{printed}");
}

#[test]
fn literal_password_is_refused_with_line_and_field() {
    let text = VALID.replace(r#"password = { env = "SHOP_PG_PASSWORD" }"#, r#"password = "hunter2""#);
    check_invalid(
        &text,
        &["15:12: connection[0].password: a literal secret is not allowed in the config file; use { env = \"…\" } or { file = \"…\" }"],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = VALID
        .replace(r#"env = "SHOP_PG_PASSWORD""#, r#"env = "MISSING_VAR""#)
        .replace(r#"address = "127.0.0.1:5432""#, r#"address = "nowhere""#)
        .replace(r#"postgres = "127.0.0.1:15432""#, r#"postgres = "localhost""#);
    check_invalid(
        &text,
        &[
            "6:12: listen.postgres: \"localhost\" is not an IP address with a port, e.g. \"127.0.0.1:15432\"",
            "12:11: connection[0].address: \"nowhere\" is not host:port or an absolute Unix socket path",
            "15:12: connection[0].password: environment variable MISSING_VAR is not set or empty",
        ],
    );
}

#[test]
fn unknown_field_is_named_with_its_line() {
    let text = VALID.replace("database = \"shop\"", "databse = \"shop\"");
    let error = parse(&text).expect_err("typo refused");
    let diagnostic = &error.diagnostics()[0];
    assert_eq!(diagnostic.line, 13);
    assert_eq!(diagnostic.field, "databse");
    assert!(diagnostic.message.contains("unknown field"), "{}", diagnostic.message);
}

#[test]
fn duplicate_connection_and_bad_sha256() {
    let text = format!(
        "{VALID}\n[[connection]]\nname = \"shop\"\nkind = \"postgres\"\naddress = \"db:5432\"\ndatabase = \"d\"\nuser = \"u\"\n"
    )
    .replace("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "abc");
    check_invalid(
        &text,
        &[
            "19:7: api_key[0].key: sha256 must be 64 hexadecimal characters",
            "27:8: connection[1].name: connection \"shop\" is defined twice",
        ],
    );
}

#[test]
fn unsupported_kind_and_tls_mode() {
    let text = VALID.replace("kind = \"postgres\"", "kind = \"mysql\"");
    check_invalid(&text, &["11:8: connection[0].kind: kind \"mysql\" is not supported by this version of warden yet"]);
    let text = VALID.replace("user = \"warden_shop\"", "user = \"warden_shop\"\ntls = { mode = \"verify\" }");
    check_invalid(
        &text,
        &["15:16: connection[0].tls.mode: unknown mode \"verify\"; expected disable, prefer, require, verify-ca or verify-full"],
    );
}

#[test]
fn state_url_with_literal_password_is_refused() {
    let text = VALID.replace("sqlite://data/warden.db", "postgres://warden:pw@db/warden");
    check_invalid(
        &text,
        &[
            "3:7: state.url: a password in a literal URL is not allowed; use url = { env = \"…\" } or { file = \"…\" }",
            "3:7: tokens.signing_key: a PostgreSQL state store is shared by several gateways: name their common token signing key in [tokens] signing_key = { file = \"…\" } or { env = \"…\" }",
        ],
    );
}

#[test]
fn syntax_error_points_at_the_line() {
    let error = parse("[listen]\npostgres = \n").expect_err("syntax error");
    assert_eq!(error.diagnostics()[0].line, 2);
}

#[test]
fn missing_listen_section() {
    check_invalid("", &["0:0: listen: missing [listen] section; set listen.postgres or listen.http"]);
}

#[test]
fn durations() {
    use crate::validate::parse_duration;
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("15s"), Some(Duration::from_secs(15)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("5 weeks"), None);
    assert_eq!(parse_duration("s"), None);
}

#[test]
fn runtime_workers() {
    let config = parse(&format!("{VALID}\n[runtime]\nworkers = 3\n")).expect("valid");
    assert_eq!(config.runtime.workers, 3);
    assert!(parse(VALID).expect("valid").runtime.workers >= 1, "defaults to the number of cores");
    check_invalid(
        &format!("{VALID}\n[runtime]\nworkers = 0\n"),
        &["27:11: runtime.workers: must be between 1 and 1024"],
    );
}

#[test]
fn oidc_issuers_tokens_and_admin() {
    let text = format!(
        "{VALID}\n[[oidc]]\nissuer = \"https://idp.example.com/\"\naudience = \"warden\"\n\n\
         [[oidc]]\nissuer = \"http://127.0.0.1:8123\"\naudience = \"warden\"\ngroups_claim = \"roles\"\n\
         name_claim = \"email\"\njwks_url = \"http://127.0.0.1:8123/keys\"\n\n\
         [tokens]\ndefault_ttl = \"5m\"\nmax_ttl = \"2h\"\nexpiry_grace = \"0s\"\n\n[admin]\ngroup = \"platform\"\n"
    );
    let config = parse(&text).expect("valid config");
    assert_eq!(
        config.oidc[0],
        OidcIssuer {
            issuer: "https://idp.example.com".into(),
            audience: "warden".into(),
            groups_claim: "groups".into(),
            name_claim: "sub".into(),
            jwks_url: None,
        }
    );
    assert_eq!((config.oidc[1].groups_claim.as_str(), config.oidc[1].name_claim.as_str()), ("roles", "email"));
    assert_eq!(config.tokens.default_ttl, Duration::from_secs(300));
    assert_eq!(config.tokens.max_ttl, Duration::from_secs(7200));
    assert_eq!(config.tokens.expiry_grace, Duration::ZERO);
    assert!(config.tokens.signing_key.is_none());
    assert_eq!(config.admin.group, "platform");
    assert_eq!(config.state.directory(), Some(Path::new("/etc/warden/data").to_path_buf()));

    let defaults = parse(VALID).expect("valid config");
    assert_eq!(defaults.tokens.default_ttl, Duration::from_secs(900));
    assert_eq!(defaults.admin.group, "admin");
}

#[test]
fn oidc_and_token_problems_are_pointed_at() {
    check_invalid(
        &format!(
            "{VALID}\n[[oidc]]\nissuer = \"http://idp.example.com\"\naudience = \"\"\n\n\
             [tokens]\ndefault_ttl = \"2h\"\nmax_ttl = \"1h\"\n"
        ),
        &[
            "27:10: oidc[0].issuer: \"http://idp.example.com\" must be an https:// URL (plain http only on a loopback host)",
            "28:12: oidc[0].audience: must not be empty",
            "31:15: tokens.default_ttl: the default lifetime is longer than tokens.max_ttl",
        ],
    );
    // Gateways sharing a PostgreSQL store must share a signing key.
    let shared = VALID.replace("sqlite://data/warden.db", "postgres://warden@db/warden");
    let error = parse(&shared).expect_err("refused");
    assert!(error.to_string().contains("tokens.signing_key"), "{error}");
}

#[test]
fn connection_masking_detectors_and_column_rules() {
    let text = format!(
        "{VALID}\n[connection.masking]\ndetect = [\"email\", \"payment_card\"]\n\n\
         [[connection.masking.column]]\nmatch = \"public.customers.full_name\"\nstrategy = \"hash\"\n\n\
         [[connection.masking.column]]\nmatch = \"*.ssn\"\n"
    );
    let config = parse(&text).expect("valid config");
    let masking = config.connection("shop").unwrap().masking.clone().expect("masking configured");
    assert_eq!(
        masking.detect,
        warden_mask::Selection::Only(vec![warden_mask::Detector::Email, warden_mask::Detector::PaymentCard])
    );
    assert_eq!(masking.columns[0].strategy, warden_mask::Strategy::Hash);
    assert_eq!(masking.columns[1].strategy, warden_mask::Strategy::Redact, "redact unless told otherwise");
    assert!(masking.columns[0].matches("public", "customers", "full_name"));
    assert!(!masking.columns[0].matches("public", "customers", "email"));
    assert!(
        masking.columns[1].matches("hr", "employees", "ssn") && !masking.columns[1].matches("hr", "employees", "id")
    );

    let all = format!("{VALID}\n[connection.masking]\ndetect = [\"all\"]\n");
    assert_eq!(
        parse(&all).unwrap().connection("shop").unwrap().masking.as_ref().unwrap().detect,
        warden_mask::Selection::All
    );
    assert!(parse(VALID).unwrap().connection("shop").unwrap().masking.is_none());
}

#[test]
fn masking_problems_are_pointed_at() {
    let text = format!(
        "{VALID}\n[connection.masking]\ndetect = [\"emial\"]\n\n\
         [[connection.masking.column]]\nmatch = \"full_name\"\n\n\
         [[connection.masking.column]]\nmatch = \"customers.email\"\nstrategy = \"scramble\"\n"
    );
    let error = parse(&text).expect_err("refused");
    let lines: Vec<String> =
        error.diagnostics().iter().map(|d| format!("{}:{}: {}: {}", d.line, d.column, d.field, d.message)).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].starts_with("27:11: connection[0].masking.detect: ") && lines[0].contains("emial"), "{lines:#?}");
    assert!(lines[1].starts_with("30:9: connection[0].masking.column[0].match: \"full_name\" is not"), "{lines:#?}");
    assert!(
        lines[2].starts_with("34:12: connection[0].masking.column[1].strategy: ") && lines[2].contains("scramble"),
        "{lines:#?}"
    );
}

#[test]
fn masking_strategies_and_custom_detectors() {
    let text = format!(
        "{VALID}\n[connection.masking]\ndetect = [\"all\"]\nstrategies = {{ email = \"hash\", phone = \"partial\" }}\n\n\
         [[connection.masking.detector]]\nname = \"employee_id\"\npattern = \"EMP-[0-9]{{6}}\"\nvalidator = \"luhn\"\n\
         keywords = [\"employee\"]\nwindow = 64\nstrategy = \"hash\"\n\n\
         [[connection.masking.detector]]\nname = \"badge\"\npattern = \"B[0-9]{{4}}\"\n"
    );
    let config = parse(&text).expect("valid config");
    let masking = config.connection("shop").unwrap().masking.clone().expect("masking configured");
    assert_eq!(
        masking.strategies,
        HashMap::from([
            (warden_mask::Detector::Email, warden_mask::Strategy::Hash),
            (warden_mask::Detector::Phone, warden_mask::Strategy::Partial),
        ])
    );
    let [employee, badge] = masking.custom.as_slice() else { panic!("two custom detectors: {:?}", masking.custom) };
    assert_eq!((employee.name.as_str(), employee.pattern.as_str()), ("employee_id", "EMP-[0-9]{6}"));
    assert!(matches!(employee.validator, Some(warden_mask::Validator::Luhn)), "{employee:?}");
    assert_eq!(employee.keywords, vec!["employee".to_string()]);
    assert_eq!(employee.context_window, Some(64));
    assert_eq!(employee.strategy, Some(warden_mask::Strategy::Hash));
    assert_eq!((badge.name.as_str(), badge.pattern.as_str()), ("badge", "B[0-9]{4}"));
    assert!(badge.validator.is_none() && badge.keywords.is_empty() && badge.context_window.is_none(), "{badge:?}");
    assert_eq!(badge.strategy, Some(warden_mask::Strategy::Redact), "redact unless told otherwise");

    let masker_config = masking.masker_config([7; 32]);
    assert_eq!(masker_config.detectors, warden_mask::Selection::All);
    assert_eq!(masker_config.strategies, masking.strategies);
    assert_eq!(masker_config.custom.len(), 2);
    assert_eq!(masker_config.hash_key, [7; 32]);
    let masker = warden_mask::Masker::new(&masker_config).expect("validated config compiles");
    // EMP-123455 passes the Luhn check, EMP-123456 does not.
    let masked = masker.mask("employee EMP-123455, EMP-123456, badge B1234, mail ada@example.com");
    assert!(masked.starts_with("employee [EMPLOYEE_ID:"), "{masked}");
    assert!(masked.contains(", EMP-123456, badge [BADGE], mail [EMAIL:"), "{masked}");

    // Strategies and custom detectors are optional.
    let plain = parse(&format!("{VALID}\n[connection.masking]\ndetect = [\"email\"]\n")).expect("valid");
    let plain = plain.connection("shop").unwrap().masking.clone().unwrap();
    assert!(plain.strategies.is_empty() && plain.custom.is_empty());
}

#[test]
fn masking_strategy_problems_are_pointed_at() {
    check_invalid(
        &format!(
            "{VALID}\n[connection.masking]\ndetect = [\"email\", \"ipv4\"]\n\
             strategies = {{ emial = \"hash\", ipv4 = \"scramble\", phone = \"hash\", badge = \"hash\" }}\n\n\
             [[connection.masking.detector]]\nname = \"badge\"\npattern = \"B[0-9]{{4}}\"\n"
        ),
        &[
            "28:16: connection[0].masking.strategies.emial: unknown detector \"emial\"; expected one of \
             pem_private_key, jwt, aws_access_key_id, aws_secret_key, github_token, slack_token, anthropic_key, \
             openai_key, stripe_key, email, iban, payment_card, us_ssn, phone, ipv6, ipv4",
            "28:39: connection[0].masking.strategies.ipv4: unknown masking strategy \"scramble\" (expected redact, \
             partial, hash or null)",
            "28:51: connection[0].masking.strategies.phone: phone is not detected on this connection; add it to detect",
            "28:67: connection[0].masking.strategies.badge: \"badge\" is a custom detector: set its strategy in its \
             [[connection.masking.detector]]",
        ],
    );
}

#[test]
fn custom_detector_problems_are_pointed_at() {
    let detector = |name: &str, rest: &str| {
        format!("\n[[connection.masking.detector]]\nname = \"{name}\"\npattern = \"X[0-9]+\"\n{rest}")
    };
    let text = format!(
        "{VALID}\n[connection.masking]\n{}{}{}{}{}{}{}{}",
        // 27..30: a pattern that does not parse, on a valid detector.
        detector("unclosed", "").replace("X[0-9]+", "EMP-[0-9"),
        // 31..34: a pattern that matches the empty string.
        detector("anything", "").replace("X[0-9]+", "[0-9]*"),
        // 35..38: a name that is not one.
        detector("employee-id", ""),
        // 39..42 and 43..46: the same name twice, ignoring case.
        detector("badge", ""),
        detector("Badge", ""),
        // 47..50 and 51..54: a built-in detector's name, and one with a built-in detector's label.
        detector("email", ""),
        detector("card", ""),
        // 55..62: bad validator, empty keyword, window out of range, bad strategy.
        detector("ticket", "validator = \"mod97\"\nkeywords = [\"\"]\nwindow = 0\nstrategy = \"scramble\"\n"),
    );
    let error = parse(&text).expect_err("refused");
    let actual: Vec<String> =
        error.diagnostics().iter().map(|d| format!("{}:{}: {}: {}", d.line, d.column, d.field, d.message)).collect();
    let expected_starts = [
        "30:11: connection[0].masking.detector[0].pattern: custom detector \"unclosed\": invalid pattern: ",
        "34:11: connection[0].masking.detector[1].pattern: custom detector \"anything\": the pattern matches the \
         empty string",
        "37:8: connection[0].masking.detector[2].name: \"employee-id\" is not a detector name: use letters, digits \
         and '_'",
        "45:8: connection[0].masking.detector[4].name: custom detector \"Badge\" is defined twice (names are \
         compared ignoring case)",
        "49:8: connection[0].masking.detector[5].name: \"email\" is a built-in detector; give the custom detector \
         another name",
        "53:8: connection[0].masking.detector[6].name: \"card\" would be labelled [CARD] like the built-in detector \
         payment_card; give it another name",
        "59:13: connection[0].masking.detector[7].validator: unknown validator \"mod97\"; expected luhn, \
         payment_card, iban or us_ssn",
        "60:12: connection[0].masking.detector[7].keywords: a keyword must not be empty",
        "61:10: connection[0].masking.detector[7].window: must be between 1 and 4096",
        "62:12: connection[0].masking.detector[7].strategy: unknown masking strategy \"scramble\" (expected \
         redact, partial, hash or null)",
    ];
    assert_eq!(actual.len(), expected_starts.len(), "{actual:#?}");
    for (actual, expected) in actual.iter().zip(expected_starts) {
        assert!(actual.starts_with(expected), "{actual}\ndoes not start with\n{expected}");
        assert!(!actual.contains('\n'), "one line: {actual}");
    }

    check_invalid(
        &format!("{VALID}\n[connection.masking]\n{}", detector("badge", "window = 16\n")),
        &["31:10: connection[0].masking.detector[0].window: a context window needs keywords to look for; add \
           keywords or remove window"],
    );
}

#[test]
fn masking_hash_key() {
    let with_key = format!(
        "{VALID}\n[connection.masking]\ndetect = [\"all\"]\n\n[masking]\nhash_key = {{ env = \"MASK_KEY\" }}\n"
    );
    let with_mask_key =
        |name: &str| (name == "MASK_KEY").then(|| "0123456789abcdef0123456789abcdef".to_string()).or_else(|| env(name));
    let config = Config::parse(&with_key, Path::new("/etc/warden/warden.toml"), &with_mask_key).expect("valid");
    assert_eq!(config.masking.hash_key.as_ref().map(Secret::expose), Some("0123456789abcdef0123456789abcdef"));
    assert!(!format!("{config:?}").contains("0123456789abcdef"), "the key is never printed");

    // Optional with SQLite state: the gateway keeps its own key beside the database.
    let masking = format!("{VALID}\n[connection.masking]\ndetect = [\"all\"]\n");
    assert!(parse(&masking).expect("valid").masking.hash_key.is_none());

    // Required with a shared PostgreSQL store as soon as one connection masks.
    let shared = |text: &str| {
        text.replace("sqlite://data/warden.db", "postgres://warden@db/warden")
            + "\n[tokens]\nsigning_key = { env = \"AGENT_KEY\" }\n"
    };
    check_invalid(
        &shared(&masking),
        &["3:7: masking.hash_key: a PostgreSQL state store is shared by several gateways, which must share the \
           masking hash key so that hash tokens agree across replicas: name it in [masking] hash_key = { file = \
           \"…\" } or { env = \"…\" }"],
    );
    let config = Config::parse(&shared(&with_key), Path::new("/etc/warden/warden.toml"), &with_mask_key)
        .expect("valid with a shared key");
    assert!(config.masking.hash_key.is_some());
    assert!(parse(&shared(VALID)).is_ok(), "no masking, no key needed");

    check_invalid(
        &format!("{VALID}\n[masking]\nhash_key = \"literal\"\n"),
        &["27:12: masking.hash_key: a literal secret is not allowed in the config file; use { env = \"…\" } or \
           { file = \"…\" }"],
    );
}

#[test]
fn limits_max_row_bytes() {
    let defaults = parse(VALID).expect("valid");
    assert_eq!(defaults.limits.max_row_bytes, 64 * 1024 * 1024);
    let config = parse(&format!("{VALID}\n[limits]\nmax_row_bytes = 1048576\n")).expect("valid");
    assert_eq!(config.limits.max_row_bytes, 1 << 20);
    assert_eq!(config.limits.max_message_bytes, 64 * 1024 * 1024, "independent of max_message_bytes");
    check_invalid(
        &format!("{VALID}\n[limits]\nmax_row_bytes = 512\nmax_message_bytes = 2147483648\n"),
        &[
            "27:17: limits.max_row_bytes: must be between 1024 and 1073741824",
            "28:21: limits.max_message_bytes: must be between 1024 and 1073741824",
        ],
    );
}

#[test]
fn audit_durability_is_async_by_default_and_names_a_bad_mode() {
    let base = "[listen]\npostgres = \"127.0.0.1:0\"\n";
    assert_eq!(parse(base).expect("valid").audit.durability, crate::Durability::Async);
    let sync = format!("{base}[audit]\ndurability = \"sync\"\n");
    assert_eq!(parse(&sync).expect("valid").audit.durability, crate::Durability::Sync);
    check_invalid(
        &format!("{base}[audit]\ndurability = \"eventually\"\n"),
        &["4:14: audit.durability: \"eventually\" is not a durability mode (expected \"async\" or \"sync\")"],
    );
}

#[test]
fn audit_sinks_are_read_and_checked() {
    let base = "[listen]\npostgres = \"127.0.0.1:0\"\n";
    let config = parse(&format!("{base}[[audit.sink]]\nkind = \"jsonl\"\npath = \"audit/warden.jsonl\"\nkeep = 3\n"))
        .expect("valid");
    assert_eq!(
        config.audit.sinks,
        vec![crate::AuditSink::Jsonl {
            path: std::path::PathBuf::from("/etc/warden/audit/warden.jsonl"),
            max_bytes: 100 * 1024 * 1024,
            keep: 3
        }]
    );
    check_invalid(
        &format!("{base}[[audit.sink]]\nkind = \"kafka\"\n"),
        &["4:8: audit.sink[0].kind: \"kafka\" is not a sink kind (expected \"jsonl\", \"syslog\" or \"webhook\")"],
    );
    check_invalid(
        &format!("{base}[[audit.sink]]\nkind = \"jsonl\"\npath = \"a.jsonl\"\nmax_bytes = 10\n"),
        &["6:13: audit.sink[0].max_bytes: must be at least 4096"],
    );
}

#[test]
fn webhook_sinks_need_an_url_and_a_secret_from_env_or_file() {
    let base = "[listen]\npostgres = \"127.0.0.1:0\"\n";
    let config = parse(&format!(
        "{base}[[audit.sink]]\nkind = \"webhook\"\nurl = \"https://siem.example/ingest\"\nsecret = {{ env = \"WEBHOOK_SECRET\" }}\n"
    ))
    .expect("valid");
    let [crate::AuditSink::Webhook { url, secret, max_batch }] = config.audit.sinks.as_slice() else {
        panic!("one webhook sink: {:?}", config.audit.sinks)
    };
    assert_eq!((url.as_str(), secret.expose(), *max_batch), ("https://siem.example/ingest", "hook-secret", 500));
    check_invalid(
        &format!(
            "{base}[[audit.sink]]\nkind = \"webhook\"\nurl = \"siem:9000\"\nsecret = {{ env = \"WEBHOOK_SECRET\" }}\n"
        ),
        &["5:7: audit.sink[0].url: \"siem:9000\" is not an http:// or https:// URL"],
    );
    check_invalid(
        &format!("{base}[[audit.sink]]\nkind = \"webhook\"\nurl = \"http://siem\"\nsecret = \"literal\"\n"),
        &["6:10: audit.sink[0].secret: a literal secret is not allowed in the config file; use { env = \"…\" } or { file = \"…\" }"],
    );
}

#[test]
fn result_rows_and_retention_are_checked() {
    let base = "[listen]\npostgres = \"127.0.0.1:0\"\n";
    let defaults = parse(base).expect("valid").audit;
    assert_eq!((defaults.result_rows, defaults.retention), (10, None));
    let audit = parse(&format!("{base}[audit]\nresult_rows = 0\nretention = \"90d\"\n")).expect("valid").audit;
    assert_eq!((audit.result_rows, audit.retention), (0, Some(std::time::Duration::from_secs(90 * 86_400))));
    check_invalid(
        &format!("{base}[audit]\nresult_rows = -1\nretention = \"10m\"\n"),
        &["4:15: audit.result_rows: must be between 0 and 10000", "5:13: audit.retention: must be at least 1h"],
    );
}

#[test]
fn connection_approval_modes() {
    let connection = |approval: &str| {
        format!(
            "[listen]\npostgres = \"127.0.0.1:0\"\n[[connection]]\nname = \"shop\"\nkind = \"postgres\"\n\
             address = \"127.0.0.1:5432\"\ndatabase = \"shop\"\nuser = \"u\"\n{approval}"
        )
    };
    let default = parse(&connection("")).expect("valid");
    assert_eq!(default.connections[0].approval, ApprovalMode::Hold { wait: std::time::Duration::from_secs(300) });
    let hold = parse(&connection("approval = { mode = \"hold\", wait = \"90s\" }\n")).expect("valid");
    assert_eq!(hold.connections[0].approval, ApprovalMode::Hold { wait: std::time::Duration::from_secs(90) });
    let fail_fast = parse(&connection("approval = { mode = \"fail-fast\" }\n")).expect("valid");
    assert_eq!(fail_fast.connections[0].approval, ApprovalMode::FailFast);
    check_invalid(
        &connection("approval = { mode = \"ask\" }\n"),
        &["9:21: connection[0].approval.mode: \"ask\" is not an approval mode (expected \"hold\" or \"fail-fast\")"],
    );
    check_invalid(
        &connection("approval = { mode = \"fail-fast\", wait = \"5m\" }\n"),
        &["9:41: connection[0].approval.wait: wait applies to mode = \"hold\" only; a fail-fast statement does not wait"],
    );
}

#[test]
fn approval_notifications() {
    let base = "[listen]\npostgres = \"127.0.0.1:0\"\n";
    let config = parse(&format!(
        "{base}[approvals]\nurl = \"https://warden.example/\"\n[[approvals.notify]]\nkind = \"webhook\"\n\
         url = \"https://hooks.example/approvals\"\nsecret = {{ env = \"WEBHOOK_SECRET\" }}\n"
    ))
    .expect("valid");
    assert_eq!(config.approvals.url.as_deref(), Some("https://warden.example"));
    assert_eq!(
        config.approvals.notify,
        vec![ApprovalNotify::Webhook {
            url: "https://hooks.example/approvals".into(),
            secret: Secret::new("hook-secret")
        }]
    );
    check_invalid(
        &format!("{base}[[approvals.notify]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/x\"\n"),
        &["5:7: approvals.notify[0].url: a literal secret is not allowed in the config file; use { env = \"…\" } or { file = \"…\" }"],
    );
    check_invalid(
        &format!("{base}[[approvals.notify]]\nkind = \"email\"\n"),
        &["4:8: approvals.notify[0].kind: \"email\" is not a notification kind (expected \"webhook\" or \"slack\")"],
    );
}

const LLM: &str = r#"
[[connection]]
name = "openai"
kind = "http"
url = "https://api.openai.com/"
api = "openai"
auth = { bearer = { env = "SHOP_PG_PASSWORD" } }
models = ["gpt-4o-mini"]
max_tokens = 1024
approval = { mode = "fail-fast" }

[connection.guard]
deny = [{ id = "no-jailbreak", pattern = "(?i)ignore previous instructions" }]
prompt_pii = "refuse"

[connection.limits]
budget = { tokens = 100000, per = "1d" }
requests_per_minute = 60

[[connection]]
name = "wiki"
kind = "http"
url = "http://wiki.internal:8080/api"
auth = { basic = { user = "warden", password = { env = "SHOP_PG_PASSWORD" } } }
"#;

#[test]
fn http_connections_parse_with_their_llm_settings() {
    let text = format!("{VALID}{LLM}").replace("admin = \"127.0.0.1:18081\"", "http = \"127.0.0.1:18080\"");
    let config = parse(&text).expect("valid config");
    assert_eq!(config.listen.http, Some("127.0.0.1:18080".parse().unwrap()));
    let openai = config.connection("openai").expect("openai").http().expect("an http connection");
    assert_eq!(openai.url, "https://api.openai.com");
    assert_eq!(openai.api, Some(LlmApi::OpenAi));
    assert!(matches!(&openai.auth, Some(HttpAuth::Bearer(secret)) if secret.expose() == "s3cret-upstream"));
    assert_eq!(openai.models.as_deref(), Some(&["gpt-4o-mini".to_string()][..]));
    assert_eq!(openai.max_tokens, Some(1024));
    assert_eq!(openai.guard.prompt_pii, PromptPii::Refuse);
    assert_eq!(openai.guard.deny[0].id, "no-jailbreak");
    assert_eq!(openai.limits.budget, Some(TokenBudget { tokens: 100_000, per: Duration::from_secs(86_400) }));
    assert_eq!(openai.limits.requests_per_minute, Some(60));
    assert_eq!(openai.hold_back, DEFAULT_HOLD_BACK);
    assert_eq!(config.connection("openai").expect("openai").approval, ApprovalMode::FailFast);
    let wiki = config.connection("wiki").expect("wiki").http().expect("an http connection");
    assert_eq!(wiki.api, None);
    assert!(matches!(&wiki.auth, Some(HttpAuth::Basic { user, .. }) if user == "warden"));
    assert!(config.connection("shop").expect("shop").http().is_none());
}

#[test]
fn http_connection_mistakes_are_pointed_at() {
    let text = format!(
        "{VALID}{}",
        r#"
[[connection]]
name = "llm"
kind = "http"
url = "ftp://example.com"
api = "gemini"
database = "x"
auth = { bearer = "sk-literal" }

[[connection]]
name = "plain"
kind = "http"
url = "https://user:pw@example.com"
models = ["gpt-4o"]

[connection.guard]
deny = [{ id = "bad", pattern = "(unclosed" }]

[connection.limits]
budget = { tokens = 10, per = "30s" }
"#
    );
    check_invalid(
        &text,
        &[
            "29:7: connection[1].url: \"ftp://example.com\" is not an http:// or https:// base URL (no query or fragment)",
            "30:7: connection[1].api: unknown api \"gemini\"; expected \"openai\" or \"anthropic\" (or none, for plain HTTP)",
            "31:12: connection[1].database: database does not apply to a kind = \"http\" connection",
            "32:8: connection[1].auth.bearer: a literal secret is not allowed in the config file; use { env = \"…\" } or { file = \"…\" }",
            "37:7: connection[2].url: credentials do not belong in the URL; use auth = { basic = { user = \"…\", password = { env = \"…\" } } }",
            "38:10: connection[2].models: models applies to LLM connections only (set api = \"openai\" or \"anthropic\")",
            "40:1: connection[2].guard: guard applies to LLM connections only (set api = \"openai\" or \"anthropic\")",
            "41:33: connection[2].guard.deny[0].pattern: invalid regular expression: regex parse error: (unclosed: ^: error: unclosed group",
            "43:1: connection[2].limits: limits applies to LLM connections only (set api = \"openai\" or \"anthropic\")",
            "44:31: connection[2].limits.budget.per: a budget period is at least 1m (use tokens_per_minute for shorter windows)",
        ],
    );
}

#[test]
fn http_public_url() {
    let with = |url: &str| {
        VALID.replace("[listen]\n", &format!("[listen]\nhttp = \"127.0.0.1:18080\"\nhttp_public_url = {url}\n"))
    };
    let config = parse(&with("\"https://warden.example.com/llm/\"")).expect("valid");
    assert_eq!(config.listen.http_public_url.as_deref(), Some("https://warden.example.com/llm"));
    assert_eq!(parse(VALID).expect("valid").listen.http_public_url, None);
    check_invalid(
        &with("\"https://user:pw@warden.example.com\""),
        &["7:19: listen.http_public_url: \"https://user:pw@warden.example.com\" is not an http:// or https:// base URL (no credentials, query, fragment, spaces or quotes), e.g. \"https://warden.example.com\""],
    );
    check_invalid(
        &with("\"warden.example.com\""),
        &["7:19: listen.http_public_url: \"warden.example.com\" is not an http:// or https:// base URL (no credentials, query, fragment, spaces or quotes), e.g. \"https://warden.example.com\""],
    );
    let no_listener = VALID.replace("[listen]\n", "[listen]\nhttp_public_url = \"https://warden.example.com\"\n");
    check_invalid(&no_listener, &["6:19: listen.http_public_url: there is no HTTP listener (listen.http)"]);
}
