//! One query string → its statements' classes, kinds and accesses.
//!
//! The parse tree comes from libpg_query. Each statement is classed by its node type; the tables it touches
//! are then found by walking its whole tree generically (every `RangeVar` anywhere, so no subquery, lateral
//! function or rule action can hide one), with common-table-expression names scoped as the server scopes
//! them, and each table's role decided by where it sits: the target of INSERT/UPDATE/DELETE/MERGE is written,
//! tables a FOR UPDATE/SHARE clause locks are written (resolved as the server resolves them, see [`Lock`]), tables
//! inside any query are read, the source of `CREATE TABLE … (LIKE t)` is read, and a table named by a utility
//! statement (TRUNCATE t, LOCK t, GRANT … ON t) takes that statement's class.

use std::collections::BTreeSet;

use pg_query::protobuf::{AlterTableType, DiscardMode, ObjectType, TransactionStmtKind, VariableSetKind};
use pg_query::ParserOptions;
use serde_json::{Map, Value};

use crate::functions::{function_effect, FunctionEffect};
use crate::settings::{setting_class, SettingValue};
use crate::{Access, Analysis, Class, Effect, ParseOptions, SqlError, Statement, TableName, Target};

/// Analyses every statement of `text`, without caching. See [`crate::Analyzer`] for the cached path.
pub fn analyze(text: &str, options: ParseOptions) -> Result<Analysis, SqlError> {
    if text.contains('\0') {
        return Err(SqlError::Nul);
    }
    let parser_options = if options.backslash_escapes {
        ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS
    } else {
        ParserOptions::DEFAULT
    };
    // The crate's result builder indexes into trees it assumes well formed; a panic there must refuse the
    // statement, not end the session's thread.
    let parsed = std::panic::catch_unwind(|| pg_query::parse(text, parser_options))
        .map_err(|_| SqlError::Internal("the parser failed".into()))?;
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(pg_query::Error::Parse(message)) => return Err(SqlError::Syntax(message)),
        Err(pg_query::Error::Decode(_)) => return Err(SqlError::TooDeep),
        Err(other) => return Err(SqlError::Internal(other.to_string())),
    };
    let mut depends_on_literals = false;
    let mut statements = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|node| node.node.as_ref()) else {
            continue;
        };
        let value = serde_json::to_value(node).map_err(|error| SqlError::Internal(error.to_string()))?;
        statements.push(classify(&value, &mut depends_on_literals));
    }
    Ok(Analysis { statements, depends_on_literals })
}

/// The node type and body of a tagged node (`{"SelectStmt": {…}}`, or wrapped as `{"node": {…}}`).
fn tagged(value: &Value) -> Option<(&str, &Map<String, Value>)> {
    let object = value.as_object()?;
    if let Some(inner) = object.get("node") {
        if object.len() == 1 {
            return tagged(inner);
        }
    }
    if object.len() != 1 {
        return None;
    }
    let (tag, body) = object.iter().next()?;
    Some((tag.as_str(), body.as_object()?))
}

fn field<'a>(body: &'a Map<String, Value>, name: &str) -> &'a Value {
    body.get(name).unwrap_or(&Value::Null)
}

fn string_field<'a>(body: &'a Map<String, Value>, name: &str) -> &'a str {
    field(body, name).as_str().unwrap_or("")
}

fn int_field(body: &Map<String, Value>, name: &str) -> i64 {
    field(body, name).as_i64().unwrap_or(0)
}

fn bool_field(body: &Map<String, Value>, name: &str) -> bool {
    field(body, name).as_bool().unwrap_or(false)
}

fn non_empty(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(items) => !items.is_empty(),
        _ => true,
    }
}

/// A constant's text: string, number or boolean, also through a type cast (`'s'::regclass`).
fn literal(value: &Value) -> Option<String> {
    let (tag, body) = tagged(value)?;
    match tag {
        "A_Const" | "AConst" => {
            let (kind, inner) = tagged(field(body, "val"))?;
            match kind {
                "Sval" => Some(string_field(inner, "sval").to_string()),
                "Ival" => Some(int_field(inner, "ival").to_string()),
                "Fval" => Some(string_field(inner, "fval").to_string()),
                "Boolval" => Some(if bool_field(inner, "boolval") { "true" } else { "false" }.to_string()),
                _ => None,
            }
        }
        "TypeCast" => literal(field(body, "arg")),
        "String" => Some(string_field(body, "sval").to_string()),
        "Integer" => Some(int_field(body, "ival").to_string()),
        "Float" => Some(string_field(body, "fval").to_string()),
        "Boolean" => Some(if bool_field(body, "boolval") { "true" } else { "false" }.to_string()),
        _ => None,
    }
}

/// The names in a list of String nodes (`funcname`, a DROP object's qualified name).
fn names(value: &Value) -> Vec<String> {
    let items = match tagged(value) {
        Some(("List", body)) => field(body, "items"),
        _ => value,
    };
    items
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| match tagged(item) {
                    Some(("String", body)) => Some(string_field(body, "sval").to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn table_from_names(mut names: Vec<String>) -> Option<TableName> {
    let name = names.pop()?;
    let schema = names.pop();
    Some(TableName { schema, name })
}

/// Splits a relation name given as a string (`nextval('shop."Order_Seq"')`) as `regclass` input does.
fn table_from_text(text: &str) -> Option<TableName> {
    // Digits are an OID, which warden cannot map to a name.
    if text.trim().bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let parts = crate::settings::split_identifiers(text, '.')?;
    if parts.len() > 3 {
        return None;
    }
    table_from_names(parts)
}

/// Where in the tree a walk is.
#[derive(Clone, Copy)]
struct Place {
    /// Inside a query (SELECT/INSERT/UPDATE/DELETE/MERGE): tables are read unless they are its target.
    in_query: bool,
    /// A FOR UPDATE/SHARE clause locks what is met here: a table reference is locked (which needs write, as the
    /// server requires UPDATE privilege for it), a query has every table of its FROM list locked.
    locking: bool,
}

/// Which FROM items of a query its FOR UPDATE/SHARE clauses lock, as the server's `transformLockingClause`
/// decides: only the query's own FROM list (tables, also inside joins, and subqueries in FROM with every table of
/// their own FROM lists), never a sublink (WHERE, select list, JOIN … ON), a function or a CTE reference.
enum Lock {
    None,
    /// `FOR UPDATE` without `OF`, or pushed down into a locked subquery.
    All,
    /// `FOR UPDATE OF a, b`: the FROM items whose alias (or, without one, the table's bare name) is listed.
    Named(Vec<String>),
}

impl Lock {
    /// The locking clauses of a SELECT.
    fn of_select(body: &Map<String, Value>) -> Lock {
        let clauses: &[Value] = field(body, "locking_clause").as_array().map(Vec::as_slice).unwrap_or_default();
        if clauses.is_empty() {
            return Lock::None;
        }
        let mut named = Vec::new();
        for clause in clauses {
            let Some(("LockingClause", clause)) = tagged(clause) else {
                return Lock::All;
            };
            let relations: &[Value] = field(clause, "locked_rels").as_array().map(Vec::as_slice).unwrap_or_default();
            if relations.is_empty() {
                return Lock::All;
            }
            for relation in relations {
                // The server refuses a qualified name here; only the bare name matters.
                match tagged(relation) {
                    Some(("RangeVar", relation)) => named.push(string_field(relation, "relname").to_string()),
                    // A shape warden does not know: lock everything rather than miss a table.
                    _ => return Lock::All,
                }
            }
        }
        Lock::Named(named)
    }

    /// `FOR UPDATE OF` a name warden does not find among the FROM entries it resolves (the server would refuse
    /// the statement, or warden misread it) locks everything: a lock is never missed.
    fn resolved(self, from_clause: &Value) -> Lock {
        let Lock::Named(named) = &self else {
            return self;
        };
        let mut entries = Vec::new();
        from_entry_names(from_clause, &mut entries);
        if named.iter().all(|name| entries.iter().any(|entry| entry == name)) {
            self
        } else {
            Lock::All
        }
    }

    fn covers(&self, name: &str) -> bool {
        match self {
            Lock::None => false,
            Lock::All => true,
            Lock::Named(names) => names.iter().any(|named| named == name),
        }
    }

    fn any(&self) -> bool {
        !matches!(self, Lock::None)
    }
}

struct Walk<'a> {
    /// The class a table named by the statement itself takes (TRUNCATE t → ddl).
    utility_class: Class,
    /// Common-table-expression names visible at this point of the walk, innermost last.
    scopes: Vec<String>,
    accesses: BTreeSet<Access>,
    /// Every data-modifying statement met (kind, has WHERE), the statement's own included.
    modifying: Vec<(&'static str, Option<bool>)>,
    effect: Option<Effect>,
    notes: Vec<String>,
    depends_on_literals: &'a mut bool,
}

impl Walk<'_> {
    fn add(&mut self, class: Class, target: Target) {
        self.accesses.insert(Access { class, target });
    }

    fn walk(&mut self, value: &Value, place: Place) {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.walk(item, place);
                }
            }
            Value::Object(object) => {
                if is_range_var(object) {
                    self.range_var(object, place, None);
                    return;
                }
                if let Some((tag, body)) = tagged(value) {
                    if matches!(tag, "SelectStmt" | "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt") {
                        self.query(tag, body, place);
                        return;
                    }
                    if tag == "TableLikeClause" {
                        // CREATE TABLE n (LIKE t): t's definition is copied, which the server checks as SELECT on t;
                        // t itself is not changed.
                        if let Some(relation) = field(body, "relation").as_object().filter(|body| is_range_var(body)) {
                            self.range_var(relation, place, Some(Class::Read));
                            return;
                        }
                    }
                    if tag == "ExecuteStmt" {
                        // EXECUTE inside another statement (CREATE TABLE AS EXECUTE): warden does not follow it.
                        self.notes.push("runs a prepared statement warden does not follow".into());
                        self.add(Class::Unclassified, Target::Connection);
                    }
                }
                if is_func_call(object) {
                    self.func_call(object);
                }
                for child in object.values() {
                    self.walk(child, place);
                }
            }
            _ => {}
        }
    }

    /// A table reference; `role` overrides the class its place would give it.
    fn range_var(&mut self, body: &Map<String, Value>, place: Place, role: Option<Class>) {
        let schema = string_field(body, "schemaname");
        let name = string_field(body, "relname");
        if name.is_empty() {
            return;
        }
        if schema.is_empty() && role.is_none() && self.scopes.iter().any(|cte| cte == name) {
            return;
        }
        let table = TableName { schema: (!schema.is_empty()).then(|| schema.to_string()), name: name.to_string() };
        let class = match role {
            Some(role) => role,
            None if place.locking => {
                self.add(Class::Read, Target::Table(table.clone()));
                Class::Write
            }
            None if place.in_query => Class::Read,
            None => self.utility_class,
        };
        self.add(class, Target::Table(table));
    }

    fn query(&mut self, tag: &str, body: &Map<String, Value>, place: Place) {
        // A lock pushed down from an outer query (this is a locked subquery in its FROM) locks every table of this
        // query's FROM list; otherwise only this query's own clauses lock, and only in its FROM list.
        let lock = if place.locking {
            Lock::All
        } else if tag == "SelectStmt" {
            Lock::of_select(body).resolved(field(body, "from_clause"))
        } else {
            Lock::None
        };
        let place = Place { in_query: true, locking: false };
        let scope_depth = self.scopes.len();
        if let Some(with) = field(body, "with_clause").as_object() {
            let ctes: Vec<&Map<String, Value>> = field(with, "ctes")
                .as_array()
                .map(|ctes| ctes.iter().filter_map(|cte| tagged(cte).map(|(_, body)| body)).collect())
                .unwrap_or_default();
            let cte_names: Vec<String> = ctes.iter().map(|cte| string_field(cte, "ctename").to_string()).collect();
            let recursive = bool_field(with, "recursive");
            for (index, cte) in ctes.iter().enumerate() {
                // A plain WITH sees only the CTEs before it; WITH RECURSIVE sees them all, itself included.
                let visible = if recursive { &cte_names[..] } else { &cte_names[..index] };
                self.scopes.extend(visible.iter().cloned());
                self.walk(field(cte, "ctequery"), place);
                self.scopes.truncate(scope_depth);
            }
            self.scopes.extend(cte_names);
        }
        let modifying = match tag {
            "InsertStmt" => Some("insert"),
            "UpdateStmt" => Some("update"),
            "DeleteStmt" => Some("delete"),
            "MergeStmt" => Some("merge"),
            _ => None,
        };
        if let Some(kind) = modifying {
            let has_where = matches!(kind, "update" | "delete").then(|| non_empty(field(body, "where_clause")));
            self.modifying.push((kind, has_where));
            if let Some(relation) = field(body, "relation").as_object() {
                self.range_var(relation, place, Some(Class::Write));
                // Filtering or returning rows reads them, as the server's own privilege checks say (MERGE's
                // join condition always reads its target).
                let returning = field(body, "returning_clause")
                    .as_object()
                    .is_some_and(|returning| non_empty(field(returning, "exprs")));
                let conflict_filter = field(body, "on_conflict_clause")
                    .as_object()
                    .is_some_and(|conflict| non_empty(field(conflict, "where_clause")));
                if has_where == Some(true) || returning || kind == "merge" || conflict_filter {
                    self.range_var(relation, place, Some(Class::Read));
                }
            }
        }
        for (key, child) in body {
            match key.as_str() {
                // Walked above: the CTEs in their scopes, a data-modifying statement's target as written.
                "with_clause" => {}
                "relation" if modifying.is_some() => {}
                // Resolved into `lock` above: FOR UPDATE OF names FROM-list entries (aliases), not tables.
                "locking_clause" => {}
                "from_clause" => self.walk_from_entry(child, &lock, place),
                // The server refuses FOR UPDATE on a set operation; should one get here, both sides are locked.
                "larg" | "rarg" => {
                    if let Some(select) = child.as_object() {
                        self.query("SelectStmt", select, Place { locking: lock.any(), ..place });
                    }
                }
                "into_clause" => {
                    if let Some(into) = child.as_object() {
                        if let Some(relation) = field(into, "rel").as_object() {
                            self.range_var(relation, place, Some(Class::Ddl));
                        }
                    }
                }
                _ => self.walk(child, place),
            }
        }
        self.scopes.truncate(scope_depth);
    }

    /// A FROM-list entry of a query whose locking clauses are `lock`. Only what the server itself locks is
    /// marked locked; an entry of a shape not known here is locked whole when anything is, so a lock is never missed.
    fn walk_from_entry(&mut self, value: &Value, lock: &Lock, place: Place) {
        if let Value::Array(items) = value {
            for item in items {
                self.walk_from_entry(item, lock, place);
            }
            return;
        }
        let Some((tag, body)) = tagged(value) else {
            self.walk(value, Place { locking: lock.any(), ..place });
            return;
        };
        match tag {
            "RangeVar" => {
                let name = alias(body).unwrap_or_else(|| string_field(body, "relname"));
                self.range_var(body, Place { locking: lock.covers(name), ..place }, None);
            }
            // TABLESAMPLE: the sampled table is an ordinary FROM entry; its arguments are expressions.
            "RangeTableSample" => {
                for (key, child) in body {
                    if key == "relation" {
                        self.walk_from_entry(child, lock, place);
                    } else {
                        self.walk(child, place);
                    }
                }
            }
            "JoinExpr" => {
                // The tables of a join are entries of this query, locked by their own names. Naming the join
                // itself is refused by the server; should it get here, everything in the join is locked.
                let all = Lock::All;
                let named_join = [field(body, "alias"), field(body, "join_using_alias")]
                    .into_iter()
                    .filter_map(|alias| alias.as_object())
                    .any(|alias| lock.covers(string_field(alias, "aliasname")));
                let inner = if named_join { &all } else { lock };
                for (key, child) in body {
                    match key.as_str() {
                        "larg" | "rarg" => self.walk_from_entry(child, inner, place),
                        // ON conditions hold sublinks, which are queries of their own: never locked.
                        _ => self.walk(child, place),
                    }
                }
            }
            // A locked subquery has every table of its own FROM list locked (not its sublinks). Since PostgreSQL
            // 16 a subquery needs no alias; the server then names it `unnamed_subquery`.
            "RangeSubselect" => {
                let locked = lock.covers(alias(body).unwrap_or("unnamed_subquery"));
                for (key, child) in body {
                    let locking = key == "subquery" && locked;
                    self.walk(child, Place { locking, ..place });
                }
            }
            // Functions, XMLTABLE and JSON_TABLE in FROM are never locked; a table can only be in their
            // arguments' sublinks, which are queries of their own.
            "RangeFunction" | "RangeTableFunc" | "JsonTable" => self.walk(value, place),
            _ => self.walk(value, Place { locking: lock.any(), ..place }),
        }
    }

    fn func_call(&mut self, body: &Map<String, Value>) {
        let mut name = names(field(body, "funcname"));
        let Some(function) = name.pop() else {
            return;
        };
        let schema = name.pop();
        let args: &[Value] = field(body, "args").as_array().map(Vec::as_slice).unwrap_or_default();
        match function_effect(schema.as_deref(), &function) {
            FunctionEffect::Class(Class::Read) => {}
            FunctionEffect::Class(class) => self.add(class, Target::Connection),
            FunctionEffect::WritesSequence => {
                *self.depends_on_literals = true;
                match args.first().and_then(literal).as_deref().and_then(table_from_text) {
                    Some(sequence) => self.add(Class::Write, Target::Table(sequence)),
                    None => self.add(Class::Write, Target::Connection),
                }
            }
            FunctionEffect::SetConfig => {
                *self.depends_on_literals = true;
                let setting = args.first().and_then(literal);
                let value = args.get(1).and_then(literal);
                let local = args.get(2).and_then(literal);
                let Some(setting) = setting else {
                    self.notes.push("set_config with a computed setting name".into());
                    self.add(Class::Admin, Target::Connection);
                    return;
                };
                if setting.eq_ignore_ascii_case("search_path") {
                    // A function call may run conditionally, later (a view, a prepared statement) or fail after
                    // warden saw it: only a plain SET is followed.
                    let _ = local;
                    self.notes.push("search_path changed in a way warden cannot follow (use SET search_path)".into());
                    self.add(Class::Admin, Target::Connection);
                    return;
                }
                let value = match &value {
                    Some(value) => SettingValue::Literal(value),
                    None => SettingValue::Unknown,
                };
                let class = setting_class(&setting, value);
                if class != Class::Read {
                    self.add(class, Target::Connection);
                }
            }
        }
    }
}

/// The names `FOR UPDATE OF` can match among the FROM entries [`Walk::walk_from_entry`] resolves, joins included.
fn from_entry_names<'a>(value: &'a Value, entries: &mut Vec<&'a str>) {
    if let Value::Array(items) = value {
        for item in items {
            from_entry_names(item, entries);
        }
        return;
    }
    match tagged(value) {
        Some(("RangeVar", body)) => entries.push(alias(body).unwrap_or_else(|| string_field(body, "relname"))),
        Some(("RangeTableSample", body)) => from_entry_names(field(body, "relation"), entries),
        Some(("RangeSubselect", body)) => entries.push(alias(body).unwrap_or("unnamed_subquery")),
        Some(("JoinExpr", body)) => {
            for alias in [field(body, "alias"), field(body, "join_using_alias")] {
                if let Some(alias) = alias.as_object() {
                    entries.push(string_field(alias, "aliasname"));
                }
            }
            from_entry_names(field(body, "larg"), entries);
            from_entry_names(field(body, "rarg"), entries);
        }
        _ => {}
    }
}

/// The alias a FROM entry is given (`orders o` → `o`), if any.
fn alias(body: &Map<String, Value>) -> Option<&str> {
    field(body, "alias").as_object().map(|alias| string_field(alias, "aliasname")).filter(|name| !name.is_empty())
}

fn is_range_var(object: &Map<String, Value>) -> bool {
    object.contains_key("relname") && object.contains_key("relpersistence") && object.contains_key("inh")
}

fn is_func_call(object: &Map<String, Value>) -> bool {
    object.contains_key("funcname") && object.contains_key("agg_star") && object.contains_key("func_variadic")
}

/// Classes one statement (a tagged top-level node).
fn classify(value: &Value, depends_on_literals: &mut bool) -> Statement {
    let Some((tag, body)) = tagged(value) else {
        return unclassified("<unknown>", "the parse tree has an unexpected shape".into());
    };
    let (base, kind): (Class, &str) = match tag {
        "SelectStmt" => (Class::Read, "select"),
        "InsertStmt" => (Class::Write, "insert"),
        "UpdateStmt" => (Class::Write, "update"),
        "DeleteStmt" => (Class::Write, "delete"),
        "MergeStmt" => (Class::Write, "merge"),
        "ExplainStmt" => return explain(body, depends_on_literals),
        "PrepareStmt" => {
            let mut inner = classify(field(body, "query"), depends_on_literals);
            if inner.effect.is_some() {
                // What it would change happens at EXECUTE, which warden cannot tie to this PREPARE reliably.
                inner.class = Class::Admin;
                inner.accesses.push(Access { class: Class::Admin, target: Target::Connection });
                inner.note = Some("prepared statement changes session state".into());
            }
            inner.effect = Some(Effect::Prepare { name: string_field(body, "name").to_string() });
            return inner;
        }
        "DeclareCursorStmt" => return classify(field(body, "query"), depends_on_literals),
        "ExecuteStmt" => {
            // Its class is the prepared statement's (the session substitutes it); its parameters can call
            // functions of their own, judged here.
            let mut walk = walk_with(Class::Unclassified, depends_on_literals);
            walk.walk(field(body, "params"), Place { in_query: true, locking: false });
            let mut statement = finish(Class::Unclassified, "execute", walk);
            statement.note = Some("takes the class of the prepared statement".into());
            statement.effect = Some(Effect::Execute { name: string_field(body, "name").to_string() });
            return statement;
        }
        "DeallocateStmt" => {
            let name = (!bool_field(body, "isall")).then(|| string_field(body, "name").to_string());
            return simple(Class::Read, "deallocate", Some(Effect::Deallocate { name }));
        }
        "VariableSetStmt" => return set(body, depends_on_literals),
        "VariableShowStmt" => (Class::Read, "show"),
        "TransactionStmt" => transaction(body),
        "DiscardStmt" => {
            if int_field(body, "target") == DiscardMode::DiscardAll as i64 {
                return simple(Class::Admin, "discard", Some(Effect::DiscardAll));
            }
            (Class::Read, "discard")
        }
        "CopyStmt" => return copy(body, depends_on_literals),
        "DropStmt" => return drop(body, depends_on_literals),
        "CommentStmt" => return on_object(body, Class::Ddl, "comment", depends_on_literals),
        // A security label decides what a label-based provider (sepgsql) lets roles do with the object.
        "SecLabelStmt" => return on_object(body, Class::Dcl, "security label", depends_on_literals),
        "AlterTableStmt" => return alter_table(body, depends_on_literals),
        "TruncateStmt" => (Class::Ddl, "truncate"),
        "RefreshMatViewStmt" => (Class::Ddl, "refresh"),
        "ListenStmt" => (Class::Read, "listen"),
        "UnlistenStmt" => (Class::Read, "unlisten"),
        "NotifyStmt" => (Class::Write, "notify"),
        "FetchStmt" => (Class::Read, if bool_field(body, "ismove") { "move" } else { "fetch" }),
        "ClosePortalStmt" => (Class::Read, "close"),
        "ConstraintsSetStmt" => return simple(Class::Read, "set", None),
        "CreateSchemaStmt" if non_empty(field(body, "schemaElts")) || non_empty(field(body, "schema_elts")) => {
            return unclassified(
                "create",
                "CREATE SCHEMA with schema elements; create the schema, then its objects, as separate statements"
                    .into(),
            );
        }
        "DoStmt" => (Class::Procedural, "do"),
        "CallStmt" => (Class::Procedural, "call"),
        "CreateFunctionStmt" => (Class::Procedural, "create"),
        "AlterFunctionStmt" => (Class::Procedural, "alter"),
        "LockStmt" => (Class::Admin, "lock"),
        "VacuumStmt" => (Class::Admin, if bool_field(body, "is_vacuumcmd") { "vacuum" } else { "analyze" }),
        "ClusterStmt" => (Class::Admin, "cluster"),
        "ReindexStmt" => (Class::Admin, "reindex"),
        "CheckPointStmt" => (Class::Admin, "checkpoint"),
        "LoadStmt" => (Class::Admin, "load"),
        "AlterSystemStmt" => (Class::Admin, "alter"),
        "CreatedbStmt"
        | "CreateTableSpaceStmt"
        | "CreateExtensionStmt"
        | "CreateFdwStmt"
        | "CreateForeignServerStmt"
        | "CreateUserMappingStmt"
        | "CreateSubscriptionStmt"
        | "CreatePublicationStmt"
        | "CreatePlangStmt"
        // An event trigger runs its function on every DDL command (or login) in the database; dropping one is
        // admin too.
        | "CreateEventTrigStmt" => (Class::Admin, "create"),
        "DropdbStmt" | "DropTableSpaceStmt" | "DropUserMappingStmt" | "DropSubscriptionStmt" => (Class::Admin, "drop"),
        "AlterDatabaseStmt"
        | "AlterDatabaseSetStmt"
        | "AlterDatabaseRefreshCollStmt"
        | "AlterTableSpaceOptionsStmt"
        | "AlterTableMoveAllStmt"
        | "AlterExtensionStmt"
        | "AlterExtensionContentsStmt"
        | "AlterFdwStmt"
        | "AlterForeignServerStmt"
        | "AlterUserMappingStmt"
        | "AlterSubscriptionStmt"
        | "AlterPublicationStmt"
        | "AlterEventTrigStmt" => (Class::Admin, "alter"),
        "GrantStmt" | "GrantRoleStmt" => (Class::Dcl, if bool_field(body, "is_grant") { "grant" } else { "revoke" }),
        "CreateRoleStmt" | "CreatePolicyStmt" => (Class::Dcl, "create"),
        "AlterRoleStmt" | "AlterRoleSetStmt" | "AlterDefaultPrivilegesStmt" | "AlterPolicyStmt" | "AlterOwnerStmt" => {
            (Class::Dcl, "alter")
        }
        "DropRoleStmt" => (Class::Dcl, "drop"),
        "DropOwnedStmt" => {
            // DROP OWNED revokes the role's privileges and drops every object it owns in the database, tables
            // included: both halves must be authorized.
            let mut statement = simple(Class::Dcl, "drop", None);
            statement.accesses.insert(0, Access { class: Class::Ddl, target: Target::Connection });
            return statement;
        }
        "ReassignOwnedStmt" => (Class::Dcl, "reassign"),
        "CreateTableAsStmt" | "ViewStmt" | "IndexStmt" | "RuleStmt" | "CreateTrigStmt" | "CompositeTypeStmt"
        | "DefineStmt" => (Class::Ddl, "create"),
        "RenameStmt" | "AlterObjectSchemaStmt" => (Class::Ddl, "alter"),
        "ImportForeignSchemaStmt" => (Class::Ddl, "import"),
        tag if tag.starts_with("Create") => (Class::Ddl, "create"),
        tag if tag.starts_with("Alter") => (Class::Ddl, "alter"),
        tag if tag.starts_with("Drop") => (Class::Ddl, "drop"),
        tag => return unclassified(&statement_kind(tag), format!("warden does not classify {tag} statements")),
    };
    let mut walk = walk_with(base, depends_on_literals);
    walk.walk(value, Place { in_query: false, locking: false });
    finish(base, kind, walk)
}

fn finish(base: Class, kind: &str, walk: Walk<'_>) -> Statement {
    let mut accesses = walk.accesses;
    let represented = accesses.iter().any(|access| access.class == base);
    if accesses.is_empty() || (base != Class::Read && !represented) {
        accesses.insert(Access { class: base, target: Target::Connection });
    }
    let class = accesses.iter().map(|access| access.class).max().unwrap_or(base);
    // A query that modifies data in several places (CTEs) takes the most destructive kind among them, and has a
    // WHERE only if every UPDATE and DELETE in it has one: a filtered CTE must not vouch for an unfiltered DELETE.
    let (kind, has_where) = if walk.modifying.is_empty()
        || !matches!(kind, "select" | "insert" | "update" | "delete" | "merge")
    {
        (kind.to_string(), None)
    } else {
        let rank = |kind: &str| ["insert", "update", "merge", "delete"].iter().position(|k| *k == kind).unwrap_or(0);
        let worst = walk.modifying.iter().map(|(kind, _)| *kind).max_by_key(|kind| rank(kind)).unwrap_or(kind);
        let filtered: Vec<bool> = walk.modifying.iter().filter_map(|(_, has_where)| *has_where).collect();
        let has_where = (!filtered.is_empty()).then(|| filtered.iter().all(|has_where| *has_where));
        (worst.to_string(), has_where)
    };
    let note = (!walk.notes.is_empty()).then(|| walk.notes.join("; "));
    Statement { class, kind, has_where, accesses: accesses.into_iter().collect(), effect: walk.effect, note }
}

fn simple(class: Class, kind: &str, effect: Option<Effect>) -> Statement {
    Statement {
        class,
        kind: kind.to_string(),
        has_where: None,
        accesses: vec![Access { class, target: Target::Connection }],
        effect,
        note: None,
    }
}

fn unclassified(kind: &str, note: String) -> Statement {
    let mut statement = simple(Class::Unclassified, kind, None);
    statement.note = Some(note);
    statement
}

/// `CreateForeignTableStmt` → `create foreign table`, for statements warden does not class.
fn statement_kind(tag: &str) -> String {
    let tag = tag.strip_suffix("Stmt").unwrap_or(tag);
    let mut kind = String::new();
    for (index, c) in tag.chars().enumerate() {
        if c.is_ascii_uppercase() && index > 0 {
            kind.push(' ');
        }
        kind.push(c.to_ascii_lowercase());
    }
    kind
}

fn walk_with(base: Class, depends_on_literals: &mut bool) -> Walk<'_> {
    Walk {
        utility_class: base,
        scopes: Vec::new(),
        accesses: BTreeSet::new(),
        modifying: Vec::new(),
        effect: None,
        notes: Vec::new(),
        depends_on_literals,
    }
}

fn explain(body: &Map<String, Value>, depends_on_literals: &mut bool) -> Statement {
    let analyze = field(body, "options").as_array().is_some_and(|options| {
        options.iter().any(|option| match tagged(option) {
            Some(("DefElem", element)) if string_field(element, "defname") == "analyze" => {
                // EXPLAIN (ANALYZE off) does not run the statement.
                literal(field(element, "arg"))
                    .is_none_or(|value| !matches!(value.to_ascii_lowercase().as_str(), "false" | "off" | "0" | "no"))
            }
            _ => false,
        })
    });
    let inner = classify(field(body, "query"), depends_on_literals);
    if analyze {
        return inner;
    }
    // Planning runs nothing; it still reveals what the plan touches, so each table must be readable.
    let mut accesses: BTreeSet<Access> = inner
        .accesses
        .iter()
        .filter(|access| matches!(access.target, Target::Table(_)))
        .map(|access| Access { class: Class::Read, target: access.target.clone() })
        .collect();
    if accesses.is_empty() {
        accesses.insert(Access { class: Class::Read, target: Target::Connection });
    }
    Statement {
        class: Class::Read,
        kind: "explain".into(),
        has_where: None,
        accesses: accesses.into_iter().collect(),
        effect: None,
        note: None,
    }
}

fn set(body: &Map<String, Value>, depends_on_literals: &mut bool) -> Statement {
    *depends_on_literals = true;
    let name = string_field(body, "name").to_ascii_lowercase();
    let kind_value = int_field(body, "kind");
    let args: &[Value] = field(body, "args").as_array().map(Vec::as_slice).unwrap_or_default();
    let is_local = bool_field(body, "is_local");
    let is = |kind: VariableSetKind| kind_value == kind as i64;
    let statement_kind =
        if is(VariableSetKind::VarReset) || is(VariableSetKind::VarResetAll) { "reset" } else { "set" };
    if is(VariableSetKind::VarResetAll) {
        return simple(Class::Admin, "reset", Some(Effect::ResetSearchPath));
    }
    if is(VariableSetKind::VarSetMulti) {
        // SET TRANSACTION / SET SESSION CHARACTERISTICS AS TRANSACTION …: only READ WRITE matters.
        return simple(if sets_read_write(args) { Class::Write } else { Class::Read }, "set", None);
    }
    let value = if is(VariableSetKind::VarSetValue) {
        match args.first().and_then(literal) {
            Some(value) => Some(value),
            None => return simple(setting_class(&name, SettingValue::Unknown), statement_kind, None),
        }
    } else {
        None
    };
    if name == "search_path" {
        if is_local || is(VariableSetKind::VarSetCurrent) {
            let mut statement = simple(Class::Admin, statement_kind, None);
            statement.note = Some("search_path changed in a way warden cannot follow".into());
            return statement;
        }
        let effect = match value {
            Some(_) => Effect::SearchPath(args.iter().filter_map(literal).collect()),
            None => Effect::ResetSearchPath,
        };
        return simple(Class::Read, statement_kind, Some(effect));
    }
    let setting = match &value {
        Some(value) => SettingValue::Literal(value),
        None => SettingValue::Default,
    };
    simple(setting_class(&name, setting), statement_kind, None)
}

/// Whether transaction options (`BEGIN READ WRITE`, `SET TRANSACTION READ WRITE`) leave read-only mode.
fn sets_read_write(options: &[Value]) -> bool {
    options.iter().any(|option| match tagged(option) {
        Some(("DefElem", element)) if string_field(element, "defname") == "transaction_read_only" => {
            literal(field(element, "arg")).is_some_and(|value| matches!(value.as_str(), "0" | "false"))
        }
        _ => false,
    })
}

fn transaction(body: &Map<String, Value>) -> (Class, &'static str) {
    let kind = int_field(body, "kind");
    let is = |wanted: TransactionStmtKind| kind == wanted as i64;
    if is(TransactionStmtKind::TransStmtPrepare) {
        return (Class::Admin, "prepare transaction");
    }
    if is(TransactionStmtKind::TransStmtCommitPrepared) {
        return (Class::Admin, "commit prepared");
    }
    if is(TransactionStmtKind::TransStmtRollbackPrepared) {
        return (Class::Admin, "rollback prepared");
    }
    let read_write = sets_read_write(field(body, "options").as_array().map(Vec::as_slice).unwrap_or_default());
    let name = if is(TransactionStmtKind::TransStmtBegin) || is(TransactionStmtKind::TransStmtStart) {
        "begin"
    } else if is(TransactionStmtKind::TransStmtCommit) {
        "commit"
    } else if is(TransactionStmtKind::TransStmtRollback) || is(TransactionStmtKind::TransStmtRollbackTo) {
        "rollback"
    } else if is(TransactionStmtKind::TransStmtSavepoint) {
        "savepoint"
    } else {
        "release"
    };
    (if read_write { Class::Write } else { Class::Read }, name)
}

fn copy(body: &Map<String, Value>, depends_on_literals: &mut bool) -> Statement {
    let is_from = bool_field(body, "is_from");
    let server_side = bool_field(body, "is_program") || !string_field(body, "filename").is_empty();
    let base = if server_side {
        Class::Admin
    } else if is_from {
        Class::Write
    } else {
        Class::Read
    };
    let mut walk = walk_with(base, depends_on_literals);
    if let Some(relation) = field(body, "relation").as_object() {
        walk.range_var(
            relation,
            Place { in_query: false, locking: false },
            Some(if is_from { Class::Write } else { Class::Read }),
        );
    }
    walk.walk(field(body, "query"), Place { in_query: false, locking: false });
    walk.walk(field(body, "where_clause"), Place { in_query: true, locking: false });
    finish(base, "copy", walk)
}

const TABLE_LIKE: [ObjectType; 5] = [
    ObjectType::ObjectTable,
    ObjectType::ObjectView,
    ObjectType::ObjectMatview,
    ObjectType::ObjectForeignTable,
    ObjectType::ObjectSequence,
];

fn drop(body: &Map<String, Value>, depends_on_literals: &mut bool) -> Statement {
    let object_type = int_field(body, "remove_type");
    let is = |kinds: &[ObjectType]| kinds.iter().any(|kind| *kind as i64 == object_type);
    // Dropping what CREATE makes admin (extensions, servers, languages…) is admin too; dropping a row-security
    // policy changes who sees what.
    let class = if is(&[
        ObjectType::ObjectExtension,
        ObjectType::ObjectForeignServer,
        ObjectType::ObjectFdw,
        ObjectType::ObjectLanguage,
        ObjectType::ObjectPublication,
        ObjectType::ObjectSubscription,
        ObjectType::ObjectTablespace,
        ObjectType::ObjectDatabase,
        ObjectType::ObjectEventTrigger,
    ]) {
        Class::Admin
    } else if is(&[ObjectType::ObjectPolicy]) {
        Class::Dcl
    } else {
        Class::Ddl
    };
    let mut walk = walk_with(class, depends_on_literals);
    if TABLE_LIKE.iter().any(|kind| *kind as i64 == object_type) {
        for object in field(body, "objects").as_array().map(Vec::as_slice).unwrap_or_default() {
            if let Some(table) = table_from_names(names(object)) {
                walk.add(Class::Ddl, Target::Table(table));
            }
        }
    } else if [ObjectType::ObjectRule, ObjectType::ObjectTrigger, ObjectType::ObjectPolicy]
        .iter()
        .any(|kind| *kind as i64 == object_type)
    {
        // DROP TRIGGER name ON table: the table is the name list without its last element.
        for object in field(body, "objects").as_array().map(Vec::as_slice).unwrap_or_default() {
            let mut object_names = names(object);
            object_names.pop();
            if let Some(table) = table_from_names(object_names) {
                walk.add(class, Target::Table(table));
            }
        }
    }
    finish(class, "drop", walk)
}

/// COMMENT ON / SECURITY LABEL ON an object: against its table when it is one (or a column of one), else against
/// the connection.
fn on_object(body: &Map<String, Value>, class: Class, kind: &str, depends_on_literals: &mut bool) -> Statement {
    let object_type = int_field(body, "objtype");
    let mut walk = walk_with(class, depends_on_literals);
    let mut object_names = names(field(body, "object"));
    if object_type == ObjectType::ObjectColumn as i64 {
        object_names.pop();
    }
    let on_table =
        object_type == ObjectType::ObjectColumn as i64 || TABLE_LIKE.iter().any(|kind| *kind as i64 == object_type);
    if on_table {
        if let Some(table) = table_from_names(object_names) {
            walk.add(class, Target::Table(table));
        }
    }
    finish(class, kind, walk)
}

/// ALTER TABLE, and ALTER INDEX/SEQUENCE/VIEW/MATERIALIZED VIEW/FOREIGN TABLE/TYPE, which share its node. Most
/// subcommands change the definition (ddl); handing the object to another owner or switching its row-level
/// security changes who may see or do what (dcl). Each class the subcommands need is asked for the table.
fn alter_table(body: &Map<String, Value>, depends_on_literals: &mut bool) -> Statement {
    let dcl = [
        AlterTableType::AtChangeOwner,
        AlterTableType::AtEnableRowSecurity,
        AlterTableType::AtDisableRowSecurity,
        AlterTableType::AtForceRowSecurity,
        AlterTableType::AtNoForceRowSecurity,
    ];
    let mut classes = BTreeSet::new();
    for command in field(body, "cmds").as_array().map(Vec::as_slice).unwrap_or_default() {
        let class = match tagged(command) {
            Some(("AlterTableCmd", command))
                if dcl.iter().any(|subtype| *subtype as i64 == int_field(command, "subtype")) =>
            {
                Class::Dcl
            }
            _ => Class::Ddl,
        };
        classes.insert(class);
    }
    if classes.is_empty() {
        classes.insert(Class::Ddl);
    }
    // Tables named inside the subcommands (REFERENCES t, INHERIT t, ATTACH PARTITION t) change definition: ddl.
    let mut walk = walk_with(Class::Ddl, depends_on_literals);
    let place = Place { in_query: false, locking: false };
    for (key, child) in body {
        match child.as_object() {
            Some(relation) if key == "relation" && is_range_var(relation) => {
                for class in &classes {
                    walk.range_var(relation, place, Some(*class));
                }
            }
            _ => walk.walk(child, place),
        }
    }
    finish(classes.last().copied().unwrap_or(Class::Ddl), "alter", walk)
}

#[cfg(test)]
mod tests;
