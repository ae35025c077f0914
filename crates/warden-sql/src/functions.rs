//! Built-in functions whose call is more than a read: they write (sequences, large objects, notifications),
//! reach the server's files, processes or replication (admin), or run SQL handed to them as text
//! (procedural: `query_to_xml('DELETE …')` would otherwise hide a statement inside a string).

use crate::Class;

/// How calling a function is classed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FunctionEffect {
    /// Writes the sequence its first argument names.
    WritesSequence,
    /// `set_config(name, value, is_local)`: classed like the SET it performs.
    SetConfig,
    Class(Class),
}

const WRITE: &[&str] = &[
    "pg_notify",
    "lo_create",
    "lo_creat",
    "lo_unlink",
    "lo_put",
    "lo_from_bytea",
    "lo_truncate",
    "lo_truncate64",
    "lowrite",
];

const ADMIN: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_ls_logicalsnapdir",
    "pg_ls_logicalmapdir",
    "pg_ls_replslotdir",
    "pg_ls_summariesdir",
    "pg_clear_relation_stats",
    "pg_clear_attribute_stats",
    "pg_restore_relation_stats",
    "pg_restore_attribute_stats",
    "get_raw_page",
    "pg_stat_file",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "pg_logdir_ls",
    "lo_import",
    "lo_export",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_promote",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_changes",
    "pg_logical_slot_peek_binary_changes",
    "pg_logical_emit_message",
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "pg_replication_origin_advance",
    "pg_replication_origin_session_setup",
    "pg_import_system_collations",
    "pg_log_backend_memory_contexts",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_slru",
    "pg_stat_reset_replication_slot",
    "pg_stat_reset_subscription_stats",
    "pg_stat_statements_reset",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_connect_u",
    "dblink_send_query",
    "dblink_open",
];

const PROCEDURAL: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
    "crosstab",
];

/// The effect of calling `name` (qualified by `schema` when written so). Functions qualified with another
/// schema than `pg_catalog` are the database's own: warden cannot see their bodies and treats the call as a
/// read (a read-only session still stops any write they attempt).
pub(crate) fn function_effect(schema: Option<&str>, name: &str) -> FunctionEffect {
    if schema.is_some_and(|schema| schema != "pg_catalog") {
        return FunctionEffect::Class(Class::Read);
    }
    match name {
        "nextval" | "setval" => FunctionEffect::WritesSequence,
        "set_config" => FunctionEffect::SetConfig,
        name if WRITE.contains(&name) => FunctionEffect::Class(Class::Write),
        name if ADMIN.contains(&name) => FunctionEffect::Class(Class::Admin),
        name if PROCEDURAL.contains(&name) => FunctionEffect::Class(Class::Procedural),
        _ => FunctionEffect::Class(Class::Read),
    }
}
