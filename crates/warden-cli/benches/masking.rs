//! What masking costs a large result: `SELECT * FROM people` (10,000 rows, about half with PII) fetched on an open
//! connection directly from PostgreSQL (the floor), through a gateway connection without masking ("plain") and
//! through a connection of the same gateway with every built-in detector and a column rule ("masked"), over the
//! simple protocol (text results) and the extended one (binary results for typed columns). Prints median and p90
//! milliseconds per fetch, throughput, the ratios masked/plain and plain/direct, and what masking adds per row.
//!
//! `cargo bench -p warden-cli --bench masking` (release profile). `BENCH_ROUNDS` sets the measured rounds (default
//! 30, after 5 warm-up rounds).
//!
//! One gateway serves both sides: its builder's connection is the plain one, and a second `[[connection]]` to the
//! same database, appended to the config, is the masked one. Each round fetches every workload from every side in
//! turn, the order rotating from round to round, so drift on this noisy machine falls on all sides alike. The
//! client, the gateway and PostgreSQL share the machine's cores, as they do in the e2e tests: the figures are the
//! whole fetch as a client sees it, not the gateway's CPU alone.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};
use warden_mask::{Detector, Kind, Masker, MaskerConfig};
use warden_testkit::{AppDatabase, TempPostgres, TestGateway};

const ROWS: i32 = 10_000;
const WARM_UP_ROUNDS: usize = 5;
const QUERY: &str = "SELECT * FROM people";

/// The masked connection's rules: content detection with every built-in detector, and `full_name` redacted whatever
/// it holds (a name is PII no detector can recognise).
const MASKING: &str = r#"
[connection.masking]
detect = ["all"]

[[connection.masking.column]]
match = "public.people.full_name"
strategy = "redact"
"#;

/// Agents may connect and read, and nobody may `unmask` (the default test policies permit agents every action,
/// which would include `unmask` and leave the masked side unmasked).
const POLICIES: &str = r#"
@id("agents-read")
permit (principal in Warden::Group::"agents",
        action in [Warden::Action::"connect", Warden::Action::"read"],
        resource);
"#;

const FIRST_NAMES: [&str; 16] = [
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "John",
    "Margaret",
    "Niklaus",
    "Radia",
    "Tim",
    "Shafi",
    "Leslie",
    "Hedy",
];
const LAST_NAMES: [&str; 16] = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "McCarthy",
    "Hamilton",
    "Wirth",
    "Perlman",
    "Berners-Lee",
    "Goldwasser",
    "Lamport",
    "Lamarr",
];
const DOMAINS: [&str; 4] = ["example.com", "example.org", "mail.example.net", "corp.example.co.uk"];
const AREA_CODES: [u32; 6] = [415, 212, 646, 312, 617, 206];
/// Clean prose of about 100 bytes, nothing a detector should take for PII.
const NOTES: [&str; 6] = [
    "Prefers contact by letter in the morning; asked about the annual plan and the loyalty discount for teams.",
    "Renewed without changes after the spring review. Wants the quarterly report sent to the finance office.",
    "Moved to the premium tier last autumn and reports that the new dashboard is much faster than the old one.",
    "Called about a delayed parcel; the courier confirmed delivery the next day and the customer was satisfied.",
    "Interested in the workshop series on data quality, especially the sessions about auditing shared reports.",
    "Closed two support tickets this month. Both were questions about exporting invoices to the accounting tool.",
];

/// One row of `public.people`, as inserted.
struct Person {
    id: i32,
    full_name: String,
    email: String,
    phone: String,
    ssn: String,
    card: String,
    notes: &'static str,
    amount: String,
    has_pii: bool,
}

/// A deterministic generator (xorshift64*), so every run measures the same table.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }

    fn digits(&mut self, count: usize) -> String {
        (0..count).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
}

/// The Luhn check digit that makes `payload` followed by it valid.
fn luhn_check_digit(payload: &str) -> char {
    let sum: u32 = payload
        .bytes()
        .rev()
        .enumerate()
        .map(|(index, byte)| {
            let digit = u32::from(byte - b'0');
            // Counting from the check digit (index 0 of the full number), every second digit is doubled.
            let doubled = if index % 2 == 0 { digit * 2 } else { digit };
            if doubled > 9 {
                doubled - 9
            } else {
                doubled
            }
        })
        .sum();
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

/// A Luhn-valid 16-digit Visa or Mastercard number in groups of four.
fn card_number(random: &mut Random) -> String {
    let prefix = if random.below(2) == 0 { "4".to_string() } else { format!("5{}", 1 + random.below(5)) };
    let mut digits = prefix.clone();
    digits.push_str(&random.digits(15 - prefix.len()));
    digits.push(luhn_check_digit(&digits));
    let groups: Vec<&str> = (0..4).map(|group| &digits[group * 4..group * 4 + 4]).collect();
    groups.join(" ")
}

/// A US SSN with a valid area (001–665, 667–899), group and serial.
fn ssn(random: &mut Random) -> String {
    let mut area = 1 + random.below(899);
    if area == 666 {
        area = 667;
    }
    format!("{area:03}-{:02}-{:04}", 1 + random.below(99), 1 + random.below(9999))
}

/// The fixture: even ids carry PII in every PII column, odd ids carry none.
fn people() -> Vec<Person> {
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    (1..=ROWS)
        .map(|id| {
            let index = id as usize;
            let notes = NOTES[index % NOTES.len()];
            let amount = format!("{}.{:02}", random.below(5000), random.below(100));
            if id % 2 == 0 {
                let first = FIRST_NAMES[random.below(16) as usize];
                let last = LAST_NAMES[random.below(16) as usize];
                Person {
                    id,
                    full_name: format!("{first} {last}"),
                    email: format!(
                        "{}.{}{id}@{}",
                        first.to_lowercase(),
                        last.to_lowercase(),
                        DOMAINS[index % DOMAINS.len()]
                    ),
                    phone: format!(
                        "+1 {} 555 {}",
                        AREA_CODES[random.below(AREA_CODES.len() as u64) as usize],
                        random.digits(4)
                    ),
                    ssn: ssn(&mut random),
                    card: card_number(&mut random),
                    notes,
                    amount,
                    has_pii: true,
                }
            } else {
                Person {
                    id,
                    full_name: "Shared kiosk account".to_string(),
                    email: "not provided".to_string(),
                    phone: "withheld".to_string(),
                    ssn: "not collected".to_string(),
                    card: "invoiced monthly".to_string(),
                    notes,
                    amount,
                    has_pii: false,
                }
            }
        })
        .collect()
}

/// Fails unless warden-mask detects each PII value whole, as the detector meant for it, and nothing in the rest.
fn check_fixture_is_detected(people: &[Person]) {
    let masker = Masker::new(&MaskerConfig::all([7; 32])).expect("the built-in detectors compile");
    for person in people {
        let clean: Vec<&str> = if person.has_pii {
            for (value, detector) in [
                (&person.email, Detector::Email),
                (&person.phone, Detector::Phone),
                (&person.ssn, Detector::UsSsn),
                (&person.card, Detector::PaymentCard),
            ] {
                let findings = masker.find(value);
                let whole = findings.len() == 1
                    && findings[0].kind == Kind::Builtin(detector)
                    && findings[0].range == (0..value.len());
                assert!(
                    whole,
                    "row {}: {value:?} is not detected whole as {}: {findings:?}",
                    person.id,
                    detector.name()
                );
            }
            vec![person.notes]
        } else {
            vec![&person.full_name, &person.email, &person.phone, &person.ssn, &person.card, person.notes]
        };
        for value in clean {
            let findings = masker.find(value);
            assert!(findings.is_empty(), "row {}: clean {value:?} has findings {findings:?}", person.id);
        }
    }
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Creates and fills `public.people` as the superuser, readable by the app's role.
async fn create_table(postgres: &TempPostgres, app: &AppDatabase, people: &[Person]) {
    let superuser = connect(&postgres.url(&app.database)).await;
    let mut sql = format!(
        "CREATE TABLE public.people (
             id int PRIMARY KEY,
             full_name text,
             email text,
             phone text,
             ssn text,
             card text,
             notes text,
             amount numeric,
             created_at timestamptz
         );
         GRANT SELECT ON public.people TO {role};\n",
        role = app.role
    );
    for chunk in people.chunks(1000) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|person| {
                format!(
                    "({id}, {}, {}, {}, {}, {}, {}, {}, \
                     timestamptz '2024-01-01 00:00:00+00' + {id} * interval '7 minutes 13 seconds')",
                    literal(&person.full_name),
                    literal(&person.email),
                    literal(&person.phone),
                    literal(&person.ssn),
                    literal(&person.card),
                    literal(person.notes),
                    person.amount,
                    id = person.id,
                )
            })
            .collect();
        sql.push_str(&format!("INSERT INTO public.people VALUES {};\n", rows.join(",\n")));
    }
    superuser.batch_execute(&sql).await.expect("create and fill public.people");
    superuser.batch_execute("VACUUM ANALYZE public.people").await.expect("vacuum");
}

async fn connect(connection_string: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(connection_string, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connect {connection_string:?}: {error:?}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The length of a value as the server sent it, without copying it.
struct WireLength(usize);

impl<'a> FromSql<'a> for WireLength {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<WireLength, Box<dyn std::error::Error + Sync + Send>> {
        Ok(WireLength(raw.len()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    /// `simple_query`: text results.
    Simple,
    /// `query`: Parse/Bind/Execute, binary results for every column.
    Extended,
}

impl Workload {
    const ALL: [Workload; 2] = [Workload::Simple, Workload::Extended];

    fn name(self) -> &'static str {
        match self {
            Workload::Simple => "simple (text)",
            Workload::Extended => "extended (binary)",
        }
    }
}

/// What one fetch returned: per row, its id and its email and full_name text (NULL as `None`).
struct Fetched {
    rows: Vec<(i32, Option<String>, Option<String>)>,
    /// The sum of the values' lengths: about the DataRow bytes.
    value_bytes: usize,
}

/// Fetches every row of [`QUERY`]; returns the time the fetch took, and the rows when `inspect` is set (read
/// after the clock stopped).
async fn fetch(client: &Client, workload: Workload, inspect: bool) -> (Duration, Option<Fetched>) {
    match workload {
        Workload::Simple => {
            let start = Instant::now();
            let messages = client.simple_query(QUERY).await.expect("simple SELECT");
            let elapsed = start.elapsed();
            let rows: Vec<_> = messages
                .iter()
                .filter_map(|message| match message {
                    SimpleQueryMessage::Row(row) => Some(row),
                    _ => None,
                })
                .collect();
            assert_eq!(rows.len(), ROWS as usize, "a simple fetch returns every row");
            let fetched = inspect.then(|| Fetched {
                rows: rows
                    .iter()
                    .map(|row| {
                        let id = row.get("id").and_then(|id| id.parse().ok()).expect("an id");
                        (id, row.get("email").map(str::to_string), row.get("full_name").map(str::to_string))
                    })
                    .collect(),
                value_bytes: rows
                    .iter()
                    .map(|row| (0..row.len()).map(|index| row.get(index).map_or(0, str::len)).sum::<usize>())
                    .sum(),
            });
            (elapsed, fetched)
        }
        Workload::Extended => {
            let start = Instant::now();
            let rows = client.query(QUERY, &[]).await.expect("extended SELECT");
            let elapsed = start.elapsed();
            assert_eq!(rows.len(), ROWS as usize, "an extended fetch returns every row");
            let fetched = inspect.then(|| Fetched {
                rows: rows
                    .iter()
                    .map(|row| {
                        let email: Option<&str> = row.get("email");
                        let full_name: Option<&str> = row.get("full_name");
                        (row.get("id"), email.map(str::to_string), full_name.map(str::to_string))
                    })
                    .collect(),
                value_bytes: rows
                    .iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|index| row.get::<_, Option<WireLength>>(index).map_or(0, |length| length.0))
                            .sum::<usize>()
                    })
                    .sum(),
            });
            (elapsed, fetched)
        }
    }
}

/// Fails unless the masked side masked: no raw email of the fixture among its emails (every PII row's email
/// changed to a partial form) and no raw name among its names. The plain side must return them raw, or the
/// comparison would mean nothing.
fn check_masking(workload: Workload, people: &[Person], plain: &Fetched, masked: &Fetched) {
    let name = workload.name();
    let raw_emails: HashSet<&str> =
        people.iter().filter(|person| person.has_pii).map(|person| person.email.as_str()).collect();
    let raw_names: HashSet<&str> = people.iter().map(|person| person.full_name.as_str()).collect();
    let plain_raw_emails =
        plain.rows.iter().filter(|(_, email, _)| email.as_deref().is_some_and(|email| raw_emails.contains(email)));
    assert_eq!(plain_raw_emails.count(), raw_emails.len(), "{name}: the plain side returns every raw email");
    let mut masked_emails = 0;
    for (id, email, full_name) in &masked.rows {
        let email = email.as_deref().unwrap_or_default();
        assert!(!raw_emails.contains(email), "{name}: row {id}: a raw email in the masked result: {email:?}");
        if let Some(full_name) = full_name {
            assert!(
                !raw_names.contains(full_name.as_str()),
                "{name}: row {id}: a raw name in the masked result: {full_name:?}"
            );
        }
        if people[*id as usize - 1].has_pii {
            assert!(email.contains("***"), "{name}: row {id}: the email is not masked: {email:?}");
            masked_emails += 1;
        }
    }
    assert_eq!(masked_emails, raw_emails.len(), "{name}: every PII row is in the masked result");
}

struct Samples {
    millis: Vec<f64>,
}

impl Samples {
    fn quantile(&self, quantile: f64) -> f64 {
        let mut sorted = self.millis.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn median(&self) -> f64 {
        let mut sorted = self.millis.clone();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        }
    }
}

const SIDES: [&str; 3] = ["direct", "plain", "masked"];

async fn run(postgres: &TempPostgres, app: &AppDatabase) {
    let people = people();
    check_fixture_is_detected(&people);
    create_table(postgres, app, &people).await;

    // The builder's connection ("app") is the plain one; a second connection to the same database masks.
    let masked_connection = format!(
        r#"
[[connection]]
name = "masked"
kind = "postgres"
address = "{address}"
database = "{database}"
user = "{role}"
password = {{ file = "upstream.password" }}
tls = {{ mode = "disable" }}
{MASKING}"#,
        address = postgres.address(),
        database = app.database,
        role = app.role,
    );
    let gateway = TestGateway::builder(postgres, app).policies(POLICIES).config_extra(&masked_connection).start().await;
    let direct = connect(&format!(
        "host=127.0.0.1 port={} user={} password={} dbname={} sslmode=disable",
        postgres.port(),
        app.role,
        app.password,
        app.database
    ))
    .await;
    let plain = gateway.connect().await;
    let masked =
        connect(&gateway.connection_string().replace(&format!("dbname={}", app.database), "dbname=masked")).await;
    let clients = [&direct, &plain, &masked];

    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|value| value.parse().ok()).unwrap_or(30);
    let mut samples: Vec<Vec<Samples>> =
        Workload::ALL.iter().map(|_| SIDES.iter().map(|_| Samples { millis: Vec::new() }).collect()).collect();
    for round in 0..WARM_UP_ROUNDS + rounds {
        for (workload_index, &workload) in Workload::ALL.iter().enumerate() {
            for turn in 0..SIDES.len() {
                let side = (round + turn) % SIDES.len();
                let (elapsed, _) = fetch(clients[side], workload, false).await;
                if round >= WARM_UP_ROUNDS {
                    samples[workload_index][side].millis.push(elapsed.as_secs_f64() * 1000.0);
                }
            }
        }
    }

    // Not timed: what each workload returned, and that the masked side masked.
    let mut sizes = Vec::new();
    for &workload in &Workload::ALL {
        let (_, plain_rows) = fetch(&plain, workload, true).await;
        let (_, masked_rows) = fetch(&masked, workload, true).await;
        let (plain_rows, masked_rows) = (plain_rows.expect("inspected"), masked_rows.expect("inspected"));
        check_masking(workload, &people, &plain_rows, &masked_rows);
        sizes.push((plain_rows.value_bytes, masked_rows.value_bytes));
    }

    let pii_rows = people.iter().filter(|person| person.has_pii).count();
    println!(
        "\n{QUERY}: {ROWS} rows ({pii_rows} with PII), {rounds} rounds after {WARM_UP_ROUNDS} warm-up, sides in turn \
         on open connections"
    );
    println!("direct: no gateway; plain: gateway, no masking; masked: detect = [\"all\"] + full_name redacted\n");
    println!("{:<18}  {:<6}  {:>9}  {:>7}  {:>7}", "workload", "side", "median ms", "p90 ms", "MB/s");
    for (workload_index, &workload) in Workload::ALL.iter().enumerate() {
        let (bytes, masked_bytes) = sizes[workload_index];
        let megabytes = bytes as f64 / 1e6;
        let medians: Vec<f64> = samples[workload_index].iter().map(Samples::median).collect();
        for (side, name) in SIDES.iter().enumerate() {
            let side_samples = &samples[workload_index][side];
            println!(
                "{:<18}  {:<6}  {:>9.2}  {:>7.2}  {:>7.0}",
                workload.name(),
                name,
                medians[side],
                side_samples.quantile(0.9),
                megabytes / (medians[side] / 1000.0)
            );
        }
        let (direct_ms, plain_ms, masked_ms) = (medians[0], medians[1], medians[2]);
        println!(
            "  {megabytes:.2} MB of values ({:.2} MB masked); masked/plain {:.2}x, plain/direct {:.2}x; masking adds \
             {:.2} µs/row\n",
            masked_bytes as f64 / 1e6,
            masked_ms / plain_ms,
            plain_ms / direct_ms,
            (masked_ms - plain_ms) * 1000.0 / f64::from(ROWS)
        );
    }
    println!("MB/s: the unmasked result's value bytes over the median fetch time; ratios of medians");
}

fn main() {
    let postgres = TempPostgres::start().expect("throwaway PostgreSQL starts");
    let app = AppDatabase::create(&postgres, "app");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(run(&postgres, &app));
}
