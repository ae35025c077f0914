//! One authorization request: warden's request types to Cedar's (built directly, no JSON), and Cedar's response to
//! a [`Verdict`], failing closed when a `forbid` policy cannot be evaluated.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    AuthorizationError, Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, Request, Response,
};
use cedar_policy_core::ast::{self, ExtensionFunction};
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;

use crate::{Action, Principal, RequestContext, Resource};

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The determining policies, sorted: the permits that allowed, or the forbids that denied (including a forbid
    /// that failed to evaluate, see [`EvaluationError::fails_closed`]). Empty for a default deny.
    pub policies: Vec<Arc<str>>,
    /// What went wrong while evaluating. Cedar skips a policy whose condition errors; warden additionally denies
    /// when the erroring policy is a `forbid`.
    pub errors: Vec<EvaluationError>,
}

/// Something that went wrong answering a request. Never the end user's fault: a policy that errors is the policy
/// author's (fix the policy), a request that cannot be built is warden's; retrying gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluationError {
    /// A policy's condition could not be evaluated for this request (say, it reads an optional attribute without
    /// `has`). A permit is skipped; a forbid denies.
    #[error("policy \"{policy}\" failed to evaluate: {message}")]
    Policy { policy: Arc<str>, forbid: bool, message: String },
    /// The request itself could not be put to Cedar; it is denied.
    #[error("{0}")]
    Request(String),
}

impl EvaluationError {
    /// Whether this error alone denies the request.
    pub fn fails_closed(&self) -> bool {
        match self {
            EvaluationError::Policy { forbid, .. } => *forbid,
            EvaluationError::Request(_) => true,
        }
    }

    fn failed_forbid(&self) -> Option<&Arc<str>> {
        match self {
            EvaluationError::Policy { policy, forbid: true, .. } => Some(policy),
            _ => None,
        }
    }
}

impl Verdict {
    /// Default deny: nothing applied.
    pub(crate) fn default_deny() -> Verdict {
        Verdict { allowed: false, policies: Vec::new(), errors: Vec::new() }
    }

    pub(crate) fn refused(error: EvaluationError) -> Verdict {
        Verdict { allowed: false, policies: Vec::new(), errors: vec![error] }
    }

    /// The text a user sees, e.g. `policy "no-deletes" forbids write on table shop/public.orders`,
    /// `no policy permits write on table shop/public.orders`, or, when allowed,
    /// `permitted by policy "agents-read-shop"`. Evaluation errors are always mentioned on a refusal.
    pub fn reason(&self, action: Action, resource: &Resource) -> String {
        if self.allowed {
            return match self.policies.as_slice() {
                [] => "permitted".to_owned(),
                [one] => format!("permitted by policy \"{one}\""),
                many => format!("permitted by policies {}", quoted_list(many)),
            };
        }
        let errors = self.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        let failed_forbids: Vec<&Arc<str>> = self.errors.iter().filter_map(EvaluationError::failed_forbid).collect();
        let forbidding: Vec<&Arc<str>> =
            self.policies.iter().filter(|policy| !failed_forbids.contains(policy)).collect();
        let mut reason = match forbidding.as_slice() {
            [] if self.errors.iter().any(EvaluationError::fails_closed) => {
                // The errors are the reason; nothing to add after them.
                return format!("{action} on {resource} is refused because {errors}");
            }
            [] => format!("no policy permits {action} on {resource}"),
            [one] => format!("policy \"{one}\" forbids {action} on {resource}"),
            many => format!("policies {} forbid {action} on {resource}", quoted_list(many)),
        };
        if !errors.is_empty() {
            reason.push_str(" (");
            reason.push_str(&errors);
            reason.push(')');
        }
        reason
    }
}

fn quoted_list<T: AsRef<str>>(ids: &[T]) -> String {
    ids.iter().map(|id| format!("\"{}\"", id.as_ref())).collect::<Vec<_>>().join(", ")
}

/// Names parsed once per [`crate::Policies`], so a request only clones them (cheap: interned pieces and `Arc`s
/// inside). The `cedar-policy` ones describe policy scopes; the `cedar-policy-core` ones build requests.
pub(crate) struct Names {
    pub identity: EntityTypeName,
    pub group: EntityTypeName,
    pub connection: EntityTypeName,
    pub table: EntityTypeName,
    pub action_type: EntityTypeName,
    core: CoreNames,
}

struct CoreNames {
    identity: ast::EntityType,
    group: ast::EntityType,
    connection: ast::EntityType,
    table: ast::EntityType,
    /// Indexed like [`Action::ALL`].
    actions: [EntityUid; Action::ALL.len()],
    /// Cedar's `ip()` extension function.
    ip: &'static ExtensionFunction,
}

impl Names {
    pub fn new() -> Names {
        const VALID: &str = "warden's entity type names are valid Cedar";
        let type_name = |name: &str| EntityTypeName::from_str(name).expect(VALID);
        let core_type = |name: &str| ast::EntityType::from_str(name).expect(VALID);
        let action_type = type_name("Warden::Action");
        let ip = ast::Name::from_str("ip").expect("`ip` is a valid Cedar name");
        Names {
            identity: type_name("Warden::Identity"),
            group: type_name("Warden::Group"),
            connection: type_name("Warden::Connection"),
            table: type_name("Warden::Table"),
            core: CoreNames {
                identity: core_type("Warden::Identity"),
                group: core_type("Warden::Group"),
                connection: core_type("Warden::Connection"),
                table: core_type("Warden::Table"),
                actions: Action::ALL.map(|action| {
                    EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(action.as_str()))
                }),
                ip: Extensions::all_available().func(&ip).expect("the ipaddr extension is enabled (Cargo feature)"),
            },
            action_type,
        }
    }
}

impl CoreNames {
    fn uid(&self, entity_type: &ast::EntityType, id: &str) -> ast::EntityUID {
        ast::EntityUID::from_components(entity_type.clone(), ast::Eid::new(id), None)
    }
}

/// The Cedar request and the entities it needs: the identity (with its groups as parents) and the resource (a table
/// has its connection as parent, which is what makes `resource in Warden::Connection::"shop"` cover its tables).
/// Group and connection entities themselves are not needed: `in` only follows the parents recorded on the child.
/// Action entities are not needed either: the schema has no action groups, and `in` is reflexive.
///
/// Built with `cedar-policy-core` values directly, because `cedar-policy`'s public constructors cost more than the
/// whole rest of a request: `Entities::from_entities` always computes the transitive closure of the hierarchy
/// (about 8 µs for two entities), `RestrictedExpression::new_ip` runs Cedar's parser on the name `ip` (about 6 µs),
/// and `Context::from_pairs` evaluates expressions where values will do. The closure is not needed: the schema's
/// hierarchy is one level deep (groups and connections have no parents), so parents are all the ancestors there
/// are. **If the schema ever nests groups, switch to `TCComputation::ComputeNow`.**
pub(crate) fn build_request(
    names: &Names,
    principal: &Principal,
    action: Action,
    resource: &Resource,
    context: &RequestContext,
) -> Result<(Request, Entities), String> {
    let core = &names.core;
    let string = |value: &str| ast::PartialValue::Value(ast::Value::from(value));
    let principal_uid = core.uid(&core.identity, principal.name);
    let identity = ast::Entity::new_with_attr_partial_value(
        principal_uid.clone(),
        [],
        HashSet::new(),
        principal.groups.iter().map(|group| core.uid(&core.group, group)).collect(),
        [],
    );
    let resource_entity = match *resource {
        Resource::Connection { name, kind } => ast::Entity::new_with_attr_partial_value(
            core.uid(&core.connection, name),
            [("kind".into(), string(kind))],
            HashSet::new(),
            HashSet::new(),
            [],
        ),
        Resource::Table { connection, schema, table } => ast::Entity::new_with_attr_partial_value(
            core.uid(&core.table, &format!("{connection}/{schema}.{table}")),
            [
                ("connection".into(), string(connection)),
                ("schema".into(), string(schema)),
                ("name".into(), string(table)),
            ],
            HashSet::new(),
            HashSet::from([core.uid(&core.connection, connection)]),
            [],
        ),
    };
    let resource_uid = resource_entity.uid().clone();
    let entities = CoreEntities::from_entities(
        [identity, resource_entity],
        None::<&NoEntitiesSchema>,
        TCComputation::AssumeAlreadyComputed,
        Extensions::all_available(),
    )
    .map_err(|error| format!("cannot describe {resource} to Cedar: {error}"))?;
    let context = build_context(core, context)?;
    // No schema here: the shapes are built above to match it, and checking them again costs time on every request.
    let request = Request::new(
        principal_uid.into(),
        core.actions[action.index()].clone(),
        resource_uid.into(),
        Context::from(context),
        None,
    )
    .map_err(|error| format!("cannot build the request: {error}"))?;
    Ok((request, Entities::from(entities)))
}

fn build_context(core: &CoreNames, context: &RequestContext) -> Result<ast::Context, String> {
    let mut client = BTreeMap::new();
    if let Some(address) = context.client_address {
        // Cedar's ip() does not accept IPv4-mapped IPv6 text (`::ffff:10.1.2.3`), which is how a dual-stack socket
        // reports an IPv4 client; such a client is an IPv4 client for `isInRange`.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        let ip = match core.ip.call(&[ast::Value::from(address.to_string())]) {
            Ok(ast::PartialValue::Value(ip)) => ip,
            Ok(ast::PartialValue::Residual(_)) => return Err(format!("client address {address} is not a value")),
            Err(error) => return Err(format!("client address {address}: {error}")),
        };
        client.insert("address".into(), ip);
    }
    if let Some(application_name) = context.application_name {
        client.insert("application_name".into(), ast::Value::from(application_name));
    }
    let mut pairs = BTreeMap::new();
    pairs.insert("client".into(), ast::Value::record_arc(Arc::new(client), None));
    pairs.insert("approved".into(), ast::Value::from(context.approved));
    if let Some(kind) = context.statement_kind {
        let mut statement = BTreeMap::new();
        statement.insert("kind".into(), ast::Value::from(kind));
        if let Some(has_where) = context.has_where {
            statement.insert("has_where".into(), ast::Value::from(has_where));
        }
        pairs.insert("statement".into(), ast::Value::record_arc(Arc::new(statement), None));
    }
    if let Some(path) = context.http_path {
        let mut http = BTreeMap::new();
        http.insert("path".into(), ast::Value::from(path));
        if let Some(model) = context.model {
            http.insert("model".into(), ast::Value::from(model));
        }
        pairs.insert("http".into(), ast::Value::record_arc(Arc::new(http), None));
    }
    if let Some(token) = &context.token {
        let mut record = BTreeMap::new();
        record.insert("id".into(), ast::Value::from(token.id));
        if let Some(run) = token.run {
            record.insert("run".into(), ast::Value::from(run));
        }
        if let Some(node) = token.node {
            record.insert("node".into(), ast::Value::from(node));
        }
        pairs.insert("token".into(), ast::Value::record_arc(Arc::new(record), None));
    }
    Ok(ast::Context::Value(Arc::new(pairs)))
}

/// Cedar's response as a [`Verdict`], with ids and effects looked up by `policy`.
pub(crate) fn verdict(response: &Response, policy: impl Fn(&str) -> Option<(Arc<str>, bool)>) -> Verdict {
    let diagnostics = response.diagnostics();
    let id_of = |id: &str| policy(id).map_or_else(|| Arc::from(id), |(id, _)| id);
    let mut errors = Vec::new();
    for error in diagnostics.errors() {
        let AuthorizationError::PolicyEvaluationError(error) = error;
        let id: &str = error.policy_id().as_ref();
        // A policy we do not know is treated as a forbid: fail closed.
        let (policy, forbid) = policy(id).unwrap_or_else(|| (Arc::from(id), true));
        errors.push(EvaluationError::Policy { policy, forbid, message: error.inner().to_string() });
    }
    let cedar_allowed = response.decision() == Decision::Allow;
    let failed_closed = errors.iter().any(EvaluationError::fails_closed);
    let mut policies: Vec<Arc<str>> = if cedar_allowed && failed_closed {
        // The permits Cedar found do not decide anything now; the failed forbids do.
        Vec::new()
    } else {
        diagnostics.reason().map(|id| id_of(id.as_ref())).collect()
    };
    policies.extend(errors.iter().filter_map(EvaluationError::failed_forbid).cloned());
    policies.sort();
    policies.dedup();
    errors.sort_by_cached_key(ToString::to_string);
    Verdict { allowed: cedar_allowed && !failed_closed, policies, errors }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Connection { name, .. } => write!(f, "connection {name}"),
            Resource::Table { connection, schema, table } => write!(f, "table {connection}/{schema}.{table}"),
        }
    }
}
