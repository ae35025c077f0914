//! What masking costs: `Masker::mask` with every built-in detector over clean text (no PII, the common case), over
//! text with about 1% PII, and over near misses everywhere (the scanner's worst case), each next to the baseline of a
//! naive scan running each detector's pattern separately (one regex per detector, no validation, nothing
//! rewritten). Prints MB/s and the speed-up over the baseline.
//!
//! Then the same 1% PII text through a `StreamMasker`, in pieces the size of an LLM's streamed deltas (16 bytes) and
//! of an HTTP body's reads (4 KiB), next to `Masker::mask` over the whole text as its baseline.
//!
//! Last, what a gateway pays per message: `Masker::mask` over one LLM chat answer (~500 bytes of JSON with an email,
//! a phone and a card), in a hot loop (the baseline) and with the CPU's caches cold (32 MiB walked before each call,
//! as a worker's other work and other tenants' do between two answers), and its first call on a new thread (the
//! thread's lazy DFA cache is empty). Printed in µs per call.
//!
//! `cargo bench -p warden-mask --bench mask` (release profile). `BENCH_SECONDS` sets the measuring time per case
//! (default 1).
//!
//! A hand-rolled loop, as in warden-gateway's `statement` bench: what a reader wants is the side-by-side table.

use std::hint::black_box;
use std::time::{Duration, Instant};

use regex_automata::meta::Regex;
use warden_mask::{Detector, Masker, MaskerConfig, StreamMasker, DEFAULT_HOLD_BACK};

struct Case {
    name: &'static str,
    bytes_per_second: f64,
}

/// Median throughput of `operation` over `bytes` of input, in batches spread across the measuring time.
fn measure(name: &'static str, bytes: usize, mut operation: impl FnMut()) -> Case {
    let seconds: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|value| value.parse().ok()).unwrap_or(1.0);
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            operation();
        }
        if start.elapsed() > Duration::from_millis(20) {
            break;
        }
        batch *= 2;
    }
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline || samples.len() < 5 {
        let start = Instant::now();
        for _ in 0..batch {
            operation();
        }
        samples.push(bytes as f64 * batch as f64 / start.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    Case { name, bytes_per_second: samples[samples.len() / 2] }
}

/// Log-like and row-like text without PII: words, counts, timestamps, versions, hex ids, order numbers, paths.
const CLEAN_LINES: &[&str] = &[
    "2026-11-21T05:48:44.123Z INFO request completed method=GET path=/api/v1/orders/48213 status=200 duration_ms=12",
    "order 1234567812345670 shipped to warehouse 7 in 3 boxes; carrier reference XK-99812-B",
    "{\"id\": 48213, \"name\": \"Widget Pro\", \"price\": 19.99, \"tags\": [\"blue\", \"large\"], \"stock\": 1200}",
    "commit 3f9a1c2b7d3f9a1c2b7d3f9a1c2b7d3f9a1c2b7d by build-bot: bump version to 2.14.3 (see changelog)",
    "The customer asked whether the delivery could be moved to Thursday afternoon, between 14:00 and 16:30.",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 48213 AND bid = 7 ORDER BY aid LIMIT 20;",
    "Die Bestellung wurde am Montag verschickt und sollte übermorgen ankommen, schöne Grüße aus Köln.",
    "warn: retrying upstream call attempt=3 backoff=250ms error=\"connection reset by peer\" node=worker-12",
];

/// Values the detectors find, one per PII line.
const PII: &[&str] = &[
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "+44 20 7946 0958",
    "123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "192.168.10.77",
    "2001:db8::8a2e:370:7334",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
];

/// About `size` bytes of clean lines; with `pii`, a PII value in place of a word often enough to make about 1% of
/// the bytes PII.
fn corpus(size: usize, pii: bool) -> String {
    let mut text = String::with_capacity(size + 256);
    let mut pii_bytes = 0;
    let mut index = 0;
    while text.len() < size {
        let line = CLEAN_LINES[index % CLEAN_LINES.len()];
        text.push_str(line);
        if pii && pii_bytes * 100 < text.len() {
            let value = PII[index % PII.len()];
            text.push_str(" contact ");
            text.push_str(value);
            pii_bytes += value.len();
        }
        text.push('\n');
        index += 1;
    }
    text
}

/// `text` through a `StreamMasker` in pieces of `size` bytes (cut on character boundaries); the bytes released.
fn stream(masker: &Masker, text: &str, size: usize) -> usize {
    let mut streamer = StreamMasker::new(masker.clone(), DEFAULT_HOLD_BACK);
    let mut released = 0;
    let mut from = 0;
    while from < text.len() {
        let mut to = (from + size).min(text.len());
        while !text.is_char_boundary(to) {
            to += 1;
        }
        released += streamer.push(&text[from..to], &mut |_| {}).len();
        from = to;
    }
    released + streamer.finish(&mut |_| {}).len()
}

fn main() {
    let masker = Masker::new(&MaskerConfig::all([42; 32])).expect("the built-in detectors compile");
    let naive: Vec<Regex> =
        Detector::ALL.into_iter().map(|detector| Regex::new(detector.pattern()).expect("compiles")).collect();
    let clean = corpus(1 << 20, false);
    let dirty = corpus(1 << 20, true);
    // Near misses everywhere: each candidate is validated, rejected and retried, the scanner's worst case.
    let adversarial =
        "4111 1111 1111 1112 1.2.3.4.5 12:34:56:78 DE89 3704 0044 0532 0130 01 000-12-3456 ".repeat((1 << 20) / 80);
    assert!(masker.find(&adversarial).is_empty());
    let found = masker.find(&dirty);
    let pii_bytes: usize = found.iter().map(|finding| finding.range.len()).sum();
    assert!(masker.find(&clean).is_empty(), "the clean corpus must have no findings: {:?}", masker.find(&clean));
    println!(
        "corpus: {} KiB clean; {} KiB with {} findings ({:.2}% of bytes)",
        clean.len() / 1024,
        dirty.len() / 1024,
        found.len(),
        100.0 * pii_bytes as f64 / dirty.len() as f64
    );

    let naive_scan = |text: &str| -> usize { naive.iter().map(|regex| regex.find_iter(text).count()).sum() };
    let cases = [
        measure("baseline: one regex per detector, clean", clean.len(), || {
            black_box(naive_scan(black_box(&clean)));
        }),
        measure("mask, clean (borrowed, no allocation)", clean.len(), || {
            black_box(masker.mask(black_box(&clean)));
        }),
        measure("baseline: one regex per detector, 1% PII", dirty.len(), || {
            black_box(naive_scan(black_box(&dirty)));
        }),
        measure("mask, 1% PII", dirty.len(), || {
            black_box(masker.mask(black_box(&dirty)));
        }),
        measure("baseline: one regex per detector, adversarial", adversarial.len(), || {
            black_box(naive_scan(black_box(&adversarial)));
        }),
        measure("mask, adversarial (rejected candidates)", adversarial.len(), || {
            black_box(masker.mask(black_box(&adversarial)));
        }),
        measure("baseline: mask whole, 1% PII", dirty.len(), || {
            black_box(masker.mask(black_box(&dirty)));
        }),
        measure("stream, 1% PII, 16-byte pieces", dirty.len(), || {
            black_box(stream(&masker, &dirty, 16));
        }),
        measure("stream, 1% PII, 4 KiB pieces", dirty.len(), || {
            black_box(stream(&masker, &dirty, 4096));
        }),
    ];

    println!("\n{:<44}  {:>10}  {:>12}", "case", "MB/s", "vs baseline");
    let mut baseline = f64::NAN;
    for case in &cases {
        if case.name.starts_with("baseline") {
            baseline = case.bytes_per_second;
        }
        println!(
            "{:<44}  {:>10.1}  {:>11.2}x",
            case.name,
            case.bytes_per_second / 1e6,
            case.bytes_per_second / baseline
        );
    }

    per_message(&masker);
}

/// One chat answer masked hot, cold, and first on a new thread: µs per call.
fn per_message(masker: &Masker) {
    let answer = concat!(
        r#"{"id":"chatcmpl-123","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":"#,
        r#"[{"index":0,"message":{"role":"assistant","content":"Sure. Write to Jane Roe at jane.roe@example.com or "#,
        r#"call +1 415 555 0100; her card is 4111 1111 1111 1111."},"logprobs":null,"finish_reason":"stop"}],"#,
        r#""usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#
    );
    assert_eq!(masker.find(answer).len(), 3);
    let calls = 20_000;
    let start = Instant::now();
    for _ in 0..calls {
        black_box(masker.mask(black_box(answer)));
    }
    let hot = start.elapsed() / calls;
    let mut evict = vec![1u8; 32 << 20];
    let mut cold = Vec::new();
    for _ in 0..200 {
        for index in (0..evict.len()).step_by(64) {
            evict[index] = evict[index].wrapping_add(1);
        }
        let start = Instant::now();
        black_box(masker.mask(black_box(answer)));
        cold.push(start.elapsed());
    }
    black_box(&evict);
    cold.sort_unstable();
    let first = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let start = Instant::now();
                black_box(masker.mask(black_box(answer)));
                start.elapsed()
            })
            .join()
            .expect("the thread runs")
    });
    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    println!("\none chat answer ({} bytes), Masker::mask:", answer.len());
    println!("{:<44}  {:>10.1} µs", "baseline: hot loop", micros(hot));
    let median = cold[cold.len() / 2];
    println!("{:<44}  {:>10.1} µs  {:>8.1}x", "CPU caches cold (median)", micros(median), micros(median) / micros(hot));
    println!("{:<44}  {:>10.1} µs  {:>8.1}x", "first call on a new thread", micros(first), micros(first) / micros(hot));
}
