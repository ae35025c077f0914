//! The PostgreSQL statement guard: classify (warden-sql) → authorize (warden-policy) for every query, Parse and
//! function call of a session, and the admission check (`connect`, startup parameters, read-only mode) before
//! the upstream session opens.
//!
//! Decisions are cached per session by analysis (the analyzer hands out one shared analysis per statement
//! shape), and the cache is dropped whenever an input of the decision changes: the policies, the session's
//! `search_path` or its application_name.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use warden_identity::Identity;
use warden_pg::{Admission, Admitted, Annotation, Deferral, Judgement, StatementGuard, StatementRefusal};
use warden_policy::{Action, Policies, Principal, RequestContext, Resource};
use warden_sql::{Analysis, Analyzer, Class, Effect, ParseOptions, Statement, Target};
use warden_state::Decision;

/// Decisions a session keeps before starting over.
const DECISION_CACHE: usize = 1024;

/// Client encodings whose multibyte characters can contain a quote or backslash byte: PostgreSQL refuses them
/// as server encodings for that reason, and warden cannot lex text in them safely.
const UNSAFE_ENCODINGS: [&str; 6] = ["SJIS", "BIG5", "GBK", "GB18030", "UHC", "JOHAB"];

/// The policies in force, swapped whole on reload. The generation counts reloads, so a session can tell its
/// cached decisions are current with one atomic load instead of taking the lock.
pub(crate) struct PolicyStore {
    current: RwLock<Arc<Policies>>,
    generation: AtomicU64,
}

impl PolicyStore {
    pub(crate) fn new(policies: Policies) -> Self {
        PolicyStore { current: RwLock::new(Arc::new(policies)), generation: AtomicU64::new(0) }
    }

    /// The policies and their generation, read together.
    pub(crate) fn get(&self) -> (Arc<Policies>, u64) {
        let current = self.current.read();
        (current.clone(), self.generation.load(Ordering::Acquire))
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn replace(&self, policies: Policies) {
        let mut current = self.current.write();
        *current = Arc::new(policies);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

fn action_for(class: Class) -> Action {
    match class {
        Class::Read => Action::Read,
        Class::Write => Action::Write,
        Class::Ddl => Action::Ddl,
        Class::Dcl => Action::Dcl,
        Class::Procedural => Action::Procedural,
        Class::Admin => Action::Admin,
        Class::Unclassified => Action::Unclassified,
    }
}

/// Splits a startup `options` value (`-c a=b --c=d`, backslash escapes a space) into settings.
fn startup_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next().ok_or("startup option -c without a setting")?
        } else if let Some(setting) = word.strip_prefix("--").or_else(|| word.strip_prefix("-c")) {
            setting.to_string()
        } else {
            return Err(format!("startup option \"{word}\" is not a setting (-c name=value)"));
        };
        let (name, value) =
            setting.split_once('=').ok_or_else(|| format!("startup option \"{setting}\" has no value"))?;
        settings.push((name.replace('-', "_").to_ascii_lowercase(), value.to_string()));
    }
    Ok(settings)
}

/// Startup parameters that are client preferences, not settings worth a policy decision.
fn harmless_parameter(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "application_name" | "client_encoding" | "datestyle" | "timezone" | "intervalstyle" | "extra_float_digits"
    )
}

/// The `connect` decision for `principal` on `connection`.
pub(crate) fn connect_verdict(
    policies: &Policies,
    principal: &Principal<'_>,
    connection: &str,
    context: &RequestContext<'_>,
) -> warden_policy::Verdict {
    let resource = Resource::Connection { name: connection, kind: "postgres" };
    policies.authorize(principal, Action::Connect, &resource, context)
}

/// Decides whether a session may start, and builds its guard.
pub(crate) fn admit(
    admission: &Admission<'_>,
    analyzer: &Arc<Analyzer>,
    policies: &Arc<PolicyStore>,
    (expiry_grace, approvals): (std::time::Duration, Option<Arc<crate::approval::SessionApprovals>>),
) -> Result<Admitted, String> {
    let (current, _) = policies.get();
    let identity = admission.identity;
    let principal = Principal { name: &identity.name, groups: &identity.groups };
    let connection = admission.connection;
    let application_name =
        admission.parameters.iter().find(|(name, _)| name == "application_name").map(|(_, value)| value.as_str());
    let context = RequestContext {
        client_address: Some(admission.client_address.ip()),
        application_name,
        statement_kind: None,
        has_where: None,
        token: token_context(identity),
        approved: false,
        http_path: None,
        model: None,
    };
    let resource = Resource::Connection { name: connection, kind: "postgres" };
    if let Some(scope) = &identity.token {
        if !scope.allows_connection(connection) {
            return Err(format!("connection \"{connection}\": token {} does not allow this connection", scope.id));
        }
        if !scope.allows_action("connect") {
            return Err(format!("connection \"{connection}\": token {} does not allow connect", scope.id));
        }
    }
    let verdict = connect_verdict(&current, &principal, connection, &context);
    if !verdict.allowed {
        return Err(format!("connection \"{connection}\": {}", verdict.reason(Action::Connect, &resource)));
    }

    // Startup parameters are settings applied before any statement: judge them as SET would be.
    let mut settings: Vec<(String, String)> = Vec::new();
    for (name, value) in admission.parameters {
        if name == "options" {
            settings.extend(startup_options(value).map_err(|error| format!("connection \"{connection}\": {error}"))?);
        } else if !harmless_parameter(name) {
            settings.push((name.to_ascii_lowercase(), value.clone()));
        }
    }
    let mut search_path = default_search_path();
    for (name, value) in &settings {
        if name == "search_path" {
            search_path = warden_sql::parse_search_path(value)
                .ok_or_else(|| format!("connection \"{connection}\": startup search_path \"{value}\" is malformed"))?;
            continue;
        }
        let class = warden_sql::setting_class(name, value);
        if class == Class::Read {
            continue;
        }
        let context = RequestContext { statement_kind: Some("set"), ..context };
        let action = action_for(class);
        if let Some(refusal) = token_refusal(identity, action) {
            return Err(format!(
                "connection \"{connection}\": startup setting {name}={value} needs {class}: {refusal}"
            ));
        }
        let verdict = current.authorize(&principal, action, &resource, &context);
        if !verdict.allowed {
            return Err(format!(
                "connection \"{connection}\": startup setting {name}={value} needs {class}: {}",
                verdict.reason(action, &resource)
            ));
        }
    }

    // Defence in depth: an identity that may only read gets an upstream session that cannot write either.
    let mut upstream_parameters = admission.parameters.to_vec();
    let token_read_only = identity.token.as_ref().is_some_and(|scope| {
        scope
            .actions
            .as_ref()
            .is_some_and(|actions| actions.iter().all(|action| action == "read" || action == "connect"))
    });
    let read_only = token_read_only || !current.grants_beyond_read(&principal, connection);
    if read_only {
        const READ_ONLY: &str = "-c default_transaction_read_only=on";
        match upstream_parameters.iter_mut().find(|(name, _)| name == "options") {
            Some((_, options)) => *options = format!("{options} {READ_ONLY}"),
            None => upstream_parameters.push(("options".to_string(), READ_ONLY.to_string())),
        }
    }
    let mut guard = SqlGuard::new(
        analyzer.clone(),
        policies.clone(),
        identity.clone(),
        connection,
        Some(admission.client_address.ip()),
        application_name,
    );
    guard.initial_search_path.clone_from(&search_path);
    guard.search_path = search_path;
    guard.approvals = approvals;
    // A session lives no longer than its credential (plus the configured grace).
    let ends_at = identity.expires_at.map(|expires_at| expires_at + expiry_grace);
    Ok(Admitted { guard: Box::new(guard), masking: None, upstream_parameters, ends_at })
}

/// Whether policy lets the session's identity see the connection's results unmasked (action `unmask`); a token
/// must name the action too.
pub(crate) fn may_unmask(admission: &Admission<'_>, policies: &Arc<PolicyStore>) -> bool {
    let (current, _) = policies.get();
    let application_name =
        admission.parameters.iter().find(|(name, _)| name == "application_name").map(|(_, value)| value.as_str());
    let context = RequestContext {
        client_address: Some(admission.client_address.ip()),
        application_name,
        statement_kind: None,
        has_where: None,
        token: token_context(admission.identity),
        approved: false,
        http_path: None,
        model: None,
    };
    let resource = Resource::Connection { name: admission.connection, kind: "postgres" };
    authorize(admission.identity, &current, Action::Unmask, &resource, &context).0.allowed
}

/// The statement guard a session of `identity` on `connection` gets once admitted (default `search_path`, no
/// startup settings), outside a gateway: for benchmarks and fuzzing.
pub fn session_guard(
    policies: Policies,
    analyzer: Arc<Analyzer>,
    identity: Identity,
    connection: &str,
) -> Box<dyn StatementGuard> {
    let policies = Arc::new(PolicyStore::new(policies));
    Box::new(SqlGuard::new(analyzer, policies, identity, connection, None, None))
}

/// `context.token` for a session authenticated with a warden token.
pub(crate) fn token_context(identity: &Identity) -> Option<warden_policy::TokenContext<'_>> {
    identity.token.as_ref().map(|scope| warden_policy::TokenContext {
        id: &scope.id,
        run: scope.run.as_deref(),
        node: scope.node.as_deref(),
    })
}

/// The verdict on one request and the reason a client reads. The identity's token narrows it first: what the token
/// does not allow is refused before any policy is asked.
pub(crate) fn authorize(
    identity: &Identity,
    policies: &Policies,
    action: Action,
    resource: &Resource<'_>,
    context: &RequestContext<'_>,
) -> (warden_policy::Verdict, String) {
    if let Some(refusal) = token_refusal(identity, action) {
        return (warden_policy::Verdict { allowed: false, policies: Vec::new(), errors: Vec::new() }, refusal);
    }
    let principal = Principal { name: &identity.name, groups: &identity.groups };
    let verdict = policies.authorize(&principal, action, resource, context);
    let reason = verdict.reason(action, resource);
    (verdict, reason)
}

/// Why the identity's token does not allow `action`, if it does not.
fn token_refusal(identity: &Identity, action: Action) -> Option<String> {
    let scope = identity.token.as_ref()?;
    let name = action.to_string();
    (!scope.allows_action(&name)).then(|| format!("token {} does not allow {name}", scope.id))
}

/// The server's default `search_path`. warden does not see `ALTER ROLE/DATABASE … SET search_path` made on the
/// server, so unqualified names resolve against this unless the session sets its own.
fn default_search_path() -> Vec<String> {
    vec!["$user".to_string(), "public".to_string()]
}

/// One session's judge.
pub(crate) struct SqlGuard {
    analyzer: Arc<Analyzer>,
    policies: Arc<PolicyStore>,
    identity: Identity,
    connection: String,
    client_address: Option<IpAddr>,
    application_name: Option<String>,
    initial_search_path: Vec<String>,
    search_path: Vec<String>,
    /// SQL-level prepared statements (PREPARE name AS …), for EXECUTE.
    prepared: HashMap<String, Statement>,
    options: ParseOptions,
    /// The client encoding, when it is one warden cannot lex.
    unsafe_encoding: Option<String>,
    /// The server was idle (not in a transaction block) at its last ReadyForQuery.
    idle: bool,
    /// Judgements by analysis (pointer; the entry keeps the analysis alive so the address stays unique).
    decisions: HashMap<usize, (Arc<Analysis>, Judgement)>,
    decisions_generation: u64,
    /// Where approvals are asked for, when statements may be approved in this session.
    pub(crate) approvals: Option<Arc<crate::approval::SessionApprovals>>,
    /// The statements with session effects of the latest deferred judgements, by deferral (pointer: an entry is
    /// dropped whenever a new deferral takes its address), followed once their deferral allows them.
    deferred_effects: Vec<(usize, Vec<Statement>)>,
}

/// How many deferred judgements' effects a session keeps (a held statement is decided before the next is judged;
/// prepared ones wait for their Execute).
const DEFERRED_EFFECTS: usize = 32;

fn deferral_key(deferral: &Arc<dyn Deferral>) -> usize {
    Arc::as_ptr(deferral).cast::<()>() as usize
}

/// One (action, resource) authorization a statement needed.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub(crate) action: Action,
    /// `connection shop`, `table shop/public.orders`.
    pub(crate) resource: String,
    pub(crate) allowed: bool,
    /// The determining policies: those that permitted it, or those that forbade it.
    pub(crate) policies: Vec<Arc<str>>,
    /// Why it is allowed or refused, as a client reads it.
    pub(crate) reason: String,
    /// Refused, but an approval would lift it (every determining forbid has `@approval`, and with
    /// `context.approved` the request is allowed): what it takes.
    pub(crate) approval: Option<warden_policy::ApprovalNeeded>,
    /// The table checked, `schema.table`, when the resource is one.
    pub(crate) table: Option<String>,
}

/// One statement as the guard judged it.
#[derive(Debug, Clone)]
pub(crate) struct StatementDecision {
    /// The statement as judged: an EXECUTE carries its prepared statement's accesses, a `search_path` change
    /// warden cannot follow is judged `admin`.
    pub(crate) statement: Statement,
    /// The tables it touches, `schema.table` resolved against the session's `search_path`.
    pub(crate) tables: Vec<String>,
    pub(crate) checks: Vec<Check>,
}

impl StatementDecision {
    pub(crate) fn allowed(&self) -> bool {
        self.checks.iter().all(|check| check.allowed)
    }

    /// The determining policies: every permitting policy when allowed, else the forbidding ones.
    pub(crate) fn policies(&self) -> Vec<Arc<str>> {
        let allowed = self.allowed();
        let mut policies: Vec<Arc<str>> = Vec::new();
        for check in self.checks.iter().filter(|check| check.allowed == allowed) {
            for policy in &check.policies {
                if !policies.contains(policy) {
                    policies.push(policy.clone());
                }
            }
        }
        policies
    }
}

impl SqlGuard {
    pub(crate) fn new(
        analyzer: Arc<Analyzer>,
        policies: Arc<PolicyStore>,
        identity: Identity,
        connection: &str,
        client_address: Option<IpAddr>,
        application_name: Option<&str>,
    ) -> SqlGuard {
        SqlGuard {
            analyzer,
            policies,
            identity,
            connection: connection.to_string(),
            client_address,
            application_name: application_name.map(str::to_string),
            initial_search_path: default_search_path(),
            search_path: default_search_path(),
            prepared: HashMap::new(),
            options: ParseOptions::default(),
            unsafe_encoding: None,
            idle: true,
            decisions: HashMap::new(),
            decisions_generation: 0,
            approvals: None,
            deferred_effects: Vec::new(),
        }
    }

    fn refuse(&self, code: &'static str, message: String, decision: Decision) -> Judgement {
        Judgement {
            annotation: Some(Arc::new(decision) as Annotation),
            refusal: Some(StatementRefusal { code, message }),
            deferral: None,
        }
    }

    /// Judges `text` (a Query, or a Parse when `parse` is set).
    fn judge(&mut self, text: &str, parse: bool) -> Judgement {
        let analysis = match self.analyze(text) {
            Ok(analysis) => analysis,
            Err(refusal) => return refusal,
        };
        self.forget_stale_decisions(self.policies.generation());
        let key = Arc::as_ptr(&analysis) as usize;
        if let Some((_, judgement)) = self.decisions.get(&key) {
            return judgement.clone();
        }
        let (policies, generation) = self.policies.get();
        self.forget_stale_decisions(generation);
        let cacheable = analysis.statements.iter().all(|statement| statement.effect.is_none());
        let (judgement, _) = self.decide(&analysis, &policies, parse);
        if cacheable {
            if self.decisions.len() >= DECISION_CACHE {
                self.decisions.clear();
            }
            self.decisions.insert(key, (analysis, judgement.clone()));
        }
        judgement
    }

    /// The analysis of `text`, or the refusal of what warden cannot analyse.
    fn analyze(&self, text: &str) -> Result<Arc<Analysis>, Judgement> {
        let unclassified = || Decision::new(false, vec!["unclassified".into()], Vec::new(), Vec::new());
        if let Some(encoding) = &self.unsafe_encoding {
            return Err(self.refuse(
                "0A000",
                format!("warden cannot analyse SQL sent in client_encoding {encoding}; use UTF8"),
                unclassified(),
            ));
        }
        self.analyzer.analyze(text, self.options).map_err(|error| {
            self.refuse(error.sqlstate(), format!("warden could not analyse the statement: {error}"), unclassified())
        })
    }

    /// Judges a query as a simple Query while the session is idle, bypassing the decision cache, and returns
    /// each statement's decision with the judgement (for `warden policy explain`).
    pub(crate) fn explain(&mut self, text: &str) -> (Judgement, Vec<StatementDecision>) {
        let analysis = match self.analyze(text) {
            Ok(analysis) => analysis,
            Err(refusal) => return (refusal, Vec::new()),
        };
        let (policies, _) = self.policies.get();
        self.decide(&analysis, &policies, false)
    }

    /// The statement as warden must judge it in this session's state.
    fn as_judged(&self, statement: &Statement, parse: bool, single: bool) -> Statement {
        let mut statement = statement.clone();
        match &statement.effect {
            Some(Effect::Execute { name }) => match self.prepared.get(name) {
                Some(prepared) => {
                    // The prepared statement's accesses, plus whatever the parameters call.
                    let mut accesses = prepared.accesses.clone();
                    accesses.extend(
                        statement.accesses.iter().filter(|access| access.class != Class::Unclassified).cloned(),
                    );
                    let class = accesses.iter().map(|access| access.class).max().unwrap_or(prepared.class);
                    statement = Statement { effect: statement.effect.clone(), accesses, class, ..prepared.clone() };
                }
                None => statement.note = Some(format!("prepared statement \"{name}\" is unknown to warden")),
            },
            // warden follows search_path only where it knows the change takes effect: a SET sent alone
            // outside a transaction block. Anything else could be rolled back behind its back.
            Some(Effect::SearchPath(_) | Effect::ResetSearchPath | Effect::DiscardAll)
                if parse || !self.idle || !single =>
            {
                statement.class = Class::Admin;
                statement.accesses = vec![warden_sql::Access { class: Class::Admin, target: Target::Connection }];
                statement.note =
                    Some("a search_path change is only followed when sent alone, outside a transaction".into());
            }
            _ => {}
        }
        statement
    }

    fn decide(&mut self, analysis: &Analysis, policies: &Policies, parse: bool) -> (Judgement, Vec<StatementDecision>) {
        let single = analysis.statements.len() == 1;
        let mut decisions = Vec::with_capacity(analysis.statements.len());
        for statement in &analysis.statements {
            let statement = self.as_judged(statement, parse, single);
            let context = self.context(&statement.kind, statement.has_where);
            let mut tables: Vec<String> = Vec::new();
            let mut checks = Vec::with_capacity(statement.accesses.len());
            for access in &statement.accesses {
                let action = action_for(access.class);
                let resolved;
                let resource = match &access.target {
                    Target::Connection => Resource::Connection { name: &self.connection, kind: "postgres" },
                    Target::Table(table) => {
                        resolved = table.resolve(&self.search_path);
                        let name = format!("{}.{}", resolved.0, resolved.1);
                        if !tables.contains(&name) {
                            tables.push(name);
                        }
                        Resource::Table { connection: &self.connection, schema: &resolved.0, table: &resolved.1 }
                    }
                };
                let (verdict, mut reason) = authorize(&self.identity, policies, action, &resource, &context);
                if let (false, Some(note)) = (verdict.allowed, &statement.note) {
                    reason.push_str(&format!(" ({note})"));
                }
                let approval = match policies.approval_needed(&verdict) {
                    Some(needed) if statement.note.is_none() => {
                        let approved = RequestContext { approved: true, ..context };
                        authorize(&self.identity, policies, action, &resource, &approved).0.allowed.then_some(needed)
                    }
                    _ => None,
                };
                let table = match &resource {
                    Resource::Table { schema, table, .. } => Some(format!("{schema}.{table}")),
                    Resource::Connection { .. } => None,
                };
                checks.push(Check {
                    action,
                    resource: resource.to_string(),
                    allowed: verdict.allowed,
                    policies: verdict.policies,
                    reason,
                    approval,
                    table,
                });
            }
            decisions.push(StatementDecision { statement, tables, checks });
        }

        let mut record = Decision::new(true, Vec::new(), Vec::new(), Vec::new());
        for decision in &decisions {
            record.classes.push(decision.statement.class.as_str().to_string());
            for table in &decision.tables {
                if !record.tables.contains(table) {
                    record.tables.push(table.clone());
                }
            }
        }
        let refused = decisions.iter().flat_map(|decision| &decision.checks).find(|check| !check.allowed);
        if let Some(deferral) = refused.and_then(|_| self.approval_deferral(&decisions, &record)) {
            let mut denied = record;
            denied.allowed = false;
            denied.policies.clone_from(&deferral.policies);
            let deferral: Arc<dyn Deferral> = Arc::new(deferral);
            self.remember_deferred_effects(&deferral, &analysis.statements);
            let judgement =
                Judgement { annotation: Some(Arc::new(denied) as Annotation), refusal: None, deferral: Some(deferral) };
            return (judgement, decisions);
        }
        if let Some(check) = refused {
            record.allowed = false;
            record.policies = check.policies.iter().map(|id| id.to_string()).collect();
            let whole = if analysis.statements.len() > 1 { " (the whole query was refused)" } else { "" };
            let message = format!("connection \"{}\": {}{whole}", self.connection, check.reason);
            return (self.refuse("42501", message, record), decisions);
        }
        for decision in &decisions {
            for policy in decision.policies() {
                if !record.policies.iter().any(|known| **known == *policy) {
                    record.policies.push(policy.to_string());
                }
            }
        }
        // Allowed: follow the session state the statements change.
        self.follow(&analysis.statements);
        (Judgement { annotation: Some(Arc::new(record) as Annotation), ..Judgement::default() }, decisions)
    }

    /// Keeps the statements with session effects of a deferred judgement, for [`StatementGuard::deferral_allowed`];
    /// forgets whatever an earlier deferral at the same address left.
    fn remember_deferred_effects(&mut self, deferral: &Arc<dyn Deferral>, statements: &[Statement]) {
        let key = deferral_key(deferral);
        self.deferred_effects.retain(|(known, _)| *known != key);
        let effects: Vec<Statement> =
            statements.iter().filter(|statement| statement.effect.is_some()).cloned().collect();
        if !effects.is_empty() {
            if self.deferred_effects.len() == DEFERRED_EFFECTS {
                self.deferred_effects.remove(0);
            }
            self.deferred_effects.push((key, effects));
        }
    }

    /// Follows the session state `statements` change, once they are allowed to run.
    fn follow(&mut self, statements: &[Statement]) {
        for statement in statements {
            match &statement.effect {
                Some(Effect::Prepare { name }) => {
                    self.prepared.insert(name.clone(), statement.clone());
                }
                Some(Effect::Deallocate { name: Some(name) }) => {
                    self.prepared.remove(name);
                }
                Some(Effect::Deallocate { name: None }) => self.prepared.clear(),
                Some(Effect::SearchPath(path)) => self.set_search_path(path.clone()),
                Some(Effect::ResetSearchPath) => self.set_search_path(self.initial_search_path.clone()),
                Some(Effect::DiscardAll) => {
                    self.set_search_path(self.initial_search_path.clone());
                    self.prepared.clear();
                }
                Some(Effect::Execute { .. }) | None => {}
            }
        }
    }

    /// When every refused check of the statements is one an approval lifts, and this session may ask for
    /// approvals: the deferral that asks (the approvals of all the checks combined).
    fn approval_deferral(
        &self,
        decisions: &[StatementDecision],
        record: &Decision,
    ) -> Option<crate::approval::ApprovalDeferral> {
        let session = self.approvals.clone()?;
        let mut needed = warden_policy::ApprovalNeeded::none();
        let mut lifted: Vec<crate::approval::Lifted> = Vec::new();
        let mut policies: Vec<String> = Vec::new();
        for check in decisions.iter().flat_map(|decision| &decision.checks).filter(|check| !check.allowed) {
            needed.merge(check.approval.as_ref()?);
            let action = check.action.to_string();
            match lifted.iter_mut().find(|known| known.action == action) {
                Some(known) => {
                    if let Some(table) = check.table.as_ref().filter(|table| !known.tables.contains(table)) {
                        known.tables.push(table.clone());
                    }
                }
                None => lifted.push(crate::approval::Lifted { action, tables: check.table.iter().cloned().collect() }),
            }
            for policy in &check.policies {
                if !policies.iter().any(|known| **known == **policy) {
                    policies.push(policy.to_string());
                }
            }
        }
        Some(crate::approval::ApprovalDeferral { session, needed, lifted, policies, decision: record.clone() })
    }

    /// The policy context of a statement of `kind` in this session.
    fn context<'a>(&'a self, kind: &'a str, has_where: Option<bool>) -> RequestContext<'a> {
        RequestContext {
            client_address: self.client_address,
            application_name: self.application_name.as_deref(),
            statement_kind: Some(kind),
            has_where,
            token: token_context(&self.identity),
            approved: false,
            http_path: None,
            model: None,
        }
    }

    /// Drops the cached decisions when the policies were reloaded since they were made.
    fn forget_stale_decisions(&mut self, generation: u64) {
        if generation != self.decisions_generation {
            self.decisions.clear();
            self.decisions_generation = generation;
        }
    }

    fn set_search_path(&mut self, path: Vec<String>) {
        if path != self.search_path {
            self.search_path = path;
            self.decisions.clear();
        }
    }
}

impl StatementGuard for SqlGuard {
    fn query(&mut self, text: &str) -> Judgement {
        self.judge(text, false)
    }

    fn deferral_allowed(&mut self, deferral: &Arc<dyn Deferral>) {
        let key = deferral_key(deferral);
        // A deferral decides once: its entry is taken, not copied.
        if let Some(index) = self.deferred_effects.iter().position(|(known, _)| *known == key) {
            let (_, statements) = self.deferred_effects.remove(index);
            self.follow(&statements);
        }
    }

    fn parse(&mut self, _statement_name: &str, text: &str) -> Judgement {
        self.judge(text, true)
    }

    fn function_call(&mut self, function_oid: i32) -> Judgement {
        let (policies, _) = self.policies.get();
        let resource = Resource::Connection { name: &self.connection, kind: "postgres" };
        let context = self.context("function call", None);
        let (verdict, reason) = authorize(&self.identity, &policies, Action::Unclassified, &resource, &context);
        let record = Decision::new(
            verdict.allowed,
            vec!["unclassified".into()],
            Vec::new(),
            verdict.policies.iter().map(|id| id.to_string()).collect(),
        );
        if verdict.allowed {
            return Judgement { annotation: Some(Arc::new(record) as Annotation), ..Judgement::default() };
        }
        let message = format!(
            "connection \"{}\": fast-path call of function {function_oid} is unclassified: {reason}",
            self.connection
        );
        self.refuse("42501", message, record)
    }

    fn server_parameter(&mut self, name: &str, value: &str) {
        match name {
            "standard_conforming_strings" => {
                self.options.backslash_escapes = !value.eq_ignore_ascii_case("on");
            }
            "client_encoding" => {
                let upper = value.to_ascii_uppercase();
                self.unsafe_encoding = UNSAFE_ENCODINGS.contains(&upper.as_str()).then_some(upper);
            }
            "application_name" if self.application_name.as_deref() != Some(value) => {
                self.application_name = Some(value.to_string());
                self.decisions.clear();
            }
            _ => {}
        }
    }

    fn transaction_status(&mut self, status: u8) {
        self.idle = status == b'I';
    }
}

#[cfg(test)]
mod tests {
    use super::startup_options;

    #[test]
    fn startup_options_are_split_like_the_server_does() {
        let settings = startup_options("-c search_path=shop -csession_replication_role=replica --work-mem=64MB")
            .expect("valid options");
        assert_eq!(
            settings,
            vec![
                ("search_path".to_string(), "shop".to_string()),
                ("session_replication_role".to_string(), "replica".to_string()),
                ("work_mem".to_string(), "64MB".to_string()),
            ]
        );
        assert_eq!(startup_options(r"-c application_name=a\ b").unwrap()[0].1, "a b");
        assert!(startup_options("-x").is_err());
        assert!(startup_options("-c").is_err());
    }
}
