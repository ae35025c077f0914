//! Just-in-time approval of statements: what happens to a statement whose denial an approver may lift
//! (`@approval` forbids, see [`warden_policy::Policies::approval_needed`]).
//!
//! The guard defers such a statement ([`ApprovalDeferral`]); the relay holds it and asks [`ApprovalDeferral`] to
//! decide. Deciding, in order: a grant in force for the identity covering every action and table the statement
//! needs lets it run; an approved, unused approval of exactly this statement (its fingerprint: the text and the
//! bound parameters) is taken and lets it run; otherwise the pending request for it is found or created, and the
//! connection's mode answers: `fail-fast` refuses at once with the approval id, `hold` tells the client (a notice)
//! and waits for the request to be approved (then takes it and runs), denied, or the wait to pass.
//!
//! Fail closed: when the approval store cannot be read or written, the statement is refused (`58030`) naming why.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sha2::Digest;
use time::OffsetDateTime;
use tracing::warn;
use warden_config::ApprovalMode;
use warden_pg::{Annotation, Deferral, Deferred, DeferredStatement, Notices, StatementRefusal};
use warden_policy::ApprovalNeeded;
use warden_state::{
    timestamp, ApprovalKind, ApprovalRow, ApprovalStatus, Decision, Needed, NewApproval, Recorder, StateStore,
};

/// How often a held statement looks at its request again.
const POLL: Duration = Duration::from_millis(200);

/// What every session's approvals share.
pub(crate) struct Approvals {
    pub(crate) store: StateStore,
    pub(crate) recorder: Recorder,
    /// Where approvers act, for the messages (`http://<admin>`), when the admin API listens.
    pub(crate) admin_url: Option<String>,
    /// New requests to tell `[[approvals.notify]]` about (delivered by [`notify`] on the gateway's runtime).
    pub(crate) notices: Option<tokio::sync::mpsc::UnboundedSender<ApprovalRow>>,
}

impl Approvals {
    /// Hands a new request to the notifier, if any is configured.
    pub(crate) fn requested(&self, approval: &ApprovalRow) {
        if let Some(notices) = &self.notices {
            // The notifier stops only with the gateway.
            let _ = notices.send(approval.clone());
        }
    }
}

/// One configured notification target.
pub(crate) struct Target {
    /// How logs and the audit log name it: `webhook <url>`, or `slack` (its URL holds its token).
    name: String,
    webhook: warden_webhook::Webhook,
    /// Sent a Slack message rather than the signed JSON request.
    slack: bool,
}

/// Attempts per notification before it is given up (each failure logged; the request itself is unaffected).
const NOTIFY_ATTEMPTS: u32 = 4;

/// Builds the notification targets; an unusable one (a URL it cannot send to) stops the gateway at start.
pub(crate) fn notify_targets(
    config: &[warden_config::ApprovalNotify],
) -> Result<Vec<Target>, warden_webhook::WebhookError> {
    config
        .iter()
        .map(|notify| {
            Ok(match notify {
                warden_config::ApprovalNotify::Webhook { url, secret } => {
                    let webhook = warden_webhook::Webhook::new(url, secret.expose().as_bytes())?;
                    Target { name: format!("webhook {}", webhook.url()), webhook, slack: false }
                }
                // Slack checks no signature; the URL holds its token, so it is never shown.
                warden_config::ApprovalNotify::Slack { url } => {
                    let webhook = warden_webhook::Webhook::new(url.expose(), b"")?;
                    Target { name: "slack".to_string(), webhook, slack: true }
                }
            })
        })
        .collect()
}

/// Delivers each new request to every target (JSON signed like the audit webhook; Slack a message with the
/// details and the approve/deny commands and links), retrying with backoff, recording `approval.notified` per
/// target. Runs until `stop`; then the requests already handed over are sent too, and the deliveries in progress
/// get up to `grace` to finish (and be recorded) before they are abandoned, so that the gateway's final flush
/// holds every `approval.notified` of a notification that went out.
pub(crate) async fn notify(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<ApprovalRow>,
    targets: Vec<Target>,
    (recorder, admin_url): (Recorder, Option<String>),
    mut stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    let targets = Arc::new(targets);
    let mut deliveries = tokio::task::JoinSet::new();
    loop {
        let approval = tokio::select! {
            approval = requests.recv() => match approval {
                Some(approval) => approval,
                None => break,
            },
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => continue,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        deliver(&mut deliveries, &targets, &recorder, &admin_url, approval);
    }
    while let Ok(approval) = requests.try_recv() {
        deliver(&mut deliveries, &targets, &recorder, &admin_url, approval);
    }
    let drained = tokio::time::timeout(grace, async { while deliveries.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(unfinished = deliveries.len(), "approval notifications abandoned after the shutdown grace period");
    }
}

/// Starts delivering one request to every target, on `deliveries`.
fn deliver(
    deliveries: &mut tokio::task::JoinSet<()>,
    targets: &Arc<Vec<Target>>,
    recorder: &Recorder,
    admin_url: &Option<String>,
    approval: ApprovalRow,
) {
    for index in 0..targets.len() {
        deliveries.spawn(deliver_to(targets.clone(), index, recorder.clone(), admin_url.clone(), approval.clone()));
    }
}

/// Delivers `approval` to `targets[index]`, retrying with backoff, and records the outcome (`approval.notified`).
async fn deliver_to(
    targets: Arc<Vec<Target>>,
    index: usize,
    recorder: Recorder,
    admin_url: Option<String>,
    approval: ApprovalRow,
) {
    let Target { name, webhook, slack } = &targets[index];
    let body = if *slack {
        slack_body(&approval, admin_url.as_deref())
    } else {
        webhook_body(&approval, admin_url.as_deref())
    };
    let mut backoff = warden_webhook::Backoff::new();
    let mut outcome = Err(String::new());
    for attempt in 1..=NOTIFY_ATTEMPTS {
        let delivery = format!("{}.requested", approval.id);
        match webhook.post(body.clone(), "application/json", &[("x-warden-delivery", &delivery)]).await {
            Ok(()) => {
                outcome = Ok(attempt);
                break;
            }
            Err(error) => {
                let reason = if *slack { slack_error(&error) } else { error.to_string() };
                warn!(
                    approval = %approval.id, target = %name, attempt, error = %reason,
                    "approval notification failed"
                );
                outcome = Err(reason);
                if !error.is_retryable() || attempt == NOTIFY_ATTEMPTS {
                    break;
                }
                tokio::time::sleep(backoff.next_delay(error.retry_after())).await;
            }
        }
    }
    let extra = match &outcome {
        Ok(attempts) => json!({ "target": name, "delivered": true, "attempts": attempts }),
        Err(reason) => json!({ "target": name, "delivered": false, "error": reason }),
    };
    let mut record = warden_state::AuditRecord::new("approval.notified", approval_body(&approval, extra));
    record.session.clone_from(&approval.session_id);
    record.identity = Some(approval.identity.clone());
    record.connection = Some(approval.connection.clone());
    if let Err(error) = recorder.audit_when_room(record).await {
        warn!(approval = %approval.id, %error, "approval notification not recorded in the audit log");
    }
}

/// A Slack URL holds its token: say what failed without it.
fn slack_error(error: &warden_webhook::WebhookError) -> String {
    match error.status() {
        Some(status) => format!("the slack webhook answered {status}"),
        None if error.is_retryable() => "the slack webhook could not be reached".to_string(),
        None => "the slack webhook refused the message".to_string(),
    }
}

fn links(id: &str, admin_url: Option<&str>) -> serde_json::Value {
    match admin_url {
        Some(url) => json!({
            "show": format!("{url}/v1/approvals/{id}"),
            "approve": format!("{url}/v1/approvals/{id}/approve"),
            "deny": format!("{url}/v1/approvals/{id}/deny"),
        }),
        None => serde_json::Value::Null,
    }
}

/// `{"event": "approval.requested", "approval": {…}, "links": {…}, "commands": {…}}`.
fn webhook_body(approval: &ApprovalRow, admin_url: Option<&str>) -> Vec<u8> {
    let body = json!({
        "event": "approval.requested",
        "approval": approval,
        "links": links(&approval.id, admin_url),
        "commands": {
            "approve": format!("warden approvals approve {}", approval.id),
            "deny": format!("warden approvals deny {} --reason \"…\"", approval.id),
        },
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A Slack incoming-webhook message: a summary line, the details, and approve/deny buttons (links to the admin
/// API) with the commands.
fn slack_body(approval: &ApprovalRow, admin_url: Option<&str>) -> Vec<u8> {
    let needs: Vec<String> =
        approval.needed.iter().map(|needed| format!("{} of group {}", needed.approvals, needed.group)).collect();
    let what = match (&approval.statement, &approval.reason) {
        (Some(statement), _) => format!("```{statement}```"),
        (None, Some(reason)) => format!(
            "grant of *{}* on {} for {}s: {reason}",
            approval.action,
            if approval.tables.is_empty() { approval.connection.clone() } else { approval.tables.join(", ") },
            approval.grant_seconds.unwrap_or(0)
        ),
        (None, None) => String::new(),
    };
    let text = format!(
        "warden: *{}* asks for approval {} on connection *{}* (needs {}; expires {})",
        approval.identity,
        approval.id,
        approval.connection,
        needs.join(" and "),
        timestamp(approval.expires_at)
    );
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": what}}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
            "`warden approvals approve {id}` · `warden approvals deny {id} --reason \"…\"`", id = approval.id)}]}),
    ];
    if let Some(url) = admin_url {
        blocks.push(json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Approve"}, "style": "primary",
             "url": format!("{url}/v1/approvals/{}/approve", approval.id)},
            {"type": "button", "text": {"type": "plain_text", "text": "Deny"}, "style": "danger",
             "url": format!("{url}/v1/approvals/{}/deny", approval.id)},
        ]}));
    }
    serde_json::to_vec(&json!({ "text": text, "blocks": blocks })).unwrap_or_default()
}

/// One session's side of approvals: who asks, where, and how the connection answers.
pub(crate) struct SessionApprovals {
    pub(crate) shared: Arc<Approvals>,
    pub(crate) identity: String,
    pub(crate) connection: String,
    pub(crate) run: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) mode: ApprovalMode,
    /// Masks statement texts and parameters kept in approval requests: the connection's masker, or every
    /// built-in detector where the connection does not mask.
    pub(crate) masker: warden_mask::Masker,
}

impl SessionApprovals {
    fn mask(&self, text: &str) -> String {
        self.masker.mask(text).into_owned()
    }
}

/// What is held for an approval, whatever the protocol: a statement (with its parameters) or an HTTP request.
pub(crate) struct Held {
    pub(crate) session: Arc<str>,
    /// As approvers see it, masked.
    pub(crate) text: String,
    /// Masked, as approvers see them.
    pub(crate) parameters: Option<Vec<Option<String>>>,
    /// What a later request must match to use an approval of this one.
    pub(crate) fingerprint: String,
}

/// One (action, tables) check the statement failed and an approval would lift.
#[derive(Debug, Clone)]
pub(crate) struct Lifted {
    pub(crate) action: String,
    pub(crate) tables: Vec<String>,
}

/// A deferred statement's judge: what it needs and what it is recorded with once allowed.
pub(crate) struct ApprovalDeferral {
    pub(crate) session: Arc<SessionApprovals>,
    pub(crate) needed: ApprovalNeeded,
    pub(crate) lifted: Vec<Lifted>,
    /// The forbids the approval lifts.
    pub(crate) policies: Vec<String>,
    /// The decision recorded when the statement runs (allowed; the policies are the approval's).
    pub(crate) decision: Decision,
}

impl Deferral for ApprovalDeferral {
    fn decide(&self, statement: DeferredStatement, notices: Notices) -> Deferred {
        let job = Job {
            session: self.session.clone(),
            needed: self.needed.clone(),
            lifted: self.lifted.clone(),
            policies: self.policies.clone(),
            noun: "statement",
        };
        let decision = self.decision.clone();
        Box::pin(async move {
            let held = job.held_statement(&statement);
            let approval = job.decide(held, &|message| notices.notice("01000", message)).await?;
            let mut decision = decision;
            decision.allowed = true;
            decision.policies = vec![format!("approval:{}", approval.id)];
            Ok(Some(Arc::new(decision) as Annotation))
        })
    }
}

/// Deciding one held request.
pub(crate) struct Job {
    pub(crate) session: Arc<SessionApprovals>,
    pub(crate) needed: ApprovalNeeded,
    pub(crate) lifted: Vec<Lifted>,
    /// The forbids the approval lifts.
    pub(crate) policies: Vec<String>,
    /// `statement` or `request`, in messages.
    pub(crate) noun: &'static str,
}

fn store_failed(error: warden_state::StateError) -> StatementRefusal {
    StatementRefusal {
        code: "58030",
        message: format!("warden cannot reach its approval store, so the request is refused: {error}"),
    }
}

impl Job {
    /// Decides a held request: the approval (or grant) that lets it through, used; or why not. `notify` tells the
    /// client it is being held (a PostgreSQL notice; HTTP has no way to, and ignores it).
    pub(crate) async fn decide(
        &self,
        held: Held,
        notify: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<ApprovalRow, StatementRefusal> {
        let store = &self.session.shared.store;
        let identity = &self.session.identity;
        let connection = &self.session.connection;
        let now = OffsetDateTime::now_utc();
        if let Some(grant) = self.covering_grant(now).await.map_err(store_failed)? {
            self.audit("approval.used", &grant, Some(&held.session), json!({"grant": true})).await;
            return Ok(grant);
        }
        let fingerprint = held.fingerprint.clone();
        if let Some(approval) =
            store.use_statement_approval(identity, connection, &fingerprint, now).await.map_err(store_failed)?
        {
            self.audit("approval.used", &approval, Some(&held.session), json!({})).await;
            return Ok(approval);
        }
        let pending = store.pending_statement_approval(identity, connection, &fingerprint, now).await;
        let request = match pending.map_err(store_failed)? {
            Some(pending) => pending,
            None => {
                let request = self.request(&held, now);
                let created = store.create_approval(request).await.map_err(store_failed)?;
                self.audit("approval.requested", &created, Some(&held.session), json!({})).await;
                self.session.shared.requested(&created);
                created
            }
        };
        let wait = match self.session.mode {
            ApprovalMode::FailFast => {
                return Err(StatementRefusal {
                    code: "42501",
                    message: format!(
                        "{} {}; send the {} again once it is approved",
                        self.needs_text(&request),
                        self.where_to_approve(&request.id),
                        self.noun
                    ),
                })
            }
            ApprovalMode::Hold { wait } => wait,
        };
        notify(&format!(
            "warden: {}; {}; holding the {} for up to {}",
            self.needs_text(&request),
            self.where_to_approve(&request.id),
            self.noun,
            humanize(wait)
        ));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::time::sleep(POLL).await;
            let now = OffsetDateTime::now_utc();
            let current = store.approval(&request.id).await.map_err(store_failed)?;
            let Some(current) = current else {
                return Err(refusal(format!("approval {} disappeared from the store", request.id)));
            };
            match current.status {
                ApprovalStatus::Approved => {
                    let taken = store.use_statement_approval(identity, connection, &fingerprint, now).await;
                    return match taken.map_err(store_failed)? {
                        Some(approval) => {
                            self.audit("approval.used", &approval, Some(&held.session), json!({})).await;
                            Ok(approval)
                        }
                        None => Err(refusal(format!(
                            "approval {} was approved but already used by another {}",
                            request.id, self.noun
                        ))),
                    };
                }
                ApprovalStatus::Denied => {
                    let by = current.votes.iter().find(|vote| !vote.approve);
                    let who = by.map_or_else(|| "an approver".to_string(), |vote| vote.by.clone());
                    let reason = by.and_then(|vote| vote.reason.clone()).map_or(String::new(), |r| format!(": {r}"));
                    return Err(refusal(format!("approval {} was denied by {who}{reason}", request.id)));
                }
                ApprovalStatus::Expired => {
                    return Err(refusal(format!("approval {} expired before anyone decided", request.id)));
                }
                ApprovalStatus::Used => {
                    return Err(refusal(format!("approval {} was already used by another {}", request.id, self.noun)));
                }
                ApprovalStatus::Pending if tokio::time::Instant::now() >= deadline => {
                    return Err(StatementRefusal {
                        code: "57014",
                        message: format!(
                            "approval {} was not decided within {}; it stays pending until {}: send the {} again once \
                             it is approved",
                            request.id,
                            humanize(wait),
                            timestamp(current.expires_at),
                            self.noun
                        ),
                    });
                }
                ApprovalStatus::Pending => {}
            }
        }
    }

    /// A grant in force covering every check the statement failed.
    async fn covering_grant(&self, now: OffsetDateTime) -> Result<Option<ApprovalRow>, warden_state::StateError> {
        let store = &self.session.shared.store;
        let mut found = None;
        for lifted in &self.lifted {
            let grant = store
                .active_grant(&self.session.identity, &self.session.connection, &lifted.action, &lifted.tables, now)
                .await?;
            match grant {
                Some(grant) => found = Some(grant),
                None => return Ok(None),
            }
        }
        Ok(found)
    }

    /// A held PostgreSQL statement: its text and parameters masked, its fingerprint.
    fn held_statement(&self, statement: &DeferredStatement) -> Held {
        let session = &self.session;
        let parameters = statement.parameters.as_ref().map(|parameters| {
            parameters
                .values
                .iter()
                .enumerate()
                .map(|(index, value)| {
                    let binary = match parameters.formats.as_slice() {
                        [] => false,
                        [one] => *one == 1,
                        each => each.get(index) == Some(&1),
                    };
                    value.as_ref().map(|bytes| match (binary, std::str::from_utf8(bytes)) {
                        (false, Ok(text)) => session.mask(text),
                        _ => format!("\\x{}", bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>()),
                    })
                })
                .collect()
        });
        Held {
            session: statement.session.clone(),
            text: session.mask(&statement.text),
            parameters,
            fingerprint: fingerprint(statement),
        }
    }

    fn request(&self, held: &Held, now: OffsetDateTime) -> NewApproval {
        let mut tables: Vec<String> = Vec::new();
        for lifted in &self.lifted {
            for table in &lifted.tables {
                if !tables.contains(table) {
                    tables.push(table.clone());
                }
            }
        }
        let action = self.lifted.iter().map(|lifted| lifted.action.as_str()).collect::<Vec<_>>().join(",");
        NewApproval {
            kind: ApprovalKind::Statement,
            identity: self.session.identity.clone(),
            connection: self.session.connection.clone(),
            action,
            tables,
            statement: Some(held.text.clone()),
            parameters: held.parameters.clone(),
            fingerprint: Some(held.fingerprint.clone()),
            reason: None,
            needed: self
                .needed
                .groups
                .iter()
                .map(|(group, approvals)| Needed { group: group.to_string(), approvals: *approvals })
                .collect(),
            policies: self.policies.clone(),
            session_id: Some(held.session.to_string()),
            requested_at: now,
            expires_at: now + self.needed.ttl,
            grant_seconds: None,
        }
    }

    /// `this statement needs approval apr_… (policy deletes-need-two-dbas; by 2 of group dba; still missing: …)`.
    fn needs_text(&self, request: &ApprovalRow) -> String {
        let outstanding = request.outstanding();
        format!(
            "this {} needs approval {} (policy {}; by {}; still missing: {})",
            self.noun,
            request.id,
            request.policies.join(", "),
            request
                .needed
                .iter()
                .map(|needed| format!("{} of group {}", needed.approvals, needed.group))
                .collect::<Vec<_>>()
                .join(" and "),
            if outstanding.is_empty() { "none".to_string() } else { outstanding.join(", ") }
        )
    }

    fn where_to_approve(&self, id: &str) -> String {
        match &self.session.shared.admin_url {
            Some(url) => {
                format!("an approver runs `warden approvals approve {id}` or POSTs {url}/v1/approvals/{id}/approve")
            }
            None => format!("an approver runs `warden approvals approve {id}`"),
        }
    }

    /// Records an approval event, waiting for room in a full audit queue (the held request waits with it).
    async fn audit(&self, kind: &'static str, approval: &ApprovalRow, session: Option<&str>, extra: serde_json::Value) {
        let mut record = warden_state::AuditRecord::new(kind, approval_body(approval, extra));
        record.session = session.map(str::to_string);
        record.identity = Some(self.session.identity.clone());
        record.connection = Some(self.session.connection.clone());
        record.run.clone_from(&self.session.run);
        record.node.clone_from(&self.session.node);
        if let Err(error) = self.session.shared.recorder.audit_when_room(record).await {
            warn!(approval = %approval.id, %error, "approval event not recorded in the audit log");
        }
    }
}

/// How often pending requests whose time ran out are marked expired.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(5);

/// Marks lapsed requests expired every [`EXPIRY_INTERVAL`] (on whichever replica gets there first: each is
/// expired, and recorded, once) until `stop`.
pub(crate) async fn expire_periodically(shared: Arc<Approvals>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EXPIRY_INTERVAL) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match shared.store.expire_approvals(OffsetDateTime::now_utc()).await {
            Ok(expired) => {
                for approval in expired {
                    let mut record =
                        warden_state::AuditRecord::new("approval.expired", approval_body(&approval, json!({})));
                    record.session.clone_from(&approval.session_id);
                    record.identity = Some(approval.identity.clone());
                    record.connection = Some(approval.connection.clone());
                    if let Err(error) = shared.recorder.audit_when_room(record).await {
                        warn!(approval = %approval.id, %error, "approval expiry not recorded in the audit log");
                    }
                }
            }
            Err(error) => warn!(%error, "cannot expire lapsed approval requests"),
        }
    }
}

/// An approval as the audit log keeps it.
pub(crate) fn approval_body(approval: &ApprovalRow, extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({
        "id": approval.id,
        "kind": approval.kind.as_str(),
        "status": approval.status.as_str(),
        "action": approval.action,
        "tables": approval.tables,
        "statement": approval.statement,
        "parameters": approval.parameters,
        "needed": approval.needed,
        "policies": approval.policies,
        "expires_at": timestamp(approval.expires_at),
        "reason": approval.reason,
    });
    if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

fn refusal(message: String) -> StatementRefusal {
    StatementRefusal { code: "42501", message }
}

/// What an approval of one statement is bound to: SHA-256 over a version tag, the text and each parameter's
/// format and bytes (NULL distinct from empty), hex.
pub(crate) fn fingerprint(statement: &DeferredStatement) -> String {
    let mut hash = sha2::Sha256::new();
    hash.update(b"warden-approval-v1\0");
    hash.update((statement.text.len() as u64).to_be_bytes());
    hash.update(statement.text.as_bytes());
    if let Some(parameters) = &statement.parameters {
        hash.update((parameters.formats.len() as u64).to_be_bytes());
        for format in &parameters.formats {
            hash.update(format.to_be_bytes());
        }
        hash.update((parameters.values.len() as u64).to_be_bytes());
        for value in &parameters.values {
            match value {
                None => hash.update([0u8]),
                Some(bytes) => {
                    hash.update([1u8]);
                    hash.update((bytes.len() as u64).to_be_bytes());
                    hash.update(bytes);
                }
            }
        }
    }
    format!("{:x}", hash.finalize())
}

/// `5m`, `90s`, `1h 30m`.
fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds % 3600 / 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_pg::codec::frontend::BindParameters;

    fn statement(text: &str, values: Option<Vec<Option<&[u8]>>>) -> DeferredStatement {
        DeferredStatement {
            session: Arc::from("s"),
            text: Arc::from(text),
            parameters: values.map(|values| BindParameters {
                formats: Vec::new(),
                values: values.into_iter().map(|value| value.map(<[u8]>::to_vec)).collect(),
            }),
        }
    }

    #[test]
    fn the_fingerprint_binds_text_and_every_parameter() {
        let delete = "DELETE FROM orders WHERE id = $1";
        let seven = fingerprint(&statement(delete, Some(vec![Some(b"7")])));
        assert_eq!(seven, fingerprint(&statement(delete, Some(vec![Some(b"7")]))));
        assert_ne!(seven, fingerprint(&statement(delete, Some(vec![Some(b"8")]))));
        assert_ne!(seven, fingerprint(&statement(delete, Some(vec![None]))));
        assert_ne!(
            fingerprint(&statement(delete, Some(vec![Some(b"")]))),
            fingerprint(&statement(delete, Some(vec![None])))
        );
        assert_ne!(seven, fingerprint(&statement("DELETE FROM orders WHERE id = 7", None)));
        assert_ne!(seven, fingerprint(&statement(delete, None)));
    }

    #[test]
    fn waits_read_as_people_write_them() {
        assert_eq!(humanize(Duration::from_secs(300)), "5m");
        assert_eq!(humanize(Duration::from_secs(90)), "1m 30s");
        assert_eq!(humanize(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(humanize(Duration::from_secs(20)), "20s");
    }
}
