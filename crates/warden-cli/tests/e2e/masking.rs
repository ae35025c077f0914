//! Inline PII masking of PostgreSQL results, end to end: a `customers` table full of realistic PII behind a
//! gateway with `[connection.masking]` (every built-in detector, plus column rules), read every way a client can
//! read it (simple and extended protocol, text and binary formats, JSON built in the query, COPY, cursors and
//! portals, error fields) and recorded in the state store. Every test checks both halves of the promise: no raw
//! PII reaches the client, and what is not PII arrives byte for byte as PostgreSQL sent it.
//!
//! The expected values are compared with what a direct (not through warden) superuser connection receives for the
//! same query in the same format, so nothing here depends on the server's time zone or output settings.

use crate::OutputInPlace;
use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::SimpleQueryMessage;
use warden_testkit::TestGateway;

use crate::raw::{self, RawClient};
use crate::{server_message, sqlstate, start_postgres, Fixture};

/// The masking config under test: content detection with every built-in detector and its default strategy, and
/// three column rules (a full `schema.table.column`, a `*` glob, and the `table.column` short form on a non-text
/// column).
const MASKING: &str = r#"
[connection.masking]
detect = ["all"]

[[connection.masking.column]]
match = "public.customers.full_name"
strategy = "redact"

[[connection.masking.column]]
match = "*.secret_note"
strategy = "null"

[[connection.masking.column]]
match = "customers.birth_date"
strategy = "redact"
"#;

/// Every class of statement for agents, readers reading, but no `unmask` for anyone: the default test policies
/// permit agents every action, which would include `unmask`.
const NO_UNMASK: &str = r#"
@id("agents-work")
permit (principal in Warden::Group::"agents",
        action in [Warden::Action::"connect", Warden::Action::"read", Warden::Action::"write",
                   Warden::Action::"ddl", Warden::Action::"dcl", Warden::Action::"admin",
                   Warden::Action::"procedural", Warden::Action::"unclassified"],
        resource);

@id("readers-read")
permit (principal in Warden::Group::"readers",
        action in [Warden::Action::"connect", Warden::Action::"read"],
        resource);
"#;

/// The columns of `public.customers`, in table order (what `SELECT *` and `COPY customers` return).
const COLUMNS: [&str; 16] = [
    "id",
    "full_name",
    "email",
    "phone",
    "ssn",
    "card",
    "iban",
    "ip",
    "secret_note",
    "bio",
    "order_ref",
    "created_at",
    "release",
    "ref",
    "amount",
    "birth_date",
];

/// One fixture row. `bio` is free text scanned by the detectors; `order_ref`, `created_at`, `release`, `reference`
/// and `amount` are not PII (and some look like it: Luhn-invalid 16-digit numbers, dotted versions, digit-heavy
/// UUIDs) and must arrive untouched.
struct Customer {
    id: i32,
    full_name: &'static str,
    email: &'static str,
    phone: &'static str,
    ssn: &'static str,
    card: &'static str,
    iban: &'static str,
    ip: &'static str,
    secret_note: &'static str,
    bio: Option<&'static str>,
    /// The PII inside `bio`, which must not arrive.
    bio_pii: &'static [&'static str],
    /// What must replace it (labels and partial forms), in order.
    bio_masked: &'static [&'static str],
    order_ref: &'static str,
    created_at: &'static str,
    release: &'static str,
    reference: &'static str,
    amount: &'static str,
    birth_date: &'static str,
}

const CUSTOMERS: [Customer; 5] = [
    Customer {
        id: 1,
        full_name: "Ada Lovelace",
        email: "ada.lovelace@example.com",
        phone: "+1 415 555 2671",
        ssn: "123-45-6789",
        card: "4111 1111 1111 1111",
        iban: "GB82WEST12345698765432",
        ip: "203.0.113.7",
        secret_note: "door code 4471",
        bio: Some(
            "rotated key AKIAIOSFODNN7EXAMPLE yesterday; call me at +44 20 7946 0958 or write to ada@example.com",
        ),
        bio_pii: &["AKIAIOSFODNN7EXAMPLE", "+44 20 7946 0958", "ada@example.com"],
        bio_masked: &["rotated key ", "[AWS_ACCESS_KEY_ID]", " yesterday; call me at ", "[PHONE]", "***@example.com"],
        order_ref: "4111111111111112",
        created_at: "2024-03-05 14:22:01+00",
        release: "v2.14.1",
        reference: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        amount: "1234.50",
        birth_date: "1815-12-10",
    },
    Customer {
        id: 2,
        full_name: "Grace Hopper",
        email: "grace.hopper@navy.example.org",
        phone: "(415) 555-0134",
        ssn: "234-56-7890",
        card: "5555 5555 5555 4444",
        iban: "DE89370400440532013000",
        ip: "198.51.100.23",
        secret_note: "prefers calls after 6pm",
        bio: Some("met at the 2019 conference in room 12"),
        bio_pii: &[],
        bio_masked: &[],
        order_ref: "5555555555554445",
        created_at: "2023-11-30 23:59:59-08",
        release: "v3.0.0-rc.1",
        reference: "12345678-1234-5678-1234-567812345678",
        amount: "99.99",
        birth_date: "1906-12-09",
    },
    Customer {
        id: 3,
        full_name: "Alan Turing",
        email: "alan@turing.example.net",
        phone: "415-555-0199",
        ssn: "345-67-8901",
        card: "378282246310005",
        iban: "FR1420041010050500013M02606",
        // The same address as customer 1: its hash token must be the same too.
        ip: "203.0.113.7",
        secret_note: "allergic to penicillin",
        bio: Some("her laptop is 192.168.10.5; backup card 4000 0566 5566 5556"),
        bio_pii: &["192.168.10.5", "4000 0566 5566 5556"],
        bio_masked: &["her laptop is ", "[IPV4:", "; backup card ", "**** **** **** 5556"],
        order_ref: "4012888888881882",
        created_at: "2022-06-23 09:00:00+00",
        release: "release 10.4.2",
        reference: "41111111-1111-4111-9111-111111111111",
        amount: "0.01",
        birth_date: "1912-06-23",
    },
    Customer {
        id: 4,
        full_name: "Katherine Johnson",
        email: "kjohnson@example.com",
        phone: "+33 6 12 34 56 78",
        ssn: "456-78-9012",
        card: "4012-8888-8888-1881",
        iban: "NL91ABNA0417164300",
        ip: "192.0.2.146",
        secret_note: "spare key under the mat",
        bio: None,
        bio_pii: &[],
        bio_masked: &[],
        order_ref: "6011111111111118",
        created_at: "2021-01-01 00:00:00+00",
        release: "v1.0.0",
        reference: "00000000-0000-4000-8000-000000000001",
        amount: "1000000.00",
        birth_date: "1918-08-26",
    },
    Customer {
        id: 5,
        full_name: "Edsger Dijkstra",
        email: "e.dijkstra@example.nl",
        phone: "020 7946 0958",
        ssn: "567-89-0123",
        card: "6011111111111117",
        iban: "GB33BUKB20201555555555",
        ip: "10.20.30.40",
        secret_note: "pin 2580",
        bio: Some("no notes"),
        bio_pii: &[],
        bio_masked: &[],
        order_ref: "378282246310006",
        created_at: "2020-02-29 12:34:56.789+00",
        release: "v2.14.1",
        reference: "c56a4180-65aa-42ec-a945-5fd21dec0538",
        amount: "42.00",
        birth_date: "1930-05-11",
    },
];

/// Every raw PII string of the fixture, which must never reach a client that may not unmask.
fn raw_pii() -> Vec<String> {
    let mut raw = Vec::new();
    for customer in &CUSTOMERS {
        raw.extend(
            [
                customer.full_name,
                customer.email,
                customer.phone,
                customer.ssn,
                customer.card,
                customer.iban,
                customer.ip,
                customer.secret_note,
                customer.birth_date,
            ]
            .map(str::to_string),
        );
        raw.push(customer.card.chars().filter(char::is_ascii_digit).collect());
        raw.extend(customer.bio_pii.iter().map(|pii| pii.to_string()));
    }
    raw
}

/// Fails naming every raw PII string found in `received`.
fn assert_no_raw_pii(what: &str, received: &[u8]) {
    let found: Vec<String> = raw_pii()
        .into_iter()
        .filter(|pii| received.windows(pii.len()).any(|window| window == pii.as_bytes()))
        .collect();
    assert!(found.is_empty(), "{what}: raw PII reached the client: {found:?}\n{}", String::from_utf8_lossy(received));
}

/// A throwaway PostgreSQL with `public.customers` filled by the superuser directly (so no fixture PII passes
/// through warden or its records), and a gateway with [`MASKING`] and `policies` in front of it.
async fn masking_fixture(policies: &str) -> Fixture {
    let (postgres, app) = start_postgres(Default::default()).await;
    let (direct, connection) =
        tokio_postgres::connect(&postgres.url(&app.database), tokio_postgres::NoTls).await.expect("direct superuser");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut setup = format!(
        "CREATE TABLE public.customers (
             id int PRIMARY KEY,
             full_name text,
             email text UNIQUE,
             phone text,
             ssn text,
             card text,
             iban text,
             ip text,
             secret_note text,
             bio text,
             order_ref text,
             created_at timestamptz,
             release text,
             ref uuid,
             amount numeric(12, 2),
             birth_date date
         );
         GRANT SELECT, INSERT, UPDATE, DELETE ON public.customers TO {role};
         INSERT INTO public.customers VALUES ",
        role = app.role
    );
    let literal = |value: &str| format!("'{}'", value.replace('\'', "''"));
    let rows: Vec<String> = CUSTOMERS
        .iter()
        .map(|customer| {
            format!(
                "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                customer.id,
                literal(customer.full_name),
                literal(customer.email),
                literal(customer.phone),
                literal(customer.ssn),
                literal(customer.card),
                literal(customer.iban),
                literal(customer.ip),
                literal(customer.secret_note),
                customer.bio.map_or("NULL".to_string(), literal),
                literal(customer.order_ref),
                literal(customer.created_at),
                literal(customer.release),
                literal(customer.reference),
                customer.amount,
                literal(customer.birth_date),
            )
        })
        .collect();
    setup.push_str(&rows.join(",\n"));
    direct.batch_execute(&setup).await.expect("create and fill public.customers");
    let gateway = TestGateway::builder(&postgres, &app).masking(MASKING).policies(policies).start().await;
    Fixture { gateway, app, postgres }
}

/// Any column's value exactly as the server sent it (tokio-postgres asks for binary results), for comparing
/// types this crate's tokio-postgres has no Rust type for (numeric, uuid, json) byte for byte.
struct Wire(Vec<u8>);

impl<'a> FromSql<'a> for Wire {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Wire, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Wire(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One row as a client received it, whatever the protocol and format: each column's name and value bytes, NULL
/// as `None`.
type Received = Vec<(String, Option<Vec<u8>>)>;

fn from_typed_rows(rows: &[tokio_postgres::Row]) -> Vec<Received> {
    rows.iter()
        .map(|row| {
            row.columns()
                .iter()
                .enumerate()
                .map(|(index, column)| {
                    (column.name().to_string(), row.get::<_, Option<Wire>>(index).map(|wire| wire.0))
                })
                .collect()
        })
        .collect()
}

fn from_simple_messages(messages: &[SimpleQueryMessage]) -> Vec<Received> {
    messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(index, column)| {
                        (column.name().to_string(), row.get(index).map(|value| value.as_bytes().to_vec()))
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The CommandComplete row counts of a simple query, in order.
fn command_counts(messages: &[SimpleQueryMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::CommandComplete(count) => Some(*count),
            _ => None,
        })
        .collect()
}

/// A card or phone number with every digit starred but the last four, separators kept.
fn star_digits_but_last_four(value: &str) -> String {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    value
        .chars()
        .map(|character| {
            if character.is_ascii_digit() {
                seen += 1;
                if seen + 4 <= digits {
                    return '*';
                }
            }
            character
        })
        .collect()
}

/// An IBAN with its country code and last four kept, everything between starred.
fn iban_partial(value: &str) -> String {
    let count = value.chars().count();
    value
        .chars()
        .enumerate()
        .map(|(index, character)| if index < 2 || index + 4 >= count { character } else { '*' })
        .collect()
}

fn is_ipv4_token(value: &str) -> bool {
    value
        .strip_prefix("[IPV4:")
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

fn text(value: &Option<Vec<u8>>) -> Option<&str> {
    value.as_deref().map(|bytes| std::str::from_utf8(bytes).expect("a text value is UTF-8"))
}

/// An `id` value in either format: binary int4, or its decimal text.
fn id_value(bytes: &[u8]) -> i32 {
    match std::str::from_utf8(bytes).ok().and_then(|text| text.parse().ok()) {
        Some(id) => id,
        None => i32::from_be_bytes(bytes.try_into().expect("a binary int4 id")),
    }
}

/// Checks one masked row against the same row received directly, column by column: the PII columns masked as
/// configured, everything else identical. Both rows are in the same format (text or binary, per column).
fn check_row(what: &str, direct: &Received, masked: &Received) {
    let names = |row: &Received| row.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>();
    assert_eq!(names(masked), names(direct), "{what}: the columns");
    let id = direct.iter().find(|(name, _)| name == "id").and_then(|(_, value)| value.as_deref()).map(id_value);
    let customer = id.map(|id| CUSTOMERS.iter().find(|customer| customer.id == id).expect("a fixture id"));
    for ((name, direct_value), (_, masked_value)) in direct.iter().zip(masked) {
        let what = format!("{what}, customer {id:?}, column {name}");
        match name.as_str() {
            "id" | "order_ref" | "created_at" | "release" | "ref" | "amount" => {
                assert_eq!(masked_value, direct_value, "{what}: not PII, must arrive unchanged")
            }
            "full_name" => assert_eq!(text(masked_value), Some("[MASKED]"), "{what}: column rule redact"),
            "secret_note" => assert_eq!(masked_value, &None, "{what}: column rule null"),
            "birth_date" => assert_eq!(masked_value, &None, "{what}: a non-text column under a rule is NULL"),
            "email" => {
                let raw = text(direct_value).expect("every customer has an email");
                let (_, domain) = raw.rsplit_once('@').expect("an email");
                assert_eq!(text(masked_value), Some(format!("***@{domain}").as_str()), "{what}");
            }
            "phone" => assert_eq!(text(masked_value), Some("[PHONE]"), "{what}"),
            "ssn" => assert_eq!(text(masked_value), Some("[SSN]"), "{what}"),
            "card" => {
                let raw = text(direct_value).expect("every customer has a card");
                assert_eq!(text(masked_value), Some(star_digits_but_last_four(raw).as_str()), "{what}");
            }
            "iban" => {
                let raw = text(direct_value).expect("every customer has an IBAN");
                assert_eq!(text(masked_value), Some(iban_partial(raw).as_str()), "{what}");
            }
            "ip" => {
                let masked = text(masked_value).expect("every customer has an address");
                assert!(is_ipv4_token(masked), "{what}: {masked:?} is not an [IPV4:<hex>] token");
            }
            "bio" => {
                let customer = customer.expect("bio is checked with the id in the row");
                check_bio(&what, customer, text(direct_value), text(masked_value));
            }
            other => panic!("{what}: unexpected column {other}"),
        }
    }
}

/// Free text: NULL stays NULL, text without PII arrives unchanged, PII inside is replaced in place.
fn check_bio(what: &str, customer: &Customer, direct: Option<&str>, masked: Option<&str>) {
    assert_eq!(direct, customer.bio, "{what}: the direct value is the fixture's");
    match (direct, masked) {
        (None, masked) => assert_eq!(masked, None, "{what}: NULL stays NULL"),
        (Some(raw), None) => panic!("{what}: {raw:?} became NULL"),
        (Some(raw), Some(masked)) if customer.bio_pii.is_empty() => {
            assert_eq!(masked, raw, "{what}: free text without PII must arrive unchanged")
        }
        (Some(_), Some(masked)) => {
            let mut rest = masked;
            for part in customer.bio_masked {
                let at = rest.find(part).unwrap_or_else(|| panic!("{what}: no {part:?} in order in {masked:?}"));
                rest = &rest[at + part.len()..];
            }
            for pii in customer.bio_pii {
                assert!(!masked.contains(pii), "{what}: {pii:?} in {masked:?}");
            }
        }
    }
}

fn check_rows(what: &str, direct: &[Received], masked: &[Received]) {
    assert_eq!(masked.len(), direct.len(), "{what}: row count");
    assert_eq!(direct.len(), CUSTOMERS.len(), "{what}: the direct query sees every customer");
    for (index, (direct, masked)) in direct.iter().zip(masked).enumerate() {
        check_row(&format!("{what}, row {index}"), direct, masked);
    }
}

fn column<'r>(row: &'r Received, name: &str) -> &'r Option<Vec<u8>> {
    &row.iter().find(|(column, _)| column == name).unwrap_or_else(|| panic!("no column {name}")).1
}

/// Every value of `rows` in one buffer, for the raw-PII check.
fn received_bytes(rows: &[Received]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for row in rows {
        for (_, value) in row {
            bytes.extend(value.as_deref().unwrap_or_default());
            bytes.push(b'\t');
        }
        bytes.push(b'\n');
    }
    bytes
}

/// Every value a simple query delivered in one buffer, for the raw-PII check.
fn simple_bytes(messages: &[SimpleQueryMessage]) -> Vec<u8> {
    received_bytes(&from_simple_messages(messages))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_results_are_masked_and_the_rest_arrives_byte_identical() {
    let fixture = masking_fixture(NO_UNMASK).await;
    let direct = fixture.direct_superuser().await;
    let agent = fixture.gateway.connect().await;
    let sql = "SELECT * FROM customers ORDER BY id";

    let expected = from_simple_messages(&direct.simple_query(sql).await.expect("direct"));
    let messages = agent.simple_query(sql).await.expect("select through warden");
    assert_no_raw_pii("simple SELECT *", &simple_bytes(&messages));
    let masked = from_simple_messages(&messages);
    check_rows("simple SELECT *", &expected, &masked);
    assert_eq!(command_counts(&messages), [5]);

    // The address hash is a stable token: equal addresses give equal tokens, across rows and sessions, and
    // different addresses different ones.
    let ip = |rows: &[Received], index: usize| column(&rows[index], "ip").clone();
    assert_eq!(ip(&masked, 0), ip(&masked, 2), "customers 1 and 3 share an address");
    assert_ne!(ip(&masked, 0), ip(&masked, 1));
    let other_session = fixture.gateway.connect().await;
    let again = from_simple_messages(&other_session.simple_query(sql).await.expect("second session"));
    assert_eq!(ip(&again, 0), ip(&masked, 0), "the token is stable across sessions");
    assert_eq!(again, masked, "masking is deterministic");

    // A few columns, in another order, and a WHERE on a PII column (the filter runs upstream, on raw values).
    let sql = "SELECT email, id, card, release FROM customers WHERE email = 'ada.lovelace@example.com'";
    let expected = from_simple_messages(&direct.simple_query(sql).await.expect("direct"));
    let messages = agent.simple_query(sql).await.expect("filtered select");
    assert_no_raw_pii("filtered SELECT", &simple_bytes(&messages));
    assert_eq!(expected.len(), 1);
    check_rows_partial("filtered SELECT", &expected, &from_simple_messages(&messages));

    // Values that are not PII but look like it, alone: Luhn-invalid card-length numbers, versions, UUIDs, times.
    let sql = "SELECT order_ref, release, ref, created_at, amount FROM customers ORDER BY id";
    let expected = from_simple_messages(&direct.simple_query(sql).await.expect("direct"));
    let received = from_simple_messages(&agent.simple_query(sql).await.expect("non-PII select"));
    assert_eq!(received, expected, "not one non-PII value changed");
    let order_refs: Vec<_> = received.iter().map(|row| text(column(row, "order_ref")).unwrap().to_string()).collect();
    assert_eq!(order_refs, CUSTOMERS.map(|customer| customer.order_ref.to_string()));
    assert_eq!(text(column(&received[0], "release")), Some("v2.14.1"));
    assert_eq!(text(column(&received[0], "ref")), Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
}

/// Like [`check_rows`] for a query that returns some of the customers.
fn check_rows_partial(what: &str, direct: &[Received], masked: &[Received]) {
    assert_eq!(masked.len(), direct.len(), "{what}: row count");
    for (index, (direct, masked)) in direct.iter().zip(masked).enumerate() {
        check_row(&format!("{what}, row {index}"), direct, masked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_shows_masked_values() {
    let fixture = masking_fixture(NO_UNMASK).await;
    let direct = fixture.direct_superuser().await;
    let sql = "SELECT * FROM customers ORDER BY id";
    let output =
        tokio::task::block_in_place(|| fixture.gateway.psql(&["-At", "-F", "\t", "-P", "null=<NULL>", "-c", sql]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_no_raw_pii("psql stdout", &output.stdout);
    assert_no_raw_pii("psql stderr", &output.stderr);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let masked: Vec<Received> = stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), COLUMNS.len(), "{line}");
            COLUMNS
                .iter()
                .zip(fields)
                .map(|(name, field)| (name.to_string(), (field != "<NULL>").then(|| field.as_bytes().to_vec())))
                .collect()
        })
        .collect();
    // psql and tokio-postgres both run with the server's default settings, so the text is the same.
    let expected = from_simple_messages(&direct.simple_query(sql).await.expect("direct"));
    check_rows("psql", &expected, &masked);
}

/// A Parse/Bind/Describe/Execute/Sync round asking for `formats` (0 text, 1 binary; one code applies to every
/// column); the RowDescription's names and the DataRows.
async fn extended_round(client: &mut RawClient, sql: &str, formats: &[i16]) -> Vec<Received> {
    let mut parse = b"\0".to_vec();
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(b"\0\0\0");
    let mut bind = b"\0\0".to_vec();
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for format in formats {
        bind.extend_from_slice(&format.to_be_bytes());
    }
    let mut execute = b"\0".to_vec();
    execute.extend_from_slice(&0i32.to_be_bytes());
    let mut round = raw::message(b'P', &parse);
    round.extend(raw::message(b'B', &bind));
    round.extend(raw::message(b'D', b"P\0"));
    round.extend(raw::message(b'E', &execute));
    round.extend(raw::message(b'S', &[]));
    client.send(&round).await;
    let messages = client.read_until_ready().await;
    if let Some(error) = messages.iter().find(|message| message.tag == b'E') {
        panic!("{sql}: {:?}", error.error());
    }
    let description = messages.iter().find(|message| message.tag == b'T').expect("a RowDescription");
    let names = row_description_names(&description.body);
    messages
        .iter()
        .filter(|message| message.tag == b'D')
        .map(|row| names.iter().cloned().zip(data_row_values(&row.body)).collect())
        .collect()
}

fn row_description_names(body: &[u8]) -> Vec<String> {
    let count = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut names = Vec::with_capacity(count);
    let mut at = 2;
    for _ in 0..count {
        let end = at + body[at..].iter().position(|&byte| byte == 0).expect("a NUL-terminated name");
        names.push(String::from_utf8(body[at..end].to_vec()).expect("UTF-8 name"));
        // NUL, table OID, attnum, type OID, size, modifier, format.
        at = end + 1 + 4 + 2 + 4 + 2 + 4 + 2;
    }
    names
}

fn data_row_values(body: &[u8]) -> Vec<Option<Vec<u8>>> {
    let count = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut values = Vec::with_capacity(count);
    let mut at = 2;
    for _ in 0..count {
        let length = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if length < 0 {
            values.push(None);
        } else {
            values.push(Some(body[at..at + length as usize].to_vec()));
            at += length as usize;
        }
    }
    assert_eq!(at, body.len(), "a DataRow's values fill it exactly");
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_text_and_mixed_format_results_are_masked() {
    let fixture = masking_fixture(NO_UNMASK).await;
    let direct = fixture.direct_superuser().await;
    let (mut client, _) = RawClient::login(
        fixture.gateway.address(),
        &[("user", "agent"), ("database", &fixture.app.database)],
        &fixture.gateway.api_key,
    )
    .await;

    // Text format for every column: the same bytes the simple protocol gives.
    let sql = "SELECT * FROM customers ORDER BY id";
    let expected = from_simple_messages(&direct.simple_query(sql).await.expect("direct"));
    let masked = extended_round(&mut client, sql, &[0]).await;
    check_rows("extended, text results", &expected, &masked);

    // One format code per column: text and binary mixed in one row.
    let sql = "SELECT id, full_name, email, birth_date, created_at, card, ref, secret_note FROM customers ORDER BY id";
    let formats: [i16; 8] = [1, 0, 1, 1, 0, 0, 1, 1];
    let text_rows = from_simple_messages(&direct.simple_query(sql).await.expect("direct text"));
    let binary_rows = from_typed_rows(&direct.query(sql, &[]).await.expect("direct binary"));
    let expected: Vec<Received> = text_rows
        .iter()
        .zip(&binary_rows)
        .map(|(text_row, binary_row)| {
            formats
                .iter()
                .enumerate()
                .map(|(index, format)| if *format == 0 { text_row[index].clone() } else { binary_row[index].clone() })
                .collect()
        })
        .collect();
    let masked = extended_round(&mut client, sql, &formats).await;
    check_rows("extended, mixed formats", &expected, &masked);

    // The session goes on, and nothing raw came over the socket at all.
    let after = extended_round(&mut client, "SELECT 41 + 1 AS answer", &[0]).await;
    assert_eq!(after, vec![vec![("answer".to_string(), Some(b"42".to_vec()))]]);
    assert_no_raw_pii("extended protocol socket", &client.received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_results_are_masked_and_typed_values_survive() {
    let fixture = masking_fixture(NO_UNMASK).await;
    let direct = fixture.direct_superuser().await;
    let agent = fixture.gateway.connect().await;

    // tokio-postgres asks for every result column in binary format.
    let sql = "SELECT * FROM customers ORDER BY id";
    let expected = from_typed_rows(&direct.query(sql, &[]).await.expect("direct"));
    let masked = from_typed_rows(&agent.query(sql, &[]).await.expect("binary select through warden"));
    assert_no_raw_pii("binary SELECT *", &received_bytes(&masked));
    check_rows("binary SELECT *", &expected, &masked);

    // Typed values decode as they would directly.
    let sql = "SELECT id, email, amount, created_at, ref, full_name, birth_date FROM customers ORDER BY id";
    let direct_rows = direct.query(sql, &[]).await.expect("direct typed");
    let rows = agent.query(sql, &[]).await.expect("typed select");
    assert_eq!(rows.len(), CUSTOMERS.len());
    for ((row, direct_row), customer) in rows.iter().zip(&direct_rows).zip(&CUSTOMERS) {
        assert_eq!(row.get::<_, i32>("id"), customer.id);
        let email: &str = row.get("email");
        assert_eq!(email, format!("***@{}", customer.email.rsplit_once('@').unwrap().1));
        let created_at: std::time::SystemTime = row.get("created_at");
        assert_eq!(created_at, direct_row.get::<_, std::time::SystemTime>("created_at"));
        assert_eq!(row.get::<_, Wire>("amount").0, direct_row.get::<_, Wire>("amount").0);
        assert_eq!(row.get::<_, Wire>("ref").0, direct_row.get::<_, Wire>("ref").0);
        assert_eq!(row.get::<_, &str>("full_name"), "[MASKED]");
        assert_eq!(row.get::<_, Option<Wire>>("birth_date").map(|wire| wire.0), None);
    }

    // With a parameter on a PII column, as an ORM would send it.
    let rows = agent
        .query("SELECT id, ssn, phone FROM customers WHERE email = $1", &[&"grace.hopper@navy.example.org"])
        .await
        .expect("parameterised select");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].get::<_, i32>(0), rows[0].get::<_, &str>(1), rows[0].get::<_, &str>(2)),
        (2, "[SSN]", "[PHONE]")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_built_in_the_query_is_masked_and_stays_valid() {
    let fixture = masking_fixture(NO_UNMASK).await;
    let direct = fixture.direct_superuser().await;
    let agent = fixture.gateway.connect().await;

    for (sql, binary_prefix) in [
        ("SELECT row_to_json(c) FROM customers c ORDER BY id", None),
        ("SELECT json_agg(c ORDER BY id) FROM customers c", None),
        ("SELECT to_jsonb(c) FROM customers c ORDER BY id", Some(1u8)),
    ] {
        // As text (simple protocol).
        let direct_text = from_simple_messages(&direct.simple_query(sql).await.expect("direct"));
        let messages = agent.simple_query(sql).await.unwrap_or_else(|error| panic!("{sql}: {error:?}"));
        assert_no_raw_pii(sql, &simple_bytes(&messages));
        let masked_text = from_simple_messages(&messages);
        let parse_text = |rows: &[Received]| -> Vec<serde_json::Value> {
            rows.iter()
                .map(|row| {
                    let value = row[0].1.as_deref().expect("not NULL");
                    serde_json::from_slice(value).unwrap_or_else(|error| {
                        panic!("{sql}: invalid JSON ({error}): {}", String::from_utf8_lossy(value))
                    })
                })
                .collect()
        };
        check_json(&format!("{sql} (text)"), &parse_text(&direct_text), &parse_text(&masked_text));

        // As a typed value (binary format; jsonb's starts with its version byte).
        let parse_binary = |rows: &[tokio_postgres::Row]| -> Vec<serde_json::Value> {
            rows.iter()
                .map(|row| {
                    let bytes = row.get::<_, Wire>(0).0;
                    let json = match binary_prefix {
                        Some(version) => {
                            assert_eq!(bytes[0], version, "{sql}: the jsonb version byte");
                            &bytes[1..]
                        }
                        None => &bytes[..],
                    };
                    serde_json::from_slice(json).unwrap_or_else(|error| {
                        panic!("{sql}: invalid JSON ({error}): {}", String::from_utf8_lossy(json))
                    })
                })
                .collect()
        };
        let direct_rows = direct.query(sql, &[]).await.expect("direct binary");
        let rows = agent.query(sql, &[]).await.unwrap_or_else(|error| panic!("{sql} (binary): {error:?}"));
        assert_no_raw_pii(sql, &received_bytes(&from_typed_rows(&rows)));
        check_json(&format!("{sql} (binary)"), &parse_binary(&direct_rows), &parse_binary(&rows));
    }
}

/// Compares JSON built from customer rows (objects, or arrays of them) member by member.
fn check_json(what: &str, direct: &[serde_json::Value], masked: &[serde_json::Value]) {
    let objects = |values: &[serde_json::Value]| -> Vec<serde_json::Map<String, serde_json::Value>> {
        values
            .iter()
            .flat_map(|value| match value {
                serde_json::Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            })
            .map(|value| value.as_object().unwrap_or_else(|| panic!("{what}: not an object: {value}")).clone())
            .collect()
    };
    let (direct, masked) = (objects(direct), objects(masked));
    assert_eq!(masked.len(), CUSTOMERS.len(), "{what}: one object per customer");
    assert_eq!(direct.len(), masked.len());
    for (direct, masked) in direct.iter().zip(&masked) {
        let what = format!("{what}, customer {}", direct["id"]);
        let direct_keys: Vec<_> = direct.keys().collect();
        let masked_keys: Vec<_> = masked.keys().collect();
        assert_eq!(masked_keys, direct_keys, "{what}: the members");
        let string = |name: &str| masked[name].as_str().unwrap_or_else(|| panic!("{what}: {name} is not a string"));
        let raw = |name: &str| direct[name].as_str().unwrap_or_else(|| panic!("{what}: direct {name} not a string"));
        for name in ["id", "order_ref", "created_at", "release", "ref", "amount"] {
            assert_eq!(masked[name], direct[name], "{what}: {name} is not PII");
        }
        assert_eq!(string("full_name"), "[MASKED]", "{what}: the full_name column rule applies inside JSON");
        assert!(masked["secret_note"].is_null(), "{what}: secret_note is {}", masked["secret_note"]);
        assert_ne!(masked["birth_date"], direct["birth_date"], "{what}: birth_date is under a rule");
        assert_eq!(string("email"), format!("***@{}", raw("email").rsplit_once('@').unwrap().1), "{what}");
        assert_eq!(string("ssn"), "[SSN]", "{what}");
        assert_eq!(string("phone"), "[PHONE]", "{what}");
        assert_eq!(string("card"), star_digits_but_last_four(raw("card")), "{what}");
        assert_eq!(string("iban"), iban_partial(raw("iban")), "{what}");
        assert!(is_ipv4_token(string("ip")), "{what}: ip is {}", masked["ip"]);
        let id = direct["id"].as_i64().expect("an integer id");
        let customer = CUSTOMERS.iter().find(|customer| i64::from(customer.id) == id).expect("a fixture id");
        check_bio(&format!("{what}, bio"), customer, direct["bio"].as_str(), masked["bio"].as_str());
        if customer.bio.is_none() {
            assert!(masked["bio"].is_null(), "{what}: bio is {}", masked["bio"]);
        }
    }
}

/// COPY out in text format: rows of tab-separated fields, `\N` for NULL.
fn parse_copy_text(output: &[u8], names: &[&str]) -> Vec<Received> {
    let text = std::str::from_utf8(output).expect("COPY text is UTF-8");
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), names.len(), "a COPY line with every column: {line:?}");
            names
                .iter()
                .zip(fields)
                .map(|(name, field)| (name.to_string(), (field != "\\N").then(|| field.as_bytes().to_vec())))
                .collect()
        })
        .collect()
}

/// COPY out in CSV: an unquoted empty field is NULL; quoted fields may hold commas, quotes (doubled) and newlines.
fn parse_copy_csv(output: &[u8], names: &[&str]) -> Vec<Received> {
    let text = std::str::from_utf8(output).expect("COPY csv is UTF-8");
    let mut rows = Vec::new();
    let mut fields: Vec<Option<Vec<u8>>> = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut in_quotes, mut chars) = (false, false, text.chars().peekable());
    let finish_field = |field: &mut String, quoted: &mut bool, fields: &mut Vec<Option<Vec<u8>>>| {
        fields.push((*quoted || !field.is_empty()).then(|| field.as_bytes().to_vec()));
        field.clear();
        *quoted = false;
    };
    while let Some(character) = chars.next() {
        match (in_quotes, character) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, other) => field.push(other),
            (false, '"') => {
                in_quotes = true;
                quoted = true;
            }
            (false, ',') => finish_field(&mut field, &mut quoted, &mut fields),
            (false, '\n') => {
                finish_field(&mut field, &mut quoted, &mut fields);
                assert_eq!(fields.len(), names.len(), "a CSV record with every column");
                rows.push(names.iter().map(|name| name.to_string()).zip(fields.drain(..)).collect());
            }
            (false, other) => field.push(other),
        }
    }
    assert!(fields.is_empty() && field.is_empty() && !in_quotes, "the CSV ends with a complete record");
    rows
}

/// COPY out in binary format: the signature, flags and extension, tuples of length-prefixed fields, the trailer.
fn parse_copy_binary(output: &[u8], names: &[&str]) -> Vec<Received> {
    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
    assert!(output.starts_with(SIGNATURE), "the binary COPY signature");
    let read_i32 = |at: usize| i32::from_be_bytes(output[at..at + 4].try_into().expect("four bytes"));
    let mut at = SIGNATURE.len() + 4;
    at += 4 + read_i32(at) as usize;
    let mut rows = Vec::new();
    loop {
        let count = i16::from_be_bytes([output[at], output[at + 1]]);
        at += 2;
        if count == -1 {
            break;
        }
        assert_eq!(count as usize, names.len(), "a binary COPY tuple with every column");
        let mut row = Vec::new();
        for name in names {
            let length = read_i32(at);
            at += 4;
            let value = (length >= 0).then(|| {
                let value = output[at..at + length as usize].to_vec();
                at += length as usize;
                value
            });
            row.push((name.to_string(), value));
        }
        rows.push(row);
    }
    assert_eq!(at, output.len(), "nothing after the binary COPY trailer");
    rows
}

async fn copy_out(client: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    let stream = client.copy_out(sql).await.unwrap_or_else(|error| panic!("{sql}: {error:?}"));
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap_or_else(|error| panic!("{sql}: {error:?}"));
    chunks.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_is_masked_in_text_csv_and_binary() {
    let fixture = masking_fixture(NO_UNMASK).await;
    let direct = fixture.direct_superuser().await;
    let agent = fixture.gateway.connect().await;
    type Parser = fn(&[u8], &[&str]) -> Vec<Received>;
    let cases: [(&str, &[&str], Parser); 5] = [
        ("COPY customers TO STDOUT", &COLUMNS, parse_copy_text),
        ("COPY customers TO STDOUT WITH (FORMAT csv)", &COLUMNS, parse_copy_csv),
        ("COPY customers TO STDOUT (FORMAT binary)", &COLUMNS, parse_copy_binary),
        (
            "COPY (SELECT email, full_name FROM customers ORDER BY id) TO STDOUT",
            &["email", "full_name"],
            parse_copy_text,
        ),
        (
            "COPY (SELECT id, card, secret_note, birth_date FROM customers ORDER BY id) TO STDOUT (FORMAT binary)",
            &["id", "card", "secret_note", "birth_date"],
            parse_copy_binary,
        ),
    ];
    for (sql, names, parse) in cases {
        let expected = parse(&copy_out(&direct, sql).await, names);
        let output = copy_out(&agent, sql).await;
        assert_no_raw_pii(sql, &output);
        check_rows(sql, &expected, &parse(&output, names));
    }

    // psql's COPY to its standard output, over the simple protocol.
    let sql = "COPY customers TO STDOUT WITH (FORMAT csv)";
    let output = tokio::task::block_in_place(|| fixture.gateway.psql(&["-c", sql]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_no_raw_pii("psql COPY", &output.stdout);
    let expected = parse_copy_csv(&copy_out(&direct, sql).await, &COLUMNS);
    check_rows("psql COPY csv", &expected, &parse_copy_csv(&output.stdout, &COLUMNS));

    // The session goes on after every COPY.
    let row = agent.query_one("SELECT count(*) FROM customers", &[]).await.expect("after COPY");
    assert_eq!(row.get::<_, i64>(0), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_and_portals_are_masked_batch_by_batch() {
    let fixture = masking_fixture(NO_UNMASK).await;
    let direct = fixture.direct_superuser().await;
    let mut agent = fixture.gateway.connect().await;

    // A cursor fetched in two batches over the simple protocol.
    let expected = from_simple_messages(&direct.simple_query("SELECT * FROM customers ORDER BY id").await.unwrap());
    let messages = agent
        .simple_query(
            "BEGIN; DECLARE c CURSOR FOR SELECT * FROM customers ORDER BY id; FETCH 2 FROM c; FETCH ALL FROM c; COMMIT",
        )
        .await
        .expect("cursor");
    assert_no_raw_pii("cursor FETCH", &simple_bytes(&messages));
    check_rows("cursor FETCH", &expected, &from_simple_messages(&messages));
    let counts = command_counts(&messages);
    assert_eq!(counts[2..4], [2, 3], "FETCH 2, then FETCH ALL: {counts:?}");

    // A BINARY cursor sends binary DataRows over the simple protocol; text columns are UTF-8 there too.
    let sql = "SELECT id::text AS id, full_name, email, ssn, card, secret_note FROM customers ORDER BY id";
    let expected = from_simple_messages(&direct.simple_query(sql).await.unwrap());
    let messages = agent
        .simple_query(&format!("BEGIN; DECLARE b BINARY CURSOR FOR {sql}; FETCH ALL FROM b; COMMIT"))
        .await
        .expect("binary cursor");
    assert_no_raw_pii("binary cursor", &simple_bytes(&messages));
    check_rows("binary cursor", &expected, &from_simple_messages(&messages));

    // An extended-protocol portal executed with a row limit: Execute, PortalSuspended, Execute again.
    let sql = "SELECT * FROM customers ORDER BY id";
    let expected = from_typed_rows(&direct.query(sql, &[]).await.unwrap());
    let transaction = agent.transaction().await.expect("begin");
    let portal = transaction.bind(sql, &[]).await.expect("bind");
    let mut batches = Vec::new();
    let mut masked = Vec::new();
    loop {
        let rows = transaction.query_portal(&portal, 2).await.expect("execute with a row limit");
        batches.push(rows.len());
        masked.extend(from_typed_rows(&rows));
        if rows.len() < 2 {
            break;
        }
    }
    transaction.commit().await.expect("commit");
    assert_eq!(batches, [2, 2, 1]);
    assert_no_raw_pii("portal batches", &received_bytes(&masked));
    check_rows("portal batches", &expected, &masked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_do_not_echo_raw_values() {
    let fixture = masking_fixture(NO_UNMASK).await;
    let agent = fixture.gateway.connect().await;
    let check = |what: &str, error: &tokio_postgres::Error| {
        let db = error.as_db_error().unwrap_or_else(|| panic!("{what}: not a server error: {error:?}"));
        let mut fields = format!("{}\n{}", db.message(), db.detail().unwrap_or_default());
        fields.push_str(&format!("\n{db:?}\n{error}"));
        assert_no_raw_pii(what, fields.as_bytes());
    };

    // A unique violation's detail names the existing key: "Key (email)=(…) already exists."
    let duplicate =
        "INSERT INTO customers (id, full_name, email) VALUES (99, 'Someone Else', 'ada.lovelace@example.com')";
    let error = agent.execute(duplicate, &[]).await.expect_err("duplicate email, extended protocol");
    assert_eq!(sqlstate(&error), "23505");
    assert_eq!(error.as_db_error().unwrap().constraint(), Some("customers_email_key"));
    check("unique violation (extended)", &error);
    let error = agent.simple_query(duplicate).await.expect_err("duplicate email, simple protocol");
    assert_eq!(sqlstate(&error), "23505");
    check("unique violation (simple)", &error);
    agent.query_one("SELECT 1", &[]).await.expect("the session goes on");

    // A failed cast quotes the stored value in the message: "invalid input syntax for type integer: "…"".
    let error = agent.query("SELECT ssn::int FROM customers ORDER BY id", &[]).await.expect_err("bad cast");
    assert_eq!(sqlstate(&error), "22P02");
    check("cast error", &error);
    let error = agent.simple_query("SELECT email::int FROM customers ORDER BY id").await.expect_err("bad cast");
    assert_eq!(sqlstate(&error), "22P02");
    check("cast error (simple)", &error);

    let rows = agent.query("SELECT count(*) FROM customers", &[]).await.expect("the session is still usable");
    assert_eq!(rows[0].get::<_, i64>(0), 5, "nothing was inserted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_store_keeps_no_raw_pii_and_counts_what_was_masked() {
    let mut fixture = masking_fixture(NO_UNMASK).await;
    let agent = fixture.gateway.connect().await;
    let messages = agent.simple_query("SELECT * FROM customers ORDER BY id").await.expect("select");
    assert_eq!(command_counts(&messages), [5]);
    agent.query("SELECT email, card FROM customers WHERE id = $1", &[&2i32]).await.expect("extended select");
    // Raw PII in the statement text, and an error whose detail carries one.
    let new_email = "barbara.liskov@example.com";
    let new_ssn = "678-90-1234";
    let insert = format!(
        "INSERT INTO customers (id, full_name, email, ssn) VALUES (6, 'Barbara Liskov', '{new_email}', '{new_ssn}')"
    );
    agent.batch_execute(&insert).await.expect("insert");
    agent
        .batch_execute("INSERT INTO customers (id, email) VALUES (7, 'ada.lovelace@example.com')")
        .await
        .expect_err("duplicate email");
    drop(agent);
    // Stopping the gateway ends and records the session, with its counts.
    fixture.gateway.stop().await;

    let warden = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(args)
            .arg("--config")
            .arg(&fixture.gateway.config_path)
            .env_remove("WARDEN_CONFIG")
            .output_in_place()
            .expect("run warden");
        assert!(output.status.success(), "warden {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output
    };
    let listed: serde_json::Value =
        serde_json::from_slice(&warden(&["sessions", "list", "--json"]).stdout).expect("sessions list JSON");
    let listed = listed.as_array().expect("a list of sessions");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let id = listed[0]["id"].as_str().expect("a session id");
    let output = warden(&["sessions", "show", id, "--json"]);
    assert_no_raw_pii("warden sessions show --json", &output.stdout);
    for raw in [new_email, new_ssn] {
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains(raw),
            "{raw} is in the record:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let statements = shown["statements"].as_array().expect("statements");
    let recorded_insert = statements
        .iter()
        .find(|statement| statement["text"].as_str().is_some_and(|text| text.contains("Barbara Liskov")))
        .unwrap_or_else(|| panic!("the INSERT is recorded: {statements:#?}"));
    let text = recorded_insert["text"].as_str().unwrap();
    assert!(text.contains("***@example.com") && text.contains("[SSN]"), "{text}");
    let failed = statements
        .iter()
        .find(|statement| statement["text"].as_str().is_some_and(|text| text.contains("VALUES (7,")))
        .unwrap_or_else(|| panic!("the failed INSERT is recorded: {statements:#?}"));
    let error = failed["error"].as_str().expect("its error is recorded");
    assert!(error.starts_with("23505"), "{error}");

    let masked: BTreeMap<String, u64> =
        serde_json::from_value(shown["session"]["masked"].clone()).expect("a masked object of counts");
    let count = |name: &str| masked.get(name).copied().unwrap_or(0);
    // Five rows from the simple SELECT and one from the extended one.
    assert!(count("email") >= 6, "{masked:?}");
    assert!(count("payment_card") >= 6, "{masked:?}");
    assert!(count("us_ssn") >= 5, "{masked:?}");
    assert!(count("phone") >= 5, "{masked:?}");
    assert!(count("iban") >= 5, "{masked:?}");
    assert!(count("ipv4") >= 5, "{masked:?}");
    assert!(count("aws_access_key_id") >= 1, "{masked:?}");
    assert!(count("column") >= 15, "full_name, secret_note and birth_date of five rows: {masked:?}");
    assert_eq!(listed[0]["masked"], shown["session"]["masked"], "the list shows the same counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_allowed_to_unmask_sees_raw_values_and_no_one_else_does() {
    let policies = format!(
        r#"{NO_UNMASK}
@id("operators-read")
permit (principal in Warden::Group::"admin",
        action in [Warden::Action::"connect", Warden::Action::"read"],
        resource);

@id("operators-unmask")
permit (principal in Warden::Group::"admin",
        action == Warden::Action::"unmask",
        resource == Warden::Connection::"app");
"#
    );
    let fixture = masking_fixture(&policies).await;
    assert_eq!(fixture.app.database, "app", "the policy names the connection");
    let direct = fixture.direct_superuser().await;
    let operator = fixture
        .gateway
        .try_connect(&fixture.gateway.connection_string_with(&fixture.gateway.admin_key))
        .await
        .expect("the operator connects");
    let agent = fixture.gateway.connect().await;
    let reader = fixture
        .gateway
        .try_connect(&fixture.gateway.connection_string_with(&fixture.gateway.reader_key))
        .await
        .expect("the reader connects");

    let sql = "SELECT * FROM customers ORDER BY id";
    let expected_text = from_simple_messages(&direct.simple_query(sql).await.unwrap());
    let expected_binary = from_typed_rows(&direct.query(sql, &[]).await.unwrap());
    // The operator gets exactly what PostgreSQL sent, raw PII included.
    assert_eq!(from_simple_messages(&operator.simple_query(sql).await.expect("operator simple")), expected_text);
    assert_eq!(from_typed_rows(&operator.query(sql, &[]).await.expect("operator binary")), expected_binary);
    let copy = "COPY customers TO STDOUT";
    assert_eq!(copy_out(&operator, copy).await, copy_out(&direct, copy).await);

    // The others, in the same gateway at the same time, get masked values.
    for (who, client) in [("agent", &agent), ("reader", &reader)] {
        let messages = client.simple_query(sql).await.unwrap_or_else(|error| panic!("{who}: {error:?}"));
        assert_no_raw_pii(who, &simple_bytes(&messages));
        check_rows(who, &expected_text, &from_simple_messages(&messages));
        let rows = from_typed_rows(&client.query(sql, &[]).await.unwrap_or_else(|error| panic!("{who}: {error:?}")));
        check_rows(who, &expected_binary, &rows);
    }
}

/// A row larger than `limits.max_row_bytes` cannot be held whole to be masked: the session ends with an error naming
/// the limit, and nothing of the row reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_too_large_to_mask_ends_the_session_instead_of_passing() {
    let (postgres, app) = start_postgres(Default::default()).await;
    let gateway = TestGateway::builder(&postgres, &app)
        .masking(MASKING)
        .policies(NO_UNMASK)
        .limits("max_row_bytes = 1024")
        .start()
        .await;
    let agent = gateway.connect().await;
    let rows = agent.simple_query("SELECT repeat('x', 100)").await.expect("a small row passes");
    assert_eq!(command_counts(&rows), vec![1]);
    let error = agent.simple_query("SELECT repeat('ada.lovelace@example.com ', 200)").await.expect_err("too large");
    assert_eq!(sqlstate(&error), "XX000");
    let message = server_message(&error);
    assert!(message.contains("limits.max_row_bytes") && message.contains("1024"), "{message}");
    assert!(!format!("{error:?}").contains("ada.lovelace"), "{error:?}");
    assert!(agent.is_closed() || agent.simple_query("SELECT 1").await.is_err(), "the session is over");
    let again = gateway.connect().await;
    again.simple_query("SELECT 1").await.expect("new sessions still work");
}

/// Values computed from a masked column (expressions, whole rows, JSON built from it, renamed in a subquery) are
/// withheld; computed values that read no masked column arrive intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_values_cannot_carry_a_masked_column_out() {
    let fixture = masking_fixture(NO_UNMASK).await;
    let agent = fixture.gateway.connect().await;
    let names: Vec<&str> = CUSTOMERS.iter().map(|customer| customer.full_name).collect();
    let single = |messages: &[SimpleQueryMessage]| -> Vec<Option<String>> {
        messages
            .iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
                _ => None,
            })
            .collect()
    };
    for sql in [
        "SELECT upper(full_name) FROM customers ORDER BY id",
        "SELECT full_name || '' FROM customers ORDER BY id",
        "SELECT c::text FROM customers c ORDER BY id",
        "SELECT json_build_object('x', full_name) FROM customers ORDER BY id",
        "SELECT jsonb_build_array(full_name) FROM customers ORDER BY id",
        "SELECT row_to_json(x) FROM (SELECT full_name AS n FROM customers ORDER BY id) x",
        "WITH x AS (SELECT full_name AS n, id FROM customers) SELECT to_json(x) FROM x ORDER BY id",
    ] {
        let messages = agent.simple_query(sql).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
        let values = single(&messages);
        assert_eq!(values.len(), CUSTOMERS.len(), "{sql}");
        let received = simple_bytes(&messages);
        assert_no_raw_pii(sql, &received);
        for name in &names {
            let first = name.split(' ').next().expect("a first name");
            assert!(!String::from_utf8_lossy(&received).contains(first), "{sql}: {name} leaked: {values:?}");
        }
    }
    // JSON built by key from a table's rows keeps its shape, the masked member masked.
    let messages = agent.simple_query("SELECT row_to_json(c) FROM customers c ORDER BY id").await.expect("row_to_json");
    for value in single(&messages) {
        let document: serde_json::Value = serde_json::from_str(&value.expect("not null")).expect("valid JSON");
        assert_eq!(document["full_name"], "[MASKED]");
        assert!(document["id"].is_number());
    }
    // Computed from unmasked columns only: intact.
    let messages =
        agent.simple_query("SELECT id::text || '-' || release FROM customers ORDER BY id").await.expect("ok");
    let expected: Vec<Option<String>> =
        CUSTOMERS.iter().map(|customer| Some(format!("{}-{}", customer.id, customer.release))).collect();
    assert_eq!(single(&messages), expected);
}

/// The result rows an audit event keeps are the masked rows the client received, whatever the protocol: a simple
/// query, and a prepared statement whose binary rows warden described itself (so the columns are named).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audited_result_rows_are_the_masked_rows() {
    let mut fixture = masking_fixture(NO_UNMASK).await;
    let agent = fixture.gateway.connect().await;
    let sql = "SELECT id, full_name, email FROM customers ORDER BY id LIMIT 2";
    let messages = agent.simple_query(sql).await.expect("simple select");
    let received: Vec<Vec<Option<String>>> = messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some((0..3).map(|index| row.get(index).map(str::to_string)).collect()),
            _ => None,
        })
        .collect();
    let prepared = agent
        .query("SELECT email, id FROM customers WHERE id <= $1 ORDER BY id", &[&2i32])
        .await
        .expect("prepared select");
    let prepared_emails: Vec<String> = prepared.iter().map(|row| row.get(0)).collect();
    drop(agent);
    fixture.gateway.stop().await;

    let (events, _) = fixture.gateway.store().audit_log(None).await.expect("audit log");
    let statement = |needle: &str| {
        events
            .iter()
            .find(|sealed| sealed.event.kind == "statement" && sealed.event.body["text"].as_str() == Some(needle))
            .unwrap_or_else(|| panic!("no statement event for {needle}"))
            .event
            .body
            .clone()
    };
    let simple = statement(sql);
    assert_eq!(simple["result"]["sets"][0]["columns"], serde_json::json!(["id", "full_name", "email"]));
    assert_eq!(simple["result"]["sets"][0]["rows"], serde_json::json!(received), "{simple}");
    let extended = statement("SELECT email, id FROM customers WHERE id <= $1 ORDER BY id");
    assert_eq!(extended["result"]["sets"][0]["columns"], serde_json::json!(["email", "id"]), "{extended}");
    let emails: Vec<&str> = extended["result"]["sets"][0]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row[0].as_str().expect("an email"))
        .collect();
    assert_eq!(emails, prepared_emails, "{extended}");
    assert_eq!(extended["result"]["sets"][0]["rows"][0][1], "1", "binary int4 described by warden: {extended}");
    let log: Vec<u8> = events.iter().flat_map(|sealed| sealed.event.body.to_string().into_bytes()).collect();
    assert_no_raw_pii("the audit log", &log);
}
