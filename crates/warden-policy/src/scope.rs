//! What a policy's scope (`principal`, `action`, `resource`) can match, summarised once at load time.
//!
//! Two users: slicing (which policies Cedar needs to see for a request on a given connection and action) and
//! [`crate::Policies::grants_beyond_read`]. Both must never under-approximate: a summary may say a policy *might*
//! match when it cannot, never the reverse. So anything not recognised below (an entity type outside the schema, an
//! action id warden does not know) summarises as "anything".

use cedar_policy::{ActionConstraint, EntityUid, Policy, PrincipalConstraint, ResourceConstraint};

use crate::{Action, Names, Principal};

/// The summary of one policy's scope. `when`/`unless` conditions are not looked at: they may always be true.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub principal: PrincipalScope,
    pub actions: ActionSet,
    /// The action constraint is `==` or `in [..]` of actions warden knows, so `actions` is exactly the set it
    /// matches (action entities have no parents): inside a slice for one of them, the constraint is always true.
    pub actions_exact: bool,
    pub resource: ResourceScope,
    /// The resource constraint is exactly `resource in Warden::Connection::"name"`: true for every request on that
    /// connection (the connection itself, or a table whose parent it is).
    pub resource_in_connection: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrincipalScope {
    Any,
    /// `principal == / in Warden::Identity::"name"`.
    Identity(Box<str>),
    /// `principal in Warden::Group::"group"` (groups do not nest).
    Group(Box<str>),
}

/// A set of [`Action`]s, one bit per [`Action::ALL`] index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ActionSet(u16);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResourceScope {
    Any,
    /// `resource == / in Warden::Connection::"name"`: that connection and its tables.
    Connection(Box<str>),
    /// `resource == / in Warden::Table::"<connection>/<schema>.<table>"`: that one table.
    Table(Box<str>),
}

impl ActionSet {
    pub const ALL: ActionSet = ActionSet(u16::MAX);
    pub const NONE: ActionSet = ActionSet(0);

    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    pub fn insert(&mut self, action: Action) {
        self.0 |= action.bit();
    }

    /// Whether the set has an action other than `read`, `connect` and `unmask` (none of which changes anything).
    pub fn beyond_read(self) -> bool {
        let beyond = [Action::Write, Action::Ddl, Action::Dcl, Action::Admin, Action::Procedural, Action::Unclassified];
        self.0 & beyond.iter().fold(0, |bits, action| bits | action.bit()) != 0
    }
}

impl Scope {
    pub fn of(policy: &Policy, names: &Names) -> Scope {
        let principal = match policy.principal_constraint() {
            PrincipalConstraint::Any | PrincipalConstraint::Is(_) => PrincipalScope::Any,
            PrincipalConstraint::Eq(uid) | PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid) => {
                if uid.type_name() == &names.identity {
                    PrincipalScope::Identity(uid.id().unescaped().into())
                } else if uid.type_name() == &names.group {
                    PrincipalScope::Group(uid.id().unescaped().into())
                } else {
                    PrincipalScope::Any
                }
            }
        };
        let (actions, actions_exact) = match policy.action_constraint() {
            ActionConstraint::Any => (ActionSet::ALL, false),
            ActionConstraint::Eq(uid) => action_set(std::slice::from_ref(&uid), names),
            ActionConstraint::In(uids) => action_set(&uids, names),
        };
        let resource_in_connection = match policy.resource_constraint() {
            ResourceConstraint::In(uid) if uid.type_name() == &names.connection => Some(uid.id().unescaped().into()),
            _ => None,
        };
        let resource = match policy.resource_constraint() {
            ResourceConstraint::Any | ResourceConstraint::Is(_) => ResourceScope::Any,
            ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) | ResourceConstraint::IsIn(_, uid) => {
                if uid.type_name() == &names.connection {
                    ResourceScope::Connection(uid.id().unescaped().into())
                } else if uid.type_name() == &names.table {
                    ResourceScope::Table(uid.id().unescaped().into())
                } else {
                    ResourceScope::Any
                }
            }
        };
        Scope { principal, actions, actions_exact, resource, resource_in_connection }
    }

    /// Whether the principal constraint may hold for this caller.
    pub fn may_match_principal(&self, principal: &Principal) -> bool {
        match &self.principal {
            PrincipalScope::Any => true,
            PrincipalScope::Identity(name) => **name == *principal.name,
            PrincipalScope::Group(group) => principal.groups.iter().any(|member_of| **member_of == **group),
        }
    }

    /// Whether the resource constraint may hold for the connection itself or some table in it.
    pub fn may_match_connection(&self, connection: &str) -> bool {
        match &self.resource {
            ResourceScope::Any => true,
            ResourceScope::Connection(name) => **name == *connection,
            ResourceScope::Table(id) => table_connection_candidates(id).any(|candidate| candidate == connection),
        }
    }
}

/// The connection names a table id `"<connection>/<schema>.<table>"` may belong to. Usually one, but neither a
/// connection name nor a schema name is forbidden to contain `/`, so every prefix that ends before a `/` is a
/// candidate; a wrong candidate only costs a policy that is evaluated and does not match.
pub(crate) fn table_connection_candidates(table_id: &str) -> impl Iterator<Item = &str> {
    table_id.match_indices('/').map(move |(index, _)| &table_id[..index])
}

/// The actions `uids` name, and whether that is exact.
fn action_set(uids: &[EntityUid], names: &Names) -> (ActionSet, bool) {
    let mut set = ActionSet::NONE;
    for uid in uids {
        match (uid.type_name() == &names.action_type).then(|| Action::parse(uid.id().unescaped())).flatten() {
            Some(action) => set.insert(action),
            // Not one of ours (strict validation rejects it, so this is belt and braces): assume anything.
            None => return (ActionSet::ALL, false),
        }
    }
    (set, true)
}
