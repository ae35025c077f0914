//! The audit chain the writer appends to: every recorded event, sealed into this gateway's hash chain
//! ([`warden_audit`]) in the same transaction as the session tables, and a signed checkpoint of the chain's head
//! at most every [`CHECKPOINT_INTERVAL`] (and at every flush, and when the writer stops).
//!
//! Each writer (one per gateway process) starts its own chain, with a random id; its first event, `chain.start`,
//! names the latest checkpoint of every chain already in the store, so deleting a whole chain is detected too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use warden_audit::{Body, BodyWriter, Checkpoint, Event as AuditEvent, Sealed, GENESIS};

use crate::recorder::{Event, StatementRecord};

/// The longest a sealed event waits for its checkpoint while the gateway is recording.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Signs checkpoints: the gateway's Ed25519 key.
pub trait AuditSigner: Send + Sync {
    /// The key's id (first 8 bytes of the SHA-256 of the public key, hex).
    fn key_id(&self) -> &str;
    fn sign(&self, message: &[u8]) -> [u8; 64];
}

/// Receives what the writer committed to the audit log, in order: the sealed events of each batch, and each
/// checkpoint. Called on the writer's task: it must not block (hand the records to a bounded queue).
pub trait AuditTap: Send + Sync {
    fn committed(&self, events: &[Sealed]);
    fn checkpointed(&self, checkpoint: &Checkpoint);
}

/// Who a session is, kept from its start for the events that follow it.
#[derive(Clone, Default)]
struct Labels {
    identity: Option<String>,
    connection: Option<String>,
    run: Option<String>,
    node: Option<String>,
}

/// The chain as of the last committed batch.
#[derive(Clone)]
struct Head {
    seq: u64,
    hash: [u8; 32],
}

pub(crate) struct Chain {
    id: String,
    head: Head,
    /// Checkpoints of other chains when this one started; written into its `chain.start`.
    previous: Vec<Checkpoint>,
    sessions: HashMap<String, Labels>,
    signer: Option<Arc<dyn AuditSigner>>,
    sealed_through: u64,
    last_checkpoint: Instant,
}

/// A batch sealed but not yet committed: commit it with [`Chain::commit`] once stored.
pub(crate) struct Pending {
    pub(crate) sealed: Vec<Sealed>,
    head: Head,
    sessions: Vec<(String, Option<Labels>)>,
}

/// `at` as RFC 3339 in UTC, as the audit log and approvals show instants.
pub fn timestamp(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_else(|_| at.unix_timestamp().to_string())
}

impl Chain {
    pub(crate) fn new(signer: Option<Arc<dyn AuditSigner>>) -> Chain {
        let random: [u8; 6] = rand::random();
        Chain {
            id: format!("gw-{}", hex::encode(random)),
            head: Head { seq: 0, hash: GENESIS },
            previous: Vec::new(),
            sessions: HashMap::new(),
            signer,
            sealed_through: 0,
            last_checkpoint: Instant::now(),
        }
    }

    /// The other chains' latest checkpoints, named by this chain's first event.
    pub(crate) fn set_previous(&mut self, previous: Vec<Checkpoint>) {
        self.previous = previous;
    }

    /// Seals `events` after the committed head, without moving it.
    pub(crate) fn seal(&self, events: &[Event]) -> Pending {
        let mut head = self.head.clone();
        let mut sealed = Vec::new();
        let mut sessions: Vec<(String, Option<Labels>)> = Vec::new();
        let mut local: HashMap<&str, Option<Labels>> = HashMap::new();
        let mut push = |head: &mut Head, event: AuditEvent| {
            let event = AuditEvent { seq: head.seq + 1, ..event };
            let (item, hash) = Sealed::chain(&head.hash, event);
            head.seq += 1;
            head.hash = hash;
            sealed.push(item);
        };
        if head.seq == 0 && events.iter().any(|event| !matches!(event, Event::Flush(_) | Event::Durable(_))) {
            let previous: Vec<_> = self
                .previous
                .iter()
                .map(|checkpoint| json!({"chain": checkpoint.chain, "seq": checkpoint.seq, "head": checkpoint.head}))
                .collect();
            let body = json!({"previous": previous, "version": env!("CARGO_PKG_VERSION")}).into();
            push(&mut head, self.event("chain.start", OffsetDateTime::now_utc(), None, &Labels::default(), body));
        }
        for event in events {
            let labels_of = |id: &str, local: &HashMap<&str, Option<Labels>>| -> Labels {
                match local.get(id) {
                    Some(Some(labels)) => labels.clone(),
                    Some(None) => Labels::default(),
                    None => self.sessions.get(id).cloned().unwrap_or_default(),
                }
            };
            let audit = match event {
                Event::Flush(_) | Event::Durable(_) => continue,
                Event::Prune(_) => continue,
                Event::Audit(record) => AuditEvent {
                    chain: self.id.clone(),
                    seq: 0,
                    at: timestamp(record.at),
                    kind: record.kind.to_string(),
                    session: record.session.clone(),
                    identity: record.identity.clone(),
                    connection: record.connection.clone(),
                    run: record.run.clone(),
                    node: record.node.clone(),
                    body: Body::encode(&record.body),
                },
                Event::Started(start) => {
                    let labels = Labels {
                        identity: Some(start.identity.clone()),
                        connection: Some(start.connection.clone()),
                        run: start.run.clone(),
                        node: start.node.clone(),
                    };
                    local.insert(&start.id, Some(labels.clone()));
                    sessions.push((start.id.clone(), Some(labels.clone())));
                    let mut body = BodyWriter::new();
                    body.optional_string("application_name", start.application_name.as_deref())
                        .string("client_address", &start.client_address)
                        .optional_string("credential", start.credential.as_deref())
                        .optional_string("token_id", start.token_id.as_deref())
                        .string("user_name", &start.user_name);
                    self.event("session.start", start.started_at, Some(&start.id), &labels, body.finish())
                }
                Event::Statement(record) => {
                    let labels = labels_of(&record.session_id, &local);
                    self.event(
                        "statement",
                        record.started_at,
                        Some(&record.session_id),
                        &labels,
                        statement_body(record),
                    )
                }
                Event::Ended(end) => {
                    let labels = labels_of(&end.id, &local);
                    local.insert(&end.id, None);
                    sessions.push((end.id.clone(), None));
                    let mut body = BodyWriter::new();
                    body.optional_string("reason", end.end_reason.as_deref());
                    self.event("session.end", end.ended_at, Some(&end.id), &labels, body.finish())
                }
                Event::Masked(masked) => {
                    let labels = labels_of(&masked.id, &local);
                    let counts: serde_json::Value = masked
                        .masked
                        .as_deref()
                        .and_then(|text| serde_json::from_str(text).ok())
                        .unwrap_or_else(|| json!({}));
                    let body = json!({"masked": counts}).into();
                    self.event("session.masked", OffsetDateTime::now_utc(), Some(&masked.id), &labels, body)
                }
            };
            push(&mut head, audit);
        }
        Pending { sealed, head, sessions }
    }

    fn event(&self, kind: &str, at: OffsetDateTime, session: Option<&str>, labels: &Labels, body: Body) -> AuditEvent {
        AuditEvent {
            chain: self.id.clone(),
            seq: 0,
            at: timestamp(at),
            kind: kind.to_string(),
            session: session.map(str::to_string),
            identity: labels.identity.clone(),
            connection: labels.connection.clone(),
            run: labels.run.clone(),
            node: labels.node.clone(),
            body,
        }
    }

    /// Moves the head past a stored batch; returns its sealed events.
    pub(crate) fn commit(&mut self, pending: Pending) -> Vec<Sealed> {
        self.head = pending.head;
        for (id, labels) in pending.sessions {
            match labels {
                Some(labels) => self.sessions.insert(id, labels),
                None => self.sessions.remove(&id),
            };
        }
        pending.sealed
    }

    /// A signed checkpoint of the head, when one is due (`now`: a flush or the writer stopping asks for it
    /// regardless of the interval) and there is something new to seal.
    pub(crate) fn checkpoint_due(&self, now: bool) -> Option<Checkpoint> {
        let signer = self.signer.as_ref()?;
        if self.head.seq <= self.sealed_through || (!now && self.last_checkpoint.elapsed() < CHECKPOINT_INTERVAL) {
            return None;
        }
        let head = hex::encode(self.head.hash);
        let at = timestamp(OffsetDateTime::now_utc());
        Some(warden_audit::sign_checkpoint(&self.id, self.head.seq, &head, &at, signer.key_id(), |message| {
            signer.sign(message)
        }))
    }

    /// Records that `checkpoint` is stored.
    pub(crate) fn checkpointed(&mut self, checkpoint: &Checkpoint) {
        self.sealed_through = checkpoint.seq;
        self.last_checkpoint = Instant::now();
    }

    /// The key that signs this chain's checkpoints, if any.
    pub(crate) fn signer(&self) -> Option<Arc<dyn AuditSigner>> {
        self.signer.clone()
    }

    /// Events sealed but not yet under a checkpoint.
    pub(crate) fn unsealed(&self) -> u64 {
        self.head.seq - self.sealed_through
    }
}

/// A statement's body, written straight into its canonical text: its decision, duration, error, the HTTP exchange
/// (HTTP requests only), the result sample, rows, seq and text.
fn statement_body(record: &StatementRecord) -> Body {
    let mut body = BodyWriter::new();
    match &record.decision {
        Some(decision) => body.object("decision", |object| {
            object
                .bool("allowed", decision.allowed)
                .strings("classes", &decision.classes)
                .strings("policies", &decision.policies)
                .strings("tables", &decision.tables);
        }),
        None => body.value("decision", None),
    };
    body.number("duration_us", u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX))
        .optional_string("error", record.error.as_deref());
    if let Some(http) = &record.http {
        body.value("http", Some(http));
    }
    body.body("result", record.result.as_ref())
        .optional_number("rows", record.rows)
        .number("seq", record.seq)
        .string("text", &record.text);
    body.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::statement_body;
    use crate::recorder::StatementRecord;
    use crate::{Decision, Tokens};

    /// The body as it was built before bodies were written directly: a `Value` tree, then encoded.
    fn from_tree(record: &StatementRecord) -> warden_audit::Body {
        let decision = record.decision.as_ref().map(|decision| {
            json!({
                "allowed": decision.allowed,
                "classes": decision.classes,
                "tables": decision.tables,
                "policies": decision.policies,
            })
        });
        let mut body = json!({
            "seq": record.seq,
            "text": &*record.text,
            "rows": record.rows,
            "error": record.error,
            "duration_us": u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX),
            "decision": decision,
            "result": record.result.clone(),
        });
        if let Some(http) = &record.http {
            body["http"] = http.clone();
        }
        body.into()
    }

    #[test]
    fn a_statement_body_hashes_as_its_value_tree_did() {
        let plain = StatementRecord {
            duration: Duration::from_micros(1234),
            rows: None,
            ..crate::tests::statement("ses_1", 3, "SELECT \"é\"\n FROM t WHERE a = '\\'")
        };
        let judged = StatementRecord {
            rows: Some(2),
            error: Some("relation \"t\" does not exist".into()),
            decision: Some(Arc::new(Decision::new(
                false,
                vec!["read".into(), "write".into()],
                vec!["public.t".into()],
                vec!["no-writes".into()],
            ))),
            result: Some(json!({"cut": 2, "sets": [{"columns": ["email", "id"], "rows": [["a@b.c", null]]}]}).into()),
            http: Some(
                json!({"method": "POST", "status": 200, "path": "/v1/chat", "usage": {"output": 3, "input": 9}}),
            ),
            model: Some("gpt-4o-mini".into()),
            tokens: Some(Tokens { input: 9, output: 3 }),
            ..plain.clone()
        };
        for record in [&plain, &judged] {
            let written = statement_body(record);
            assert_eq!(written.canonical(), from_tree(record).canonical());
            assert_eq!(*written, *from_tree(record));
        }
    }
}
