//! SET and set_config: which run-time settings are harmless, which switch a session to read-write, and which
//! weaken security (hide activity from logs, bypass row security or triggers, change how text is lexed).

use crate::Class;

/// The value a statement gives a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SettingValue<'a> {
    /// A literal value (for a list, the first element).
    Literal(&'a str),
    /// The default, a RESET, or `FROM CURRENT`.
    Default,
    /// An expression warden cannot evaluate.
    Unknown,
}

/// The class of changing `name` to `value`.
pub(crate) fn setting_class(name: &str, value: SettingValue<'_>) -> Class {
    let name = name.to_ascii_lowercase();
    let literal = |wanted: &[&str]| match value {
        SettingValue::Literal(value) => wanted.iter().any(|candidate| value.eq_ignore_ascii_case(candidate)),
        SettingValue::Default | SettingValue::Unknown => false,
    };
    match name.as_str() {
        "role" | "session_authorization" => Class::Dcl,
        // Leaving read-only mode is what writing needs; staying in it (or entering it) is harmless.
        "transaction_read_only" | "default_transaction_read_only" => {
            if literal(&["on", "true", "yes", "1", "t", "y"]) {
                Class::Read
            } else {
                Class::Write
            }
        }
        // warden lexes queries as the server does only with standard strings and UTF-8 text.
        "standard_conforming_strings" => {
            if literal(&["on", "true", "yes", "1"]) {
                Class::Read
            } else {
                Class::Admin
            }
        }
        "client_encoding" | "names" => {
            if literal(&["utf8", "utf-8", "unicode"]) {
                Class::Read
            } else {
                Class::Admin
            }
        }
        "row_security" => {
            if literal(&["on", "true", "yes", "1"]) {
                Class::Read
            } else {
                Class::Admin
            }
        }
        "session_replication_role"
        | "backslash_quote"
        | "lo_compat_privileges"
        | "allow_system_table_mods"
        | "allow_in_place_tablespaces"
        | "ignore_system_indexes"
        | "ignore_checksum_failure"
        | "zero_damaged_pages"
        | "session_preload_libraries"
        | "local_preload_libraries"
        | "dynamic_library_path"
        | "jit_provider"
        | "track_activities"
        | "track_counts"
        | "track_functions"
        | "track_io_timing"
        | "compute_query_id"
        | "default_tablespace"
        | "temp_tablespaces"
        | "event_triggers" => Class::Admin,
        // Extension settings that switch auditing off (pgaudit.log, pgaudit.role…).
        name if name.starts_with("pgaudit.") => Class::Admin,
        name if name.starts_with("log_") || name.starts_with("debug_") || name.starts_with("trace_") => Class::Admin,
        _ => Class::Read,
    }
}

/// Splits a `search_path` value (`"$user", public, "My Schema"`) into schema names as the server reads it:
/// unquoted names fold to lower case, quoted ones keep their case and `""` escapes. `None` when malformed.
pub fn parse_search_path(value: &str) -> Option<Vec<String>> {
    split_identifiers(value, ',')
}

/// Splits `value` into identifiers separated by `separator`, as the server's `SplitIdentifierString` does (for
/// `search_path` with `,`, for a relation name given as text with `.`): whitespace around each is skipped,
/// unquoted names fold to lower case, quoted ones keep their case and `""` escapes. An empty value is an empty
/// list; an empty element is malformed.
pub(crate) fn split_identifiers(value: &str, separator: char) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut name = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' if chars.next_if_eq(&'"').is_some() => name.push('"'),
                    '"' => break,
                    other => name.push(other),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != separator && !c.is_whitespace()) {
                name.push(c.to_ascii_lowercase());
            }
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if name.is_empty() {
            return if names.is_empty() && chars.peek().is_none() { Some(names) } else { None };
        }
        names.push(name);
        match chars.next() {
            None => return Some(names),
            Some(c) if c == separator => continue,
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_values() {
        let check = |value: &str, expected: Option<&[&str]>| {
            let expected = expected.map(|names| names.iter().map(|name| name.to_string()).collect::<Vec<_>>());
            assert_eq!(parse_search_path(value), expected, "{value}");
        };
        check("\"$user\", public", Some(&["$user", "public"]));
        check("Shop,\"My \"\"Schema\"\"\"", Some(&["shop", "My \"Schema\""]));
        check("", Some(&[]));
        check("a,,b", None);
        check("\"open", None);
        check("a b", None);
    }

    #[test]
    fn settings_that_weaken_security_are_admin() {
        assert_eq!(setting_class("work_mem", SettingValue::Literal("64MB")), Class::Read);
        assert_eq!(setting_class("session_replication_role", SettingValue::Literal("replica")), Class::Admin);
        assert_eq!(setting_class("log_statement", SettingValue::Literal("none")), Class::Admin);
        assert_eq!(setting_class("standard_conforming_strings", SettingValue::Literal("off")), Class::Admin);
        assert_eq!(setting_class("standard_conforming_strings", SettingValue::Literal("on")), Class::Read);
        assert_eq!(setting_class("client_encoding", SettingValue::Literal("SJIS")), Class::Admin);
        assert_eq!(setting_class("default_transaction_read_only", SettingValue::Literal("off")), Class::Write);
        assert_eq!(setting_class("default_transaction_read_only", SettingValue::Default), Class::Write);
        assert_eq!(setting_class("transaction_read_only", SettingValue::Literal("on")), Class::Read);
        assert_eq!(setting_class("role", SettingValue::Literal("admin")), Class::Dcl);
    }
}
