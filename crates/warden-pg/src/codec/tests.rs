//! Codec round trips and refusals.

use super::backend::{self, Authentication, Severity};
use super::frontend;
use super::startup::{self, StartupPacket};
use super::{header, CodecError};

#[test]
fn header_rejects_short_lengths_and_waits_for_five_bytes() {
    assert_eq!(header(b"Q\0\0"), None);
    assert_eq!(header(b"Q\0\0\0\x08"), Some(Ok((b'Q', 9))));
    assert_eq!(header(b"Q\0\0\0\x03"), Some(Err(CodecError::BadLength { tag: 'Q', length: 3 })));
}

#[test]
fn startup_message_round_trip() {
    let packet = frontend::startup_message([("user", "alice"), ("database", "shop"), ("application_name", "psql")]);
    let length = startup::packet_length(packet[..4].try_into().unwrap()).unwrap();
    assert_eq!(length, packet.len());
    let StartupPacket::Startup(message) = startup::parse(&packet[4..]).unwrap() else {
        panic!("not a startup message")
    };
    assert_eq!((message.major, message.minor), (3, 0));
    assert_eq!(message.get("database"), Some("shop"));
    assert_eq!(message.get("application_name"), Some("psql"));
}

#[test]
fn startup_packet_refusals() {
    assert!(startup::packet_length(10_001u32.to_be_bytes()).is_err());
    assert!(startup::packet_length(7u32.to_be_bytes()).is_err());
    assert!(startup::packet_length(u32::MAX.to_be_bytes()).is_err());
    // A parameter without its terminator.
    let mut body = startup::PROTOCOL_3_0.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0alice");
    assert!(matches!(startup::parse(&body), Err(CodecError::Malformed { .. })));
    let cancel = frontend::cancel_request(42, -7);
    assert_eq!(startup::parse(&cancel[4..]), Ok(StartupPacket::CancelRequest { process_id: 42, secret_key: -7 }));
    assert_eq!(startup::parse(&frontend::ssl_request()[4..]), Ok(StartupPacket::SslRequest));
}

#[test]
fn error_response_round_trip() {
    let mut out = Vec::new();
    backend::error_response(&mut out, Severity::Fatal, "28P01", "password authentication failed", None);
    let fields = backend::error_fields(&out).unwrap();
    assert_eq!(fields.code, "28P01");
    assert!(fields.is_fatal());
    assert_eq!(fields.message, "password authentication failed");
}

#[test]
fn command_complete_row_counts() {
    fn check(tag: &str, expected: Option<u64>) {
        let mut out = Vec::new();
        super::build(&mut out, b'C', |body| super::put_cstr(body, tag.as_bytes()));
        assert_eq!(backend::command_complete_rows(&out), expected, "{tag}");
    }
    check("SELECT 5", Some(5));
    check("INSERT 0 12", Some(12));
    check("COPY 100000", Some(100_000));
    check("CREATE TABLE", None);
    check("BEGIN", None);
}

#[test]
fn authentication_requests() {
    let mut out = Vec::new();
    super::build(&mut out, b'R', |body| {
        body.extend_from_slice(&10i32.to_be_bytes());
        super::put_cstr(body, b"SCRAM-SHA-256-PLUS");
        super::put_cstr(body, b"SCRAM-SHA-256");
        body.push(0);
    });
    assert_eq!(
        backend::authentication(&out).unwrap(),
        Authentication::Sasl { mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"] }
    );
    let mut out = Vec::new();
    super::build(&mut out, b'R', |body| body.extend_from_slice(&5i32.to_be_bytes()));
    assert!(backend::authentication(&out).is_err(), "md5 without salt is malformed");
}

#[test]
fn frontend_accessors() {
    let mut out = Vec::new();
    super::build(&mut out, b'B', |body| {
        super::put_cstr(body, b"portal1");
        super::put_cstr(body, b"stmt1");
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    });
    assert_eq!(frontend::bind_names(&out).unwrap(), ("portal1", "stmt1"));
    let password = frontend::password_message(b"wk_secret");
    assert_eq!(frontend::password(&password).unwrap(), b"wk_secret");
}

mod never_panics {
    //! Whatever bytes a client or an upstream sends, decoding returns a value or an error, never a panic.
    use proptest::prelude::*;

    use super::super::{backend, frontend, header, startup};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn startup_packets(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = startup::parse(&body);
        }

        #[test]
        fn startup_lengths(word in any::<[u8; 4]>()) {
            if let Ok(length) = startup::packet_length(word) {
                prop_assert!((8..=10_000).contains(&length));
            }
        }

        #[test]
        fn tagged_messages(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut message = vec![tag];
            message.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            message.extend_from_slice(&body);
            prop_assert_eq!(header(&message), Some(Ok((tag, message.len()))));
            let _ = backend::error_fields(&message);
            let _ = backend::authentication(&message);
            let _ = backend::command_complete_rows(&message);
            let _ = backend::parameter(&message);
            let _ = backend::backend_key(&message);
            let _ = frontend::query_text(&message);
            let _ = frontend::parse_statement(&message);
            let _ = frontend::bind_names(&message);
            let _ = frontend::execute_portal(&message);
            let _ = frontend::close_target(&message);
            let _ = frontend::password(&message);
        }
    }
}
