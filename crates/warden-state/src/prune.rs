//! Retention (`[audit] retention`): deleting sessions that ended before a cutoff, and each audit chain's events up to
//! its latest checkpoint before it, in a way `warden_audit::verify` can still check.
//!
//! A pass runs on the writer (so it is ordered with the chain it appends to): it reads every chain's pruning mark from
//! the latest `audit.pruned` event of each chain that a checkpoint of this gateway's key seals, grows the marks to each
//! chain's latest checkpoint before the cutoff, appends an `audit.pruned` event naming them all (`{"before": T,
//! "chains": [{"chain", "through", "head"}, …]}`, cumulative: marks only grow), commits it and a checkpoint that seals
//! it, and only then deletes, in one transaction. Deleting events beyond a mark, or forging a mark, is what `verify`
//! then reports.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::audit::{timestamp, AuditTap, Chain};
use crate::recorder::{AuditRecord, Event};
use crate::{Backend, Recorder, StateError};

/// How often the gateway's pruner runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// How long after the gateway starts the pruner first runs.
pub const PRUNE_FIRST_DELAY: Duration = Duration::from_secs(10);

/// What a pruning pass did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// The cutoff: sessions that ended before it, and audit events up to each chain's last checkpoint before it.
    #[serde(with = "time::serde::rfc3339")]
    pub before: OffsetDateTime,
    /// Whether the pass appended an `audit.pruned` event (it does when it deletes anything new).
    pub recorded: bool,
    pub sessions: u64,
    pub statements: u64,
    /// Every chain with a pruning mark, and what this pass deleted of it (0 when an earlier pass already had).
    pub chains: Vec<PrunedChain>,
}

/// One chain's pruning.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PrunedChain {
    pub chain: String,
    /// Events and checkpoints up to this seq may be gone.
    pub through: u64,
    /// Events deleted by this pass.
    pub events: u64,
    /// Checkpoints deleted by this pass.
    pub checkpoints: u64,
}

/// A pruning pass the writer runs between batches.
pub(crate) struct PruneRequest {
    pub(crate) before: OffsetDateTime,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<PruneReport, StateError>>,
}

/// Runs one pass on the writer's chain: see the module documentation.
pub(crate) async fn run(
    backend: &Backend,
    chain: &mut Chain,
    tap: Option<&Arc<dyn AuditTap>>,
    before: OffsetDateTime,
) -> Result<PruneReport, StateError> {
    let Some(signer) = chain.signer() else { return Err(StateError::PruneUnsigned) };
    let plan = backend.prune_plan(before, signer.as_ref()).await?;
    let recorded = plan.grown || plan.sessions > 0;
    if recorded {
        let chains: Vec<serde_json::Value> = plan
            .marks
            .iter()
            .map(|(chain, mark)| json!({"chain": chain, "through": mark.through, "head": mark.head}))
            .collect();
        let body = json!({"before": timestamp(before), "chains": chains});
        let events = [Event::Audit(AuditRecord::new("audit.pruned", body))];
        let pending = chain.seal(&events);
        backend
            .write_audit(&pending.sealed)
            .await
            .map_err(|source| StateError::Query { operation: "recording a pruning pass", source })?;
        let committed = chain.commit(pending);
        if let Some(tap) = tap {
            tap.committed(&committed);
        }
        // Sealed before anything is deleted: verification counts only a signed mark.
        let checkpoint = chain.checkpoint_due(true).ok_or(StateError::PruneUnsigned)?;
        backend
            .write_checkpoint(&checkpoint)
            .await
            .map_err(|source| StateError::Query { operation: "sealing a pruning pass", source })?;
        chain.checkpointed(&checkpoint);
        if let Some(tap) = tap {
            tap.checkpointed(&checkpoint);
        }
    }
    let pruned = backend
        .prune_delete(before, &plan.marks)
        .await
        .map_err(|source| StateError::Query { operation: "pruning", source })?;
    Ok(PruneReport {
        before,
        recorded,
        sessions: pruned.sessions,
        statements: pruned.statements,
        chains: pruned.chains,
    })
}

/// Now − `retention`; `None` when that is before the earliest time there is (nothing is that old).
pub fn retention_cutoff(retention: Duration) -> Option<OffsetDateTime> {
    OffsetDateTime::now_utc().checked_sub(time::Duration::try_from(retention).ok()?)
}

/// The gateway's pruner: a pass with cutoff now − `retention` [`PRUNE_FIRST_DELAY`] after start and every
/// [`PRUNE_INTERVAL`] after, until `stop` turns true. A failed pass is logged and tried again at the next interval.
pub async fn prune_periodically(recorder: Recorder, retention: Duration, mut stop: watch::Receiver<bool>) {
    let mut wait = PRUNE_FIRST_DELAY;
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = PRUNE_INTERVAL;
        let Some(before) = retention_cutoff(retention) else { continue };
        match recorder.prune(before).await {
            Ok(report) => {
                let events: u64 = report.chains.iter().map(|chain| chain.events).sum();
                tracing::info!(
                    before = %timestamp(before),
                    sessions = report.sessions,
                    statements = report.statements,
                    audit_events = events,
                    "retention: pruned"
                );
            }
            Err(error) => tracing::error!(%error, "retention: pruning failed; trying again at the next interval"),
        }
    }
}
