//! Rate limits and token budgets of LLM connections (`[connection.limits]`), per connection and identity:
//! requests and tokens per sliding minute, and tokens per budget period (fixed windows aligned to the Unix epoch,
//! so every replica agrees where a day starts), from the usage providers report. A request is admitted while its
//! identity is under every limit, and the one that crosses a limit is the last.
//!
//! Rates are counted in this gateway's memory, exactly, and shared with the other replicas of the state store through
//! its `rate_counts` table ([`Limits::sync`], every [`RATE_SYNC`]): each replica adds what it counted per five-second
//! slot and reads what the others counted in the slots of the last minute, which admission adds to its own count (the
//! slot the minute began in counted whole, so a shared limit errs on the side of refusing by up to a slot). Together,
//! replicas can overshoot a rate by what the others admit in about [`RATE_SYNC`].
//!
//! Budgets are counted in the state store, where every gateway records
//! each request's tokens, so they survive a restart and are shared by replicas: [`Limits::refresh`] reads each
//! identity's tokens of the current window from the store (once before the first request, then every
//! [`BUDGET_REFRESH`]), and a budget's use is what the store held at the last refresh plus what this gateway counted
//! since. [`Limits::admit`] never touches the store: it reads the counts under a lock. What other replicas spend
//! reaches this one at its next refresh, so together they can overshoot a budget by what they spend in about
//! [`BUDGET_REFRESH`]; a single gateway cannot (it counts its own at once).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use time::OffsetDateTime;
use warden_config::LlmLimits;
use warden_http::LimitRefusal;
use warden_state::{Recorder, StateError, StateStore};

const MINUTE: Duration = Duration::from_secs(60);

/// How often budgets are brought up to date from the state store.
pub(crate) const BUDGET_REFRESH: Duration = Duration::from_secs(10);

/// How often rate counts are exchanged with the other replicas through the state store.
pub(crate) const RATE_SYNC: Duration = Duration::from_secs(1);

/// The length of a rate count's slot, in seconds.
const SLOT_SECONDS: i64 = 5;

/// The slots a minute touches besides the current one.
const MINUTE_SLOTS: i64 = 60 / SLOT_SECONDS;

/// How many syncs go by between deletions of old slots.
const PRUNE_EVERY: u32 = 60;

#[derive(Default)]
pub(crate) struct Limits {
    by_connection: HashMap<String, LlmLimits>,
    counters: Mutex<HashMap<(String, String), Counter>>,
    /// This gateway in `rate_counts` (random, per process).
    replica: String,
}

#[derive(Default)]
struct Counter {
    /// Request arrivals in the last minute.
    requests: VecDeque<Instant>,
    /// Tokens used in the last minute, by when they were reported.
    tokens: VecDeque<(Instant, u64)>,
    budget: Budget,
    /// What the other replicas counted, per slot, as of the last sync.
    others: Vec<Slot>,
    /// What this gateway counted per slot since it last added its counts to the store.
    unsynced: Vec<Slot>,
}

/// Requests and tokens counted in one slot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Slot {
    slot: i64,
    requests: u64,
    tokens: u64,
}

/// The tokens an identity used on a connection in one budget window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Budget {
    /// The window (its index since the epoch) the counts are of.
    window: u64,
    /// What the state store held for the window at the last refresh: every gateway's requests, this one's included.
    stored: u64,
    /// Counted here before the refresh under way began: in the store by the time it reads (the refresh waits for
    /// this gateway's records to be committed first), and counted here until it has read.
    refreshing: u64,
    /// Counted here since the last refresh began. Those that finished while it read may be in what it read too:
    /// counted twice until the next refresh, never missed.
    local: u64,
}

impl Budget {
    fn used(&self) -> u64 {
        self.stored.saturating_add(self.refreshing).saturating_add(self.local)
    }
}

impl Limits {
    pub(crate) fn new(config: &warden_config::Config) -> Limits {
        let by_connection = config
            .connections
            .iter()
            .filter_map(|connection| Some((connection.name.clone(), connection.http()?.limits.clone())))
            .filter(|(_, limits)| *limits != LlmLimits::default())
            .collect();
        Limits {
            by_connection,
            counters: Mutex::new(HashMap::new()),
            replica: format!("rpl_{:016x}", rand::random::<u64>()),
        }
    }

    /// Whether `connection` limits tokens: a budget or `tokens_per_minute`.
    pub(crate) fn limits_tokens(&self, connection: &str) -> bool {
        self.by_connection
            .get(connection)
            .is_some_and(|limits| limits.budget.is_some() || limits.tokens_per_minute.is_some())
    }

    /// Whether a connection has a token budget (and so needs [`Limits::refresh`]).
    pub(crate) fn has_budgets(&self) -> bool {
        self.by_connection.values().any(|limits| limits.budget.is_some())
    }

    /// Whether a connection has a rate limit (and so needs [`Limits::sync`]).
    pub(crate) fn has_rates(&self) -> bool {
        self.by_connection.values().any(rated)
    }

    /// Adds what this gateway counted since the last sync to the store, then reads what the other replicas counted
    /// in the last minute. On an error, the counts not added are kept for the next sync, and what was read before
    /// stays.
    pub(crate) async fn sync(&self, store: &StateStore) -> Result<(), StateError> {
        let counts = self.take_unsynced();
        if let Err(error) = store.add_rate_counts(&self.replica, &counts).await {
            self.restore_unsynced(counts);
            return Err(error);
        }
        let since = slot_now() - MINUTE_SLOTS;
        for (connection, _) in self.by_connection.iter().filter(|(_, limits)| rated(limits)) {
            let others = store.rate_counts_of_others(&self.replica, connection, since).await?;
            self.set_others(connection, others);
        }
        Ok(())
    }

    fn take_unsynced(&self) -> Vec<warden_state::RateCount> {
        let mut counters = self.counters.lock();
        let mut counts = Vec::new();
        for ((connection, identity), counter) in counters.iter_mut() {
            for slot in counter.unsynced.drain(..) {
                counts.push(warden_state::RateCount {
                    connection: connection.clone(),
                    identity: identity.clone(),
                    slot: slot.slot,
                    requests: slot.requests,
                    tokens: slot.tokens,
                });
            }
        }
        counts
    }

    fn restore_unsynced(&self, counts: Vec<warden_state::RateCount>) {
        let mut counters = self.counters.lock();
        // Counts no replica will look at any more are let go.
        let since = slot_now() - MINUTE_SLOTS;
        for count in counts.into_iter().filter(|count| count.slot >= since) {
            let counter = counters.entry((count.connection, count.identity)).or_default();
            add(&mut counter.unsynced, Slot { slot: count.slot, requests: count.requests, tokens: count.tokens });
        }
    }

    /// Takes what the other replicas counted on `connection` (per identity and slot); an identity absent counted
    /// nothing there.
    fn set_others(&self, connection: &str, others: Vec<warden_state::RateCount>) {
        let mut counters = self.counters.lock();
        for ((name, _), counter) in counters.iter_mut() {
            if name == connection {
                counter.others.clear();
            }
        }
        for count in others {
            let counter = counters.entry((connection.to_string(), count.identity)).or_default();
            add(&mut counter.others, Slot { slot: count.slot, requests: count.requests, tokens: count.tokens });
        }
    }

    /// Brings every budget's count up to date from the state store: for each connection with a budget, the tokens
    /// each identity used in the current window, through any gateway, plus what this gateway counted since the
    /// refresh began. Waits for this gateway's own records to be committed first (`recorder`), so its requests are
    /// neither missed nor, mostly, counted twice. On an error the counts stay as they were, local counting goes on,
    /// and the next refresh catches up.
    pub(crate) async fn refresh(&self, store: &StateStore, recorder: &Recorder) -> Result<(), StateError> {
        let windows = self.begin_refresh();
        if windows.is_empty() {
            return Ok(());
        }
        recorder.durable().await?;
        for (connection, window, since) in windows {
            let stored = store.tokens_used_by_identity(&connection, since).await?;
            self.stored(&connection, window, stored);
        }
        Ok(())
    }

    /// The current budget window of each connection with a budget (connection, window, its start); what each
    /// identity counted here in it so far moves from `local` to `refreshing`.
    fn begin_refresh(&self) -> Vec<(String, u64, OffsetDateTime)> {
        let windows: Vec<(String, u64, OffsetDateTime)> = self
            .by_connection
            .iter()
            .filter_map(|(connection, limits)| {
                let period = limits.budget.as_ref()?.per;
                let (window, _) = budget_window(period);
                Some((connection.clone(), window, window_start(window, period)))
            })
            .collect();
        let mut counters = self.counters.lock();
        for ((connection, _), counter) in counters.iter_mut() {
            let current = windows.iter().find(|(name, _, _)| name == connection).map(|(_, window, _)| *window);
            if current == Some(counter.budget.window) {
                counter.budget.refreshing = counter.budget.refreshing.saturating_add(counter.budget.local);
                counter.budget.local = 0;
            }
        }
        windows
    }

    /// Takes what the store holds for `connection`'s budget window `window`, per identity (absent: none).
    fn stored(&self, connection: &str, window: u64, mut stored: HashMap<String, u64>) {
        let mut counters = self.counters.lock();
        for ((name, identity), counter) in counters.iter_mut() {
            // A counter of another window keeps its counts: an earlier one is replaced below if the store has
            // tokens of this window for its identity, a later one (the window turned during the refresh) is current.
            if name != connection || counter.budget.window != window {
                continue;
            }
            counter.budget.stored = stored.remove(identity).unwrap_or(0);
            counter.budget.refreshing = 0;
        }
        // Identities this gateway has not seen in this window: what other gateways (or this one before a restart)
        // counted.
        for (identity, tokens) in stored {
            let counter = counters.entry((connection.to_string(), identity)).or_default();
            if counter.budget.window < window {
                counter.budget = Budget { window, stored: tokens, ..Budget::default() };
            }
        }
    }

    /// Admits a request of `identity` on `connection` now, counting it, or says which limit stops it and when to
    /// try again.
    pub(crate) fn admit(&self, connection: &str, identity: &str, now: Instant) -> Result<(), LimitRefusal> {
        let Some(limits) = self.by_connection.get(connection) else { return Ok(()) };
        let mut counters = self.counters.lock();
        let counter = counters.entry((connection.to_string(), identity.to_string())).or_default();
        counter.expire(now);
        let (slot, into_slot) = wall_slot();
        counter.others.retain(|others| others.slot >= slot - MINUTE_SLOTS);
        // When a refused request may try again: when the oldest of what it counted leaves the minute, its own
        // (`own`) or the oldest of the others' slots.
        let retry = |own: Option<Duration>, others: &[Slot]| {
            let others = others.iter().map(|others| others.slot).min().map(|oldest| {
                let leaves = Duration::from_secs(((oldest - slot + MINUTE_SLOTS + 1) * SLOT_SECONDS) as u64);
                leaves.saturating_sub(into_slot)
            });
            match (own, others) {
                (Some(own), Some(others)) => own.min(others),
                (own, others) => own.or(others).unwrap_or(MINUTE),
            }
        };
        if let Some(budget) = &limits.budget {
            let (window, window_end) = budget_window(budget.per);
            if counter.budget.window == window && counter.budget.used() >= budget.tokens {
                return Err(LimitRefusal {
                    limit: "budget",
                    message: format!(
                        "{identity} used {} of its {} tokens per {} on connection \"{connection}\" (limits.budget)",
                        counter.budget.used(),
                        budget.tokens,
                        humanize(budget.per)
                    ),
                    retry_after: window_end,
                });
            }
        }
        if let Some(limit) = limits.tokens_per_minute {
            let own: u64 = counter.tokens.iter().map(|(_, tokens)| tokens).sum();
            let used = own.saturating_add(counter.others.iter().map(|others| others.tokens).sum());
            if used >= limit {
                let own_leave = counter.tokens.front().map(|(at, _)| (*at + MINUTE).saturating_duration_since(now));
                return Err(LimitRefusal {
                    limit: "tokens_per_minute",
                    message: format!(
                        "{identity} used {used} tokens in the last minute on connection \"{connection}\"; the limit \
                         is {limit} (limits.tokens_per_minute)"
                    ),
                    retry_after: retry(own_leave, &counter.others),
                });
            }
        }
        if let Some(limit) = limits.requests_per_minute {
            let others: u64 = counter.others.iter().map(|others| others.requests).sum();
            let sent = (counter.requests.len() as u64).saturating_add(others);
            if sent >= u64::from(limit) {
                let own_leave = counter.requests.front().map(|at| (*at + MINUTE).saturating_duration_since(now));
                return Err(LimitRefusal {
                    limit: "requests_per_minute",
                    message: format!(
                        "{identity} sent {sent} requests in the last minute on connection \"{connection}\"; the limit \
                         is {limit} (limits.requests_per_minute)"
                    ),
                    retry_after: retry(own_leave, &counter.others),
                });
            }
            counter.requests.push_back(now);
            add(&mut counter.unsynced, Slot { slot, requests: 1, tokens: 0 });
        }
        Ok(())
    }

    /// Counts `tokens` a request of `identity` used on `connection`.
    pub(crate) fn used(&self, connection: &str, identity: &str, tokens: u64, now: Instant) {
        let Some(limits) = self.by_connection.get(connection) else { return };
        let mut counters = self.counters.lock();
        let counter = counters.entry((connection.to_string(), identity.to_string())).or_default();
        counter.expire(now);
        if limits.tokens_per_minute.is_some() {
            counter.tokens.push_back((now, tokens));
            add(&mut counter.unsynced, Slot { slot: wall_slot().0, requests: 0, tokens });
        }
        if let Some(budget) = &limits.budget {
            let (window, _) = budget_window(budget.per);
            if counter.budget.window != window {
                counter.budget = Budget { window, ..Budget::default() };
            }
            counter.budget.local = counter.budget.local.saturating_add(tokens);
        }
    }
}

impl Counter {
    fn expire(&mut self, now: Instant) {
        while self.requests.front().is_some_and(|at| now.saturating_duration_since(*at) >= MINUTE) {
            self.requests.pop_front();
        }
        while self.tokens.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= MINUTE) {
            self.tokens.pop_front();
        }
    }
}

/// Whether `limits` has a rate limit (requests or tokens per minute).
fn rated(limits: &LlmLimits) -> bool {
    limits.requests_per_minute.is_some() || limits.tokens_per_minute.is_some()
}

/// Adds `counted` to its slot in `slots` (kept in slot order, as counts come).
fn add(slots: &mut Vec<Slot>, counted: Slot) {
    match slots.iter_mut().rev().find(|slot| slot.slot == counted.slot) {
        Some(slot) => {
            slot.requests = slot.requests.saturating_add(counted.requests);
            slot.tokens = slot.tokens.saturating_add(counted.tokens);
        }
        None => slots.push(counted),
    }
}

/// The current rate slot (since the Unix epoch), and how far into it the clock is.
fn wall_slot() -> (i64, Duration) {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seconds = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let into = Duration::from_secs((seconds % SLOT_SECONDS) as u64)
        + Duration::from_nanos(u64::from(since_epoch.subsec_nanos()));
    (seconds / SLOT_SECONDS, into)
}

fn slot_now() -> i64 {
    wall_slot().0
}

/// Exchanges rate counts with the other replicas every [`RATE_SYNC`] until `stop` (then once more, so that what
/// this gateway counted last is not lost to them), deleting slots older than two minutes now and then.
pub(crate) async fn sync_periodically(
    limits: std::sync::Arc<Limits>,
    store: StateStore,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(RATE_SYNC);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut ticks = 0u32;
    loop {
        let stopping = tokio::select! {
            _ = interval.tick() => false,
            _ = stop.wait_for(|stop| *stop) => true,
        };
        ticks = ticks.wrapping_add(1);
        let mut result = limits.sync(&store).await;
        if result.is_ok() && ticks.is_multiple_of(PRUNE_EVERY) {
            result = store.prune_rate_counts(slot_now() - 2 * MINUTE_SLOTS).await.map(drop);
        }
        let what = "cannot share rate counts through the state store; counting this gateway's requests until it can";
        report(result, &mut failing, what);
        if stopping {
            return;
        }
    }
}

/// The current budget window's index since the Unix epoch, and the time left in it.
fn budget_window(period: Duration) -> (u64, Duration) {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let period_ms = period.as_millis().max(1);
    let now_ms = since_epoch.as_millis();
    let window = now_ms / period_ms;
    let left = period_ms - now_ms % period_ms;
    (u64::try_from(window).unwrap_or(u64::MAX), Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX)))
}

/// When budget window `window` of `period` began.
fn window_start(window: u64, period: Duration) -> OffsetDateTime {
    let period_ms = period.as_millis().max(1);
    let start_ns = i128::from(window).saturating_mul(i128::try_from(period_ms).unwrap_or(i128::MAX)) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(start_ns).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Refreshes the budgets from the state store every [`BUDGET_REFRESH`] until `stop`.
pub(crate) async fn refresh_periodically(
    limits: std::sync::Arc<Limits>,
    store: StateStore,
    recorder: Recorder,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + BUDGET_REFRESH, BUDGET_REFRESH);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let what = "cannot refresh token budgets from the state store; counting this gateway's requests until it can";
        report(limits.refresh(&store, &recorder).await, &mut failing, what);
    }
}

/// Warns of the first failure of a run (`what`, with the error); a success ends the run.
fn report(result: Result<(), StateError>, failing: &mut bool, what: &str) {
    match result {
        Ok(()) => *failing = false,
        Err(error) if !*failing => {
            *failing = true;
            tracing::warn!(%error, "{what}");
        }
        Err(_) => {}
    }
}

fn humanize(period: Duration) -> String {
    let seconds = period.as_secs();
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use warden_config::TokenBudget;
    use warden_state::{SessionStart, StatementRecord, Tokens};

    /// A budget period no test run straddles the end of.
    const DECADE: Duration = Duration::from_secs(86_400 * 3650);

    fn budget(tokens: u64) -> Limits {
        limits(LlmLimits { budget: Some(TokenBudget { tokens, per: DECADE }), ..LlmLimits::default() })
    }

    /// What `identity` used of its budget on `llm`, as admission sees it.
    fn used(limits: &Limits, identity: &str) -> u64 {
        limits
            .counters
            .lock()
            .get(&("llm".to_string(), identity.to_string()))
            .map_or(0, |counter| counter.budget.used())
    }

    async fn sqlite_store(directory: &std::path::Path) -> StateStore {
        let url = format!("sqlite://{}", directory.join("warden.db").display());
        StateStore::open(&url).await.expect("open the store")
    }

    /// Records, as a gateway does, one request of `identity` on `llm` that used `tokens`, and waits for it to be stored.
    async fn record_request(recorder: &Recorder, identity: &str, tokens: u64) {
        let id = format!("{identity}-{}", rand::random::<u64>());
        let now = OffsetDateTime::now_utc();
        recorder
            .session_started(SessionStart {
                id: id.clone(),
                identity: identity.to_string(),
                connection: "llm".to_string(),
                client_address: "127.0.0.1:50000".to_string(),
                user_name: identity.to_string(),
                application_name: None,
                started_at: now,
                credential: Some("api_key".to_string()),
                token_id: None,
                run: None,
                node: None,
            })
            .expect("queue");
        recorder
            .statement(StatementRecord {
                session_id: Arc::from(id.as_str()),
                seq: 1,
                started_at: now,
                duration: Duration::from_millis(5),
                text: Arc::from("POST /v1/chat/completions"),
                rows: None,
                error: None,
                decision: None,
                result: None,
                http: None,
                model: Some("gpt-4o-mini".to_string()),
                tokens: Some(Tokens { input: 1, output: tokens - 1 }),
                batch: None,
            })
            .expect("queue");
        recorder.flush().await.expect("stored");
    }

    #[tokio::test]
    async fn a_budget_is_seeded_from_the_store_so_it_survives_a_restart() {
        let directory = tempfile::tempdir().expect("temp dir");
        let store = sqlite_store(directory.path()).await;
        // The gateway before the restart recorded 120 tokens of the agent.
        record_request(&store.recorder(16), "agent", 120).await;
        // After it: nothing counted here yet, so admitted until the budgets are read.
        let limits = budget(100);
        let now = Instant::now();
        assert!(limits.admit("llm", "agent", now).is_ok());
        limits.refresh(&store, &store.recorder(16)).await.expect("refresh");
        let refused = limits.admit("llm", "agent", now).expect_err("over budget after the restart");
        assert_eq!(refused.limit, "budget");
        assert!(refused.message.contains("used 120 of its 100 tokens per 3650d"), "{}", refused.message);
        assert!(limits.admit("llm", "someone-else", now).is_ok());
    }

    #[tokio::test]
    async fn replicas_share_a_budget_through_the_store() {
        let directory = tempfile::tempdir().expect("temp dir");
        let store = sqlite_store(directory.path()).await;
        let (first, second) = (budget(100), budget(100));
        let (first_recorder, second_recorder) = (store.recorder(16), store.recorder(16));
        let now = Instant::now();
        assert!(first.admit("llm", "agent", now).is_ok());
        first.used("llm", "agent", 60, now);
        record_request(&first_recorder, "agent", 60).await;
        assert_eq!((used(&first, "agent"), used(&second, "agent")), (60, 0));
        // The second replica learns of it at its refresh, and counts its own request at once.
        second.refresh(&store, &second_recorder).await.expect("refresh");
        assert_eq!(used(&second, "agent"), 60);
        assert!(second.admit("llm", "agent", now).is_ok());
        second.used("llm", "agent", 30, now);
        record_request(&second_recorder, "agent", 30).await;
        assert_eq!(used(&second, "agent"), 90);
        // The first one's refresh reads both requests, its own counted once.
        first.refresh(&store, &first_recorder).await.expect("refresh");
        assert_eq!(used(&first, "agent"), 90);
        assert!(first.admit("llm", "agent", now).is_ok());
        first.used("llm", "agent", 20, now);
        record_request(&first_recorder, "agent", 20).await;
        assert!(first.admit("llm", "agent", now).expect_err("over").message.contains("used 110 of its 100"));
        second.refresh(&store, &second_recorder).await.expect("refresh");
        assert!(second.admit("llm", "agent", now).expect_err("over").message.contains("used 110 of its 100"));
        assert_eq!(store.tokens_used("llm", "agent", OffsetDateTime::UNIX_EPOCH).await.expect("read"), 110);
    }

    #[tokio::test]
    async fn replicas_share_a_rate_limit_through_the_store() {
        let directory = tempfile::tempdir().expect("temp dir");
        let store = sqlite_store(directory.path()).await;
        let rates = LlmLimits { requests_per_minute: Some(3), tokens_per_minute: Some(100), ..LlmLimits::default() };
        let (first, second) = (limits(rates.clone()), limits(rates));
        let now = Instant::now();
        assert!(first.admit("llm", "agent", now).is_ok());
        assert!(first.admit("llm", "agent", now).is_ok());
        // Before the replicas exchange their counts, each sees only its own.
        assert!(second.admit("llm", "agent", now).is_ok());
        first.sync(&store).await.expect("sync");
        second.sync(&store).await.expect("sync");
        let refused = second.admit("llm", "agent", now).expect_err("three in the minute, across replicas");
        assert_eq!(refused.limit, "requests_per_minute");
        assert!(refused.message.contains("sent 3 requests in the last minute"), "{}", refused.message);
        assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= MINUTE + Duration::from_secs(5));
        first.sync(&store).await.expect("sync");
        assert!(first.admit("llm", "agent", now).expect_err("the first sees the second's").message.contains("sent 3"));
        // Another identity, and tokens: reported on one replica, they count on the other.
        assert!(second.admit("llm", "other", now).is_ok());
        second.used("llm", "other", 150, now);
        second.sync(&store).await.expect("sync");
        first.sync(&store).await.expect("sync");
        let refused = first.admit("llm", "other", now).expect_err("over the tokens per minute");
        assert_eq!(refused.limit, "tokens_per_minute");
        assert!(refused.message.contains("used 150 tokens"), "{}", refused.message);
        // What a replica counted is not read back as another's: the second sees the first's two requests alone.
        let counters = second.counters.lock();
        let others = &counters[&("llm".to_string(), "agent".to_string())].others;
        assert_eq!(others.iter().map(|slot| slot.requests).sum::<u64>(), 2, "{others:?}");
    }

    #[test]
    fn counts_a_sync_could_not_add_are_kept_for_the_next() {
        let limits = limits(LlmLimits { requests_per_minute: Some(10), ..LlmLimits::default() });
        let now = Instant::now();
        assert!(limits.admit("llm", "agent", now).is_ok());
        assert!(limits.admit("llm", "agent", now).is_ok());
        let taken = limits.take_unsynced();
        assert_eq!(taken.iter().map(|count| count.requests).sum::<u64>(), 2);
        assert!(limits.take_unsynced().is_empty(), "taken once");
        limits.restore_unsynced(taken.clone());
        assert!(limits.admit("llm", "agent", now).is_ok());
        let again = limits.take_unsynced();
        assert_eq!(again.iter().map(|count| count.requests).sum::<u64>(), 3, "{again:?}");
    }

    #[test]
    fn tokens_counted_while_a_refresh_reads_are_kept_and_a_failed_refresh_loses_nothing() {
        let limits = budget(1000);
        let now = Instant::now();
        limits.used("llm", "agent", 50, now);
        let windows = limits.begin_refresh();
        let (_, window, _) = windows[0].clone();
        // Counted while the store is read: not in what it reads (or, finishing meanwhile, in it too: counted twice
        // until the next refresh).
        limits.used("llm", "agent", 10, now);
        assert_eq!(used(&limits, "agent"), 60);
        limits.stored("llm", window, HashMap::from([("agent".to_string(), 50), ("other".to_string(), 7)]));
        assert_eq!((used(&limits, "agent"), used(&limits, "other")), (60, 7));
        // A refresh that cannot read the store changes nothing; the next one replaces what it counted.
        limits.begin_refresh();
        limits.used("llm", "agent", 5, now);
        assert_eq!(used(&limits, "agent"), 65);
        limits.begin_refresh();
        assert_eq!(used(&limits, "agent"), 65);
        limits.stored("llm", window, HashMap::from([("agent".to_string(), 65)]));
        assert_eq!((used(&limits, "agent"), used(&limits, "other")), (65, 0));
    }

    fn limits(limits: LlmLimits) -> Limits {
        Limits {
            by_connection: HashMap::from([("llm".to_string(), limits)]),
            counters: Mutex::new(HashMap::new()),
            replica: format!("rpl_{:016x}", rand::random::<u64>()),
        }
    }

    #[test]
    fn requests_per_minute_slide() {
        let limits = limits(LlmLimits { requests_per_minute: Some(2), ..LlmLimits::default() });
        let start = Instant::now();
        assert!(limits.admit("llm", "agent", start).is_ok());
        assert!(limits.admit("llm", "agent", start + Duration::from_secs(10)).is_ok());
        let refused = limits.admit("llm", "agent", start + Duration::from_secs(20)).expect_err("third in a minute");
        assert_eq!(refused.limit, "requests_per_minute");
        assert_eq!(refused.retry_after, Duration::from_secs(40));
        // Another identity has its own count; the first request leaves the window after a minute.
        assert!(limits.admit("llm", "other", start + Duration::from_secs(20)).is_ok());
        assert!(limits.admit("llm", "agent", start + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn a_budget_stops_the_request_after_the_one_that_crossed_it() {
        let budget = TokenBudget { tokens: 100, per: Duration::from_secs(86_400) };
        let limits = limits(LlmLimits { budget: Some(budget), ..LlmLimits::default() });
        let now = Instant::now();
        assert!(limits.admit("llm", "agent", now).is_ok());
        limits.used("llm", "agent", 60, now);
        assert!(limits.admit("llm", "agent", now).is_ok());
        limits.used("llm", "agent", 60, now);
        let refused = limits.admit("llm", "agent", now).expect_err("over budget");
        assert_eq!(refused.limit, "budget");
        assert!(refused.message.contains("used 120 of its 100 tokens per 1d"), "{}", refused.message);
        assert!(refused.retry_after <= Duration::from_secs(86_400));
        assert!(limits.admit("llm", "someone-else", now).is_ok());
        assert!(limits.admit("other-connection", "agent", now).is_ok());
    }

    #[test]
    fn tokens_per_minute_count_reported_usage() {
        let limits = limits(LlmLimits { tokens_per_minute: Some(1000), ..LlmLimits::default() });
        let start = Instant::now();
        limits.used("llm", "agent", 999, start);
        assert!(limits.admit("llm", "agent", start).is_ok());
        limits.used("llm", "agent", 5, start + Duration::from_secs(30));
        let refused = limits.admit("llm", "agent", start + Duration::from_secs(31)).expect_err("over");
        assert_eq!(refused.limit, "tokens_per_minute");
        assert_eq!(refused.retry_after, Duration::from_secs(29));
        assert!(limits.admit("llm", "agent", start + Duration::from_secs(91)).is_ok());
    }
}
