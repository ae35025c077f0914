//! Cedar as warden's policy engine: the schema policies are written against ([`SCHEMA`], namespace `Warden`),
//! loading and strictly validating policy files ([`Policies::load`]), and answering authorization requests with
//! the policies that determined the answer ([`Policies::authorize`]).
//!
//! Pure logic: no sockets, no async, no global state. A [`Policies`] is immutable once built; the gateway shares it
//! in an `Arc` and swaps the `Arc` on reload.
//!
//! **Policy ids.** A policy's id is its `@id("…")` annotation, else `<file name>:<line>` of its first line (the
//! line of its first annotation, if it has any). Ids are unique across all loaded files.
//!
//! **Slicing.** Most policies name one connection in their resource scope (`resource in Warden::Connection::"shop"`,
//! `resource == Warden::Table::"shop/public.orders"`) and a few actions. At load time the policies are sorted into
//! one Cedar policy set per (connection named by some policy, action), plus one per action for every other
//! connection holding only the policies whose resource scope names no connection. A request hands Cedar only its
//! slice. Skipping a policy whose scope cannot match changes nothing, not even errors: Cedar evaluates the scope
//! before the conditions. Inside a slice, scope constraints the slice already guarantees (`action == / in [..]`,
//! `resource in Warden::Connection::"<this connection>"`) are removed from the copy Cedar evaluates, since Cedar
//! re-evaluates scopes on every request. Principals are not sliced: they are not known at load time. A test compares
//! every answer on a grid of requests with plain Cedar's on the policies as written.
//!
//! **Per request**, the identity and resource entities and the context are built directly as Cedar values (see
//! `authorize.rs` for why not through `cedar-policy`'s public constructors). With twelve policies a request costs
//! about 10–15 µs in a release build (`cargo bench -p warden-gateway --bench statement`), most of it
//! Cedar evaluating the five or six policies in the slice.
//!
//! **Fail closed.** Cedar skips a policy whose condition fails to evaluate. For a `permit` that is safe (it cannot
//! grant), and warden keeps it; for a `forbid` it would silently lift a prohibition, so warden denies the request
//! and names the policy instead.

#![forbid(unsafe_code)]

mod authorize;
mod error;
mod load;
mod scope;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use cedar_policy::{Authorizer, Effect, Policy, PolicySet, Schema};

pub use crate::authorize::{EvaluationError, Verdict};
pub use crate::error::{PolicyError, Position, Problem, ProblemKind};

use crate::authorize::Names;
use crate::load::LoadedPolicy;
use crate::scope::{table_connection_candidates, ResourceScope, Scope};

/// warden's Cedar schema, in Cedar's schema syntax. Policy files are validated against it in strict mode.
pub const SCHEMA: &str = include_str!("warden.cedarschema");

/// What a request asks to do: `connect` to a connection, or run a statement of one class on a connection or table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Connect,
    Read,
    Write,
    Ddl,
    Dcl,
    Admin,
    Procedural,
    Unclassified,
    /// Seeing a connection's results unmasked (exempts the session from `[connection.masking]`).
    Unmask,
    /// An HTTP request by method (`http:GET`…), on an `http` connection.
    HttpGet,
    HttpHead,
    HttpPost,
    HttpPut,
    HttpPatch,
    HttpDelete,
    HttpOptions,
}

impl Action {
    pub const ALL: [Action; 16] = [
        Action::Connect,
        Action::Read,
        Action::Write,
        Action::Ddl,
        Action::Dcl,
        Action::Admin,
        Action::Procedural,
        Action::Unclassified,
        Action::Unmask,
        Action::HttpGet,
        Action::HttpHead,
        Action::HttpPost,
        Action::HttpPut,
        Action::HttpPatch,
        Action::HttpDelete,
        Action::HttpOptions,
    ];

    /// The action of an HTTP request with this method (upper case, as sent); `None` for methods warden does not
    /// relay (`CONNECT`, `TRACE`, extensions).
    pub fn http(method: &str) -> Option<Action> {
        Some(match method {
            "GET" => Action::HttpGet,
            "HEAD" => Action::HttpHead,
            "POST" => Action::HttpPost,
            "PUT" => Action::HttpPut,
            "PATCH" => Action::HttpPatch,
            "DELETE" => Action::HttpDelete,
            "OPTIONS" => Action::HttpOptions,
            _ => return None,
        })
    }

    /// The Cedar action id: `Warden::Action::"<as_str>"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Read => "read",
            Action::Write => "write",
            Action::Ddl => "ddl",
            Action::Dcl => "dcl",
            Action::Admin => "admin",
            Action::Procedural => "procedural",
            Action::Unclassified => "unclassified",
            Action::Unmask => "unmask",
            Action::HttpGet => "http:GET",
            Action::HttpHead => "http:HEAD",
            Action::HttpPost => "http:POST",
            Action::HttpPut => "http:PUT",
            Action::HttpPatch => "http:PATCH",
            Action::HttpDelete => "http:DELETE",
            Action::HttpOptions => "http:OPTIONS",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|action| action.as_str() == s)
    }

    /// One of the `http:<METHOD>` actions.
    pub fn is_http(self) -> bool {
        self.index() >= Action::HttpGet.index()
    }

    /// Position in [`Action::ALL`].
    fn index(self) -> usize {
        self as usize
    }

    fn bit(self) -> u16 {
        1 << self.index()
    }
}

/// What a request is about. `Display` gives the user-facing form: `connection shop`, `table shop/public.orders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource<'a> {
    /// `Warden::Connection::"<name>"`; `kind` is its protocol, e.g. "postgres".
    Connection { name: &'a str, kind: &'a str },
    /// `Warden::Table::"<connection>/<schema>.<table>"`, `in` its connection.
    Table { connection: &'a str, schema: &'a str, table: &'a str },
}

impl Resource<'_> {
    /// The connection this resource is, or is in.
    pub fn connection(&self) -> &str {
        match self {
            Resource::Connection { name, .. } => name,
            Resource::Table { connection, .. } => connection,
        }
    }
}

/// Who is asking: `Warden::Identity::"<name>"`, a member of `Warden::Group::"<group>"` for each of `groups`.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub name: &'a str,
    pub groups: &'a [String],
}

/// `context.token`: a warden token's id and labels.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenContext<'a> {
    pub id: &'a str,
    pub run: Option<&'a str>,
    pub node: Option<&'a str>,
}

/// A `forbid`'s approval annotations: who may lift it, how many of them must, and for how long a request for it
/// stays open (and an approval of it usable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    /// `@approval("<group>")`: the group whose members may approve.
    pub group: Arc<str>,
    /// `@approvals("N")`: distinct approvers needed, 1 by default.
    pub approvals: u8,
    /// `@approval_ttl("30m")`: 1 hour by default.
    pub ttl: std::time::Duration,
}

/// The approvals a denied request needs before `context.approved` may lift it: for each approver group (sorted),
/// how many distinct members of it must approve; the shortest ttl of the determining forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalNeeded {
    pub groups: Vec<(Arc<str>, u8)>,
    pub ttl: std::time::Duration,
}

impl ApprovalNeeded {
    /// Nothing needed yet: what [`ApprovalNeeded::add`] and [`ApprovalNeeded::merge`] build on.
    pub fn none() -> ApprovalNeeded {
        ApprovalNeeded { groups: Vec::new(), ttl: std::time::Duration::MAX }
    }

    /// Adds `approvals` from `group` within `ttl`: a group keeps its largest count, the shortest ttl wins; groups
    /// stay sorted.
    pub fn add(&mut self, group: &Arc<str>, approvals: u8, ttl: std::time::Duration) {
        self.ttl = self.ttl.min(ttl);
        match self.groups.binary_search_by(|(known, _)| known.cmp(group)) {
            Ok(index) => self.groups[index].1 = self.groups[index].1.max(approvals),
            Err(index) => self.groups.insert(index, (group.clone(), approvals)),
        }
    }

    /// What `self` and `other` need together.
    pub fn merge(&mut self, other: &ApprovalNeeded) {
        for (group, approvals) in &other.groups {
            self.add(group, *approvals, other.ttl);
        }
        self.ttl = self.ttl.min(other.ttl);
    }
}

/// What policies may read as `context`. Absent fields are absent attributes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContext<'a> {
    /// `context.client.address`.
    pub client_address: Option<IpAddr>,
    /// `context.client.application_name`.
    pub application_name: Option<&'a str>,
    /// `context.statement.kind`; when `Some`, `context.statement` is present.
    pub statement_kind: Option<&'a str>,
    /// `context.statement.has_where`; ignored unless `statement_kind` is `Some`.
    pub has_where: Option<bool>,
    /// `context.token`, when the session authenticated with a warden token.
    pub token: Option<TokenContext<'a>>,
    /// `context.approved`: an approval covering this request exists (always present; false unless warden found
    /// one).
    pub approved: bool,
    /// `context.http.path`: for an HTTP request, the path after the connection prefix (query excluded); when
    /// `Some`, `context.http` is present.
    pub http_path: Option<&'a str>,
    /// `context.http.model`: the LLM model asked for; ignored unless `http_path` is `Some`.
    pub model: Option<&'a str>,
}

/// A loaded, validated set of policies, ready to answer requests. Immutable; cheap to share in an `Arc`.
pub struct Policies {
    /// In load order: files sorted, then by place in the file.
    policies: Vec<LoadedPolicy>,
    /// Parallel to `policies`.
    scopes: Vec<Scope>,
    index_by_id: HashMap<Arc<str>, usize>,
    files: Vec<PathBuf>,
    slices: Slices,
    names: Names,
    authorizer: Authorizer,
}

impl Policies {
    /// No policies: every request is denied.
    pub fn empty() -> Policies {
        Policies::build(Vec::new(), Vec::new())
    }

    /// Loads the policy files named by `patterns`: each is a path that may contain glob characters (`*`, `?`, `[`);
    /// a plain path may also be a directory, meaning every `*.cedar` file directly in it. Every problem (a pattern
    /// matching no file, an unreadable file, a syntax error, a schema validation error, a duplicate id) is collected
    /// from every file and reported at once.
    pub fn load(patterns: &[PathBuf]) -> Result<Policies, PolicyError> {
        let loaded = load::load_files(patterns, &schema())?;
        Ok(Policies::build(loaded.policies, loaded.files))
    }

    /// Like [`Policies::load`], from `(file label, text)` pairs already in memory. The labels stand in for file
    /// paths, in messages, auto ids (their last path component) and [`Policies::files`].
    pub fn from_sources(sources: &[(String, String)]) -> Result<Policies, PolicyError> {
        let loaded = load::parse_and_validate(sources, &schema(), Vec::new())?;
        Ok(Policies::build(loaded.policies, loaded.files))
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Policy ids, in load order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|policy| &*policy.id)
    }

    /// The files actually loaded, sorted.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The group named by the policy's `@approval("<group>")` annotation, if it has one.
    pub fn approval_group(&self, policy_id: &str) -> Option<&str> {
        Some(&*self.approval_rule(policy_id)?.group)
    }

    /// The policy's approval rule (`@approval`, `@approvals`, `@approval_ttl`), if it has one.
    pub fn approval_rule(&self, policy_id: &str) -> Option<&ApprovalRule> {
        let index = *self.index_by_id.get(policy_id)?;
        self.policies.get(index)?.approval.as_ref()
    }

    /// What would lift a denial: when every policy that determined it is a `forbid` with an approval rule (and no
    /// forbid failed to evaluate), the approvals it takes; `None` for an allowed request, a default deny, or a
    /// denial some policy makes without `@approval`.
    pub fn approval_needed(&self, verdict: &Verdict) -> Option<ApprovalNeeded> {
        if verdict.allowed || verdict.policies.is_empty() || verdict.errors.iter().any(EvaluationError::fails_closed) {
            return None;
        }
        let mut needed = ApprovalNeeded::none();
        for id in &verdict.policies {
            let rule = self.approval_rule(id)?;
            needed.add(&rule.group, rule.approvals, rule.ttl);
        }
        Some(needed)
    }

    /// Cedar's answer for one request (default deny, forbid overrides permit), with the determining policies, and
    /// denied when a `forbid` policy fails to evaluate. `connect` applies to connections only: asked about a table,
    /// the answer is a refusal.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
        context: &RequestContext,
    ) -> Verdict {
        if let (Action::Connect | Action::Unmask, Resource::Table { .. }) = (action, resource) {
            return Verdict::refused(EvaluationError::Request(format!(
                "{action} applies to a connection, not to {resource}"
            )));
        }
        if let (true, Resource::Table { .. }) = (action.is_http(), resource) {
            return Verdict::refused(EvaluationError::Request(format!(
                "{action} applies to a connection, not to {resource}"
            )));
        }
        let slice = self.slices.get(resource.connection(), action);
        if slice.is_empty() {
            return Verdict::default_deny();
        }
        let (request, entities) = match authorize::build_request(&self.names, principal, action, resource, context) {
            Ok(built) => built,
            Err(message) => return Verdict::refused(EvaluationError::Request(message)),
        };
        let response = self.authorizer.is_authorized(&request, slice, &entities);
        authorize::verdict(&response, |id| {
            let policy = self.policies.get(*self.index_by_id.get(id)?)?;
            Some((policy.id.clone(), policy.effect == Effect::Forbid))
        })
    }

    /// What a time-boxed grant of `action` on `connection` (or one `(schema, table)` of it) to `principal` needs:
    /// the approval rules of every `forbid` with `@approval` whose scope may apply (conditions are not evaluated:
    /// the grant lifts such a forbid whatever the statement), merged as for a statement (each group its largest
    /// count, the shortest ttl). `None` when no such forbid applies: there is nothing to approve.
    pub fn approval_for_grant(
        &self,
        principal: &Principal,
        action: Action,
        connection: &str,
        table: Option<(&str, &str)>,
    ) -> Option<ApprovalNeeded> {
        let table_id = table.map(|(schema, name)| format!("{connection}/{schema}.{name}"));
        let mut needed: Option<ApprovalNeeded> = None;
        for (policy, scope) in self.policies.iter().zip(&self.scopes) {
            let Some(rule) = &policy.approval else { continue };
            let resource_applies = match (&scope.resource, &table_id) {
                (scope::ResourceScope::Table(id), Some(table_id)) => **id == **table_id,
                _ => scope.may_match_connection(connection),
            };
            if !(scope.actions.contains(action) && scope.may_match_principal(principal) && resource_applies) {
                continue;
            }
            needed.get_or_insert_with(ApprovalNeeded::none).add(&rule.group, rule.approvals, rule.ttl);
        }
        needed
    }

    /// Whether some `permit` policy might grant `principal` an action other than `read` and `connect` on
    /// `connection` or a table in it. Decided from the policies' scopes alone: `when`/`unless` conditions are
    /// assumed true, and forbids are ignored, so the answer errs towards `true` (a read-only mode built on it is
    /// never switched off wrongly).
    pub fn grants_beyond_read(&self, principal: &Principal, connection: &str) -> bool {
        self.policies.iter().zip(&self.scopes).any(|(policy, scope)| {
            policy.effect == Effect::Permit
                && scope.actions.beyond_read()
                && scope.may_match_principal(principal)
                && scope.may_match_connection(connection)
        })
    }

    fn build(policies: Vec<LoadedPolicy>, files: Vec<PathBuf>) -> Policies {
        let names = Names::new();
        let scopes: Vec<Scope> = policies.iter().map(|loaded| Scope::of(&loaded.policy, &names)).collect();
        let slices = Slices::new(&policies, &scopes);
        let index_by_id = policies.iter().enumerate().map(|(index, loaded)| (loaded.id.clone(), index)).collect();
        Policies { policies, scopes, index_by_id, files, slices, names, authorizer: Authorizer::new() }
    }
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies").field("ids", &self.ids().collect::<Vec<_>>()).field("files", &self.files).finish()
    }
}

/// The schema, parsed. Parsed per load (about a millisecond) rather than kept in a global.
fn schema() -> Schema {
    let (schema, _warnings) =
        Schema::from_cedarschema_str(SCHEMA).expect("warden's schema is valid; the tests load it on every run");
    schema
}

/// `policy` with its action and/or resource constraint replaced by "any", for a slice where they always hold.
/// Cedar evaluates a policy's scope on every request, and `action in [..]` in particular costs as much as a
/// simple condition, so this is a real saving. Done through Cedar's JSON policy format (documented and stable);
/// if that ever fails, the policy is kept as it is, which is merely slower.
fn without_constraints(policy: &Policy, drop_action: bool, drop_resource: bool) -> Policy {
    if !drop_action && !drop_resource {
        return policy.clone();
    }
    let Ok(mut json) = policy.to_json() else { return policy.clone() };
    let any = serde_json::json!({ "op": "All" });
    if drop_action {
        json["action"] = any.clone();
    }
    if drop_resource {
        json["resource"] = any;
    }
    Policy::from_json(Some(policy.id().clone()), json).unwrap_or_else(|_| policy.clone())
}

/// Policy sets per (connection, action); see the crate documentation.
struct Slices {
    /// For every connection some policy's resource scope names: the policies that may apply to it.
    by_connection: HashMap<Box<str>, [PolicySet; Action::ALL.len()]>,
    /// For every other connection: the policies whose resource scope names no connection.
    other: [PolicySet; Action::ALL.len()],
}

impl Slices {
    fn new(policies: &[LoadedPolicy], scopes: &[Scope]) -> Slices {
        // Each policy as Cedar sees it in a slice, with the scope constraints the slice already guarantees removed,
        // by (policy index, action constraint removed, resource constraint removed). Built on first use.
        let mut variants: HashMap<(usize, bool, bool), Policy> = HashMap::new();
        let mut slice = |connection: Option<&str>| -> [PolicySet; Action::ALL.len()] {
            Action::ALL.map(|action| {
                let mut set = PolicySet::new();
                for (index, (loaded, scope)) in policies.iter().zip(scopes).enumerate() {
                    let applies = scope.actions.contains(action)
                        && match connection {
                            Some(connection) => scope.may_match_connection(connection),
                            None => scope.resource == ResourceScope::Any,
                        };
                    if !applies {
                        continue;
                    }
                    let drop_resource = connection.is_some() && scope.resource_in_connection.as_deref() == connection;
                    let policy = variants
                        .entry((index, scope.actions_exact, drop_resource))
                        .or_insert_with(|| without_constraints(&loaded.policy, scope.actions_exact, drop_resource));
                    set.add(policy.clone()).expect("policy ids are unique: checked at load");
                }
                set
            })
        };
        let mut named: Vec<&str> = Vec::new();
        for scope in scopes {
            match &scope.resource {
                ResourceScope::Any => {}
                ResourceScope::Connection(name) => named.push(name),
                ResourceScope::Table(id) => named.extend(table_connection_candidates(id)),
            }
        }
        named.sort_unstable();
        named.dedup();
        let by_connection = named.into_iter().map(|connection| (connection.into(), slice(Some(connection)))).collect();
        let other = slice(None);
        Slices { by_connection, other }
    }

    fn get(&self, connection: &str, action: Action) -> &PolicySet {
        let sets = self.by_connection.get(connection).unwrap_or(&self.other);
        &sets[action.index()]
    }
}
