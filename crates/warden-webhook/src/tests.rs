use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Computed outside this crate: `printf '%s' '1700000000.{"kind":"statement"}' | openssl dgst -sha256 -hmac
/// whsec_test` (and with a trailing newline in the body, as a JSON Lines batch has).
#[test]
fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
    assert_eq!(
        sign(b"whsec_test", 1_700_000_000, br#"{"kind":"statement"}"#),
        "v1=3be85c4270aa75c1dabc507ef0e3a647eafcd9679c2cde31f91138a02c3b76f9"
    );
    assert_eq!(
        sign(b"whsec_test", 1_700_000_000, b"{\"kind\":\"statement\"}\n"),
        "v1=c8b30a09b429914dfc9f94c9edade586c1d6b680f10747a2af280be8cf331635"
    );
    assert_ne!(sign(b"whsec_test", 1_700_000_001, b"x"), sign(b"whsec_test", 1_700_000_000, b"x"));
    assert_ne!(sign(b"other", 1_700_000_000, b"x"), sign(b"whsec_test", 1_700_000_000, b"x"));
}

#[test]
fn statuses_are_delivered_retryable_or_permanent() {
    for (status, expected) in [
        (200, Outcome::Delivered),
        (202, Outcome::Delivered),
        (204, Outcome::Delivered),
        (408, Outcome::Retryable),
        (429, Outcome::Retryable),
        (500, Outcome::Retryable),
        (502, Outcome::Retryable),
        (503, Outcome::Retryable),
        (504, Outcome::Retryable),
        (301, Outcome::Permanent),
        (400, Outcome::Permanent),
        (401, Outcome::Permanent),
        (403, Outcome::Permanent),
        (404, Outcome::Permanent),
        (413, Outcome::Permanent),
        (422, Outcome::Permanent),
    ] {
        assert_eq!(classify(StatusCode::from_u16(status).unwrap()), expected, "{status}");
    }
    let url = "http://siem.example/ingest".to_string();
    assert!(WebhookError::Timeout { url: url.clone() }.is_retryable());
    assert!(WebhookError::Transport { url: url.clone(), reason: "connection refused".into() }.is_retryable());
    assert!(
        !WebhookError::Status { url: url.clone(), status: StatusCode::UNAUTHORIZED, retry_after: None }.is_retryable()
    );
    assert!(WebhookError::Status { url, status: StatusCode::SERVICE_UNAVAILABLE, retry_after: None }.is_retryable());
}

#[test]
fn backoff_doubles_from_half_a_second_to_thirty_with_jitter() {
    let nominal: Vec<u64> = (0..9).map(|failures| Backoff::nominal(failures).as_millis() as u64).collect();
    assert_eq!(nominal, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    assert_eq!(Backoff::nominal(u32::MAX), Backoff::CAP);
    for _ in 0..200 {
        let mut backoff = Backoff::new();
        for failures in 0..12 {
            let delay = backoff.next_delay(None).as_secs_f64();
            let nominal = Backoff::nominal(failures).as_secs_f64();
            assert!(delay >= nominal * 0.8 - 1e-9 && delay <= (nominal * 1.2).min(30.0) + 1e-9, "{failures}: {delay}");
        }
        assert_eq!(backoff.failures(), 12);
        backoff.reset();
        let first = backoff.next_delay(None);
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600), "{first:?}");
    }
    // Jitter spreads the delays.
    let mut delays: Vec<Duration> = (0..50).map(|_| Backoff::new().next_delay(None)).collect();
    delays.dedup();
    assert!(delays.len() > 1);
}

#[test]
fn retry_after_is_honoured_up_to_a_minute() {
    let mut backoff = Backoff::new();
    assert_eq!(backoff.next_delay(Some(Duration::from_secs(7))), Duration::from_secs(7));
    assert_eq!(backoff.next_delay(Some(Duration::from_secs(3600))), Duration::from_secs(60));
    assert_eq!(backoff.failures(), 2, "a Retry-After still counts as a failure");
    assert_eq!(retry_after_seconds(&HeaderValue::from_static(" 12 ")), Some(Duration::from_secs(12)));
    assert_eq!(retry_after_seconds(&HeaderValue::from_static("Wed, 21 Oct 2026 07:28:00 GMT")), None);
}

#[test]
fn urls_are_checked_and_shown_without_user_information() {
    assert!(matches!(Webhook::new("ftp://host/x", b"k"), Err(WebhookError::InvalidUrl { .. })));
    assert!(matches!(Webhook::new("not a url", b"k"), Err(WebhookError::InvalidUrl { .. })));
    let webhook = Webhook::new("http://user:hunter2@127.0.0.1:9/ingest", b"k").expect("a valid URL");
    assert_eq!(webhook.url(), "http://127.0.0.1:9/ingest");
    assert!(!format!("{webhook:?}").contains("hunter2"));
    assert_eq!(redact("https://siem.example/a@b"), "https://siem.example/a@b");
}

/// A one-shot HTTP/1.1 server: answers the first request with `response` and hands back the request's bytes.
async fn answer_once(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let read = stream.read(&mut buffer).await.unwrap();
            request.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&request);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_string))
                    .map_or(0, |value| value.trim().parse::<usize>().unwrap());
                if request.len() >= end + 4 + length {
                    break;
                }
            }
            assert!(read > 0, "the client closed early");
        }
        stream.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8(request).unwrap()
    });
    (url, server)
}

#[tokio::test]
async fn a_post_carries_the_signed_body_and_its_headers() {
    let (url, server) = answer_once("HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
    let webhook = Webhook::new(&url, b"whsec_test").unwrap();
    webhook
        .post(&b"line one\nline two\n"[..], "application/x-ndjson", &[("x-warden-delivery", "d-1")])
        .await
        .expect("delivered");
    let request = server.await.unwrap();
    let lower = request.to_ascii_lowercase();
    assert!(request.starts_with("POST /ingest HTTP/1.1\r\n"), "{request}");
    assert!(lower.contains("content-type: application/x-ndjson\r\n"), "{request}");
    assert!(lower.contains("x-warden-delivery: d-1\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\nline one\nline two\n"), "{request}");
    let header = |name: &str| {
        lower.lines().find_map(|line| line.strip_prefix(&format!("{name}: ")).map(str::to_string)).expect(name)
    };
    let timestamp: u64 = header(TIMESTAMP_HEADER).parse().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(timestamp.abs_diff(now) < 5);
    assert_eq!(header(SIGNATURE_HEADER), sign(b"whsec_test", timestamp, b"line one\nline two\n"));
    assert!(!request.contains("whsec_test"), "the secret itself is never sent");
}

#[tokio::test]
async fn answers_and_failures_are_classified() {
    let (url, _server) =
        answer_once("HTTP/1.1 503 Service Unavailable\r\nretry-after: 3\r\ncontent-length: 4\r\n\r\nbusy").await;
    let error = Webhook::new(&url, b"k").unwrap().post(&b"x"[..], "text/plain", &[]).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(error.to_string(), format!("{url} answered HTTP 503 Service Unavailable"));

    let (url, _server) = answer_once("HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n").await;
    let error = Webhook::new(&url, b"whsec_test").unwrap().post(&b"x"[..], "text/plain", &[]).await.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert!(!error.to_string().contains("whsec_test"));

    // A closed port: retryable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let error = Webhook::new(&format!("http://{closed}/"), b"k").unwrap().post(&b"x"[..], "text/plain", &[]).await;
    let error = error.unwrap_err();
    assert!(matches!(error, WebhookError::Transport { .. }) && error.is_retryable(), "{error}");
}
