//! Rate limits and token budgets of LLM connections (`[connection.limits]`), per connection and identity:
//! requests and tokens per sliding minute, and tokens per budget period (fixed windows aligned to the Unix epoch,
//! so every replica agrees where a day starts). Counted in this gateway's memory from the usage providers report;
//! a request is admitted while its identity is under every limit, and the one that crosses a limit is the last.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use warden_config::LlmLimits;
use warden_http::LimitRefusal;

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct Limits {
    by_connection: HashMap<String, LlmLimits>,
    counters: Mutex<HashMap<(String, String), Counter>>,
}

#[derive(Default)]
struct Counter {
    /// Request arrivals in the last minute.
    requests: VecDeque<Instant>,
    /// Tokens used in the last minute, by when they were reported.
    tokens: VecDeque<(Instant, u64)>,
    /// The budget window (its index since the epoch) and the tokens used in it.
    budget: (u64, u64),
}

impl Limits {
    pub(crate) fn new(config: &warden_config::Config) -> Limits {
        let by_connection = config
            .connections
            .iter()
            .filter_map(|connection| Some((connection.name.clone(), connection.http()?.limits.clone())))
            .filter(|(_, limits)| *limits != LlmLimits::default())
            .collect();
        Limits { by_connection, counters: Mutex::new(HashMap::new()) }
    }

    /// Admits a request of `identity` on `connection` now, counting it, or says which limit stops it and when to
    /// try again.
    pub(crate) fn admit(&self, connection: &str, identity: &str, now: Instant) -> Result<(), LimitRefusal> {
        let Some(limits) = self.by_connection.get(connection) else { return Ok(()) };
        let mut counters = self.counters.lock();
        let counter = counters.entry((connection.to_string(), identity.to_string())).or_default();
        counter.expire(now);
        if let Some(budget) = &limits.budget {
            let (window, window_end) = budget_window(budget.per);
            if counter.budget.0 == window && counter.budget.1 >= budget.tokens {
                return Err(LimitRefusal {
                    limit: "budget",
                    message: format!(
                        "{identity} used {} of its {} tokens per {} on connection \"{connection}\" (limits.budget)",
                        counter.budget.1,
                        budget.tokens,
                        humanize(budget.per)
                    ),
                    retry_after: window_end,
                });
            }
        }
        if let Some(limit) = limits.tokens_per_minute {
            let used: u64 = counter.tokens.iter().map(|(_, tokens)| tokens).sum();
            if used >= limit {
                let oldest = counter.tokens.front().map_or(now, |(at, _)| *at);
                return Err(LimitRefusal {
                    limit: "tokens_per_minute",
                    message: format!(
                        "{identity} used {used} tokens in the last minute on connection \"{connection}\"; the limit \
                         is {limit} (limits.tokens_per_minute)"
                    ),
                    retry_after: (oldest + MINUTE).saturating_duration_since(now),
                });
            }
        }
        if let Some(limit) = limits.requests_per_minute {
            if counter.requests.len() >= limit as usize {
                let oldest = counter.requests.front().copied().unwrap_or(now);
                return Err(LimitRefusal {
                    limit: "requests_per_minute",
                    message: format!(
                        "{identity} sent {} requests in the last minute on connection \"{connection}\"; the limit is \
                         {limit} (limits.requests_per_minute)",
                        counter.requests.len()
                    ),
                    retry_after: (oldest + MINUTE).saturating_duration_since(now),
                });
            }
            counter.requests.push_back(now);
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
        }
        if let Some(budget) = &limits.budget {
            let (window, _) = budget_window(budget.per);
            if counter.budget.0 != window {
                counter.budget = (window, 0);
            }
            counter.budget.1 = counter.budget.1.saturating_add(tokens);
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

/// The current budget window's index since the Unix epoch, and the time left in it.
fn budget_window(period: Duration) -> (u64, Duration) {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let period_ms = period.as_millis().max(1);
    let now_ms = since_epoch.as_millis();
    let window = now_ms / period_ms;
    let left = period_ms - now_ms % period_ms;
    (u64::try_from(window).unwrap_or(u64::MAX), Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX)))
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
    use warden_config::TokenBudget;

    fn limits(limits: LlmLimits) -> Limits {
        Limits { by_connection: HashMap::from([("llm".to_string(), limits)]), counters: Mutex::new(HashMap::new()) }
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
