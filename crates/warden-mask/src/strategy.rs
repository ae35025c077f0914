//! The masking strategies and how each renders a value of each kind.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Detector, Kind, MaskError};

/// How a detected value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The label alone: `[EMAIL]`.
    Redact,
    /// What is safe to keep: an email's domain (`***@example.com`), a card's, phone's or SSN's last four digits, an
    /// IBAN's country and last four, an IPv4 /24 or IPv6 /48 (`192.168.1.*`, `2001:db8:85a3:*:*:*:*:*`), a
    /// credential's public prefix (`ghp_***`), a JWT's header; a custom value's last four characters when it has eight
    /// or more. A private key or AWS secret key is redacted.
    Partial,
    /// A keyed HMAC-SHA256 token, `[EMAIL:3f9a1c2b7d]`: equal values give equal tokens under one key (grouping and
    /// joins keep working), and it cannot be reversed without the key. Values are normalized first (an email's case,
    /// a card's or phone's separators), so formatting does not split a group.
    Hash,
    /// Nothing: SQL NULL for a whole value, the empty string inside text.
    Null,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Redact => "redact",
            Strategy::Partial => "partial",
            Strategy::Hash => "hash",
            Strategy::Null => "null",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = MaskError;

    fn from_str(name: &str) -> Result<Strategy, MaskError> {
        match name {
            "redact" => Ok(Strategy::Redact),
            "partial" => Ok(Strategy::Partial),
            "hash" => Ok(Strategy::Hash),
            "null" => Ok(Strategy::Null),
            other => Err(MaskError::UnknownStrategy(other.to_string())),
        }
    }
}

/// The keyed HMAC, its key schedule done once.
pub(crate) struct Hasher {
    keyed: Hmac<Sha256>,
}

/// Hex characters in a hash token: 40 bits, collision-free in practice for grouping within one column.
const TOKEN_BYTES: usize = 5;

impl Hasher {
    pub fn new(key: &[u8; 32]) -> Hasher {
        Hasher { keyed: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length") }
    }

    fn token(&self, label: &str, normalized: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(normalized.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("[{label}:{}]", hex::encode(&digest[..TOKEN_BYTES]))
    }
}

/// Renders `value` of `kind` under `strategy`; `None` for `null`.
pub(crate) fn apply(hasher: &Hasher, strategy: Strategy, kind: Kind, label: &str, value: &str) -> Option<String> {
    match strategy {
        Strategy::Redact => Some(format!("[{label}]")),
        Strategy::Null => None,
        Strategy::Hash => Some(hasher.token(label, &normalize(kind, value))),
        Strategy::Partial => Some(partial(kind, label, value)),
    }
}

fn normalize(kind: Kind, value: &str) -> String {
    match kind {
        Kind::Builtin(Detector::Email) => value.to_ascii_lowercase(),
        Kind::Builtin(Detector::PaymentCard | Detector::UsSsn) => value.chars().filter(char::is_ascii_digit).collect(),
        Kind::Builtin(Detector::Phone) => {
            value.chars().filter(|character| character.is_ascii_digit() || *character == '+').collect()
        }
        Kind::Builtin(Detector::Iban) => {
            value.chars().filter(|character| !character.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect()
        }
        Kind::Builtin(Detector::Ipv6) => value
            .parse::<std::net::Ipv6Addr>()
            .map_or_else(|_| value.to_ascii_lowercase(), |address| address.to_string()),
        _ => value.to_string(),
    }
}

/// Stars every digit but the last `keep` (separators kept, so the shape stays).
fn star_digits_but_last(value: &str, keep: usize) -> String {
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    value
        .chars()
        .map(|character| {
            if character.is_ascii_digit() {
                seen += 1;
                if seen + keep <= digits {
                    return '*';
                }
            }
            character
        })
        .collect()
}

fn partial(kind: Kind, label: &str, value: &str) -> String {
    let Kind::Builtin(detector) = kind else {
        return keep_last_four(value);
    };
    match detector {
        Detector::Email => match value.rsplit_once('@') {
            Some((_, domain)) => format!("***@{domain}"),
            None => format!("[{label}]"),
        },
        Detector::PaymentCard | Detector::Phone => star_digits_but_last(value, 4),
        Detector::UsSsn => star_digits_but_last(value, 4),
        Detector::Iban => {
            let alphanumerics = value.chars().filter(|character| *character != ' ').count();
            let mut seen = 0;
            value
                .chars()
                .map(|character| {
                    if character == ' ' {
                        return character;
                    }
                    seen += 1;
                    if seen <= 2 || seen + 4 > alphanumerics {
                        character
                    } else {
                        '*'
                    }
                })
                .collect()
        }
        Detector::Ipv4 => match value.rsplit_once('.') {
            Some((network, _)) => format!("{network}.*"),
            None => format!("[{label}]"),
        },
        Detector::Ipv6 => match value.parse::<std::net::Ipv6Addr>() {
            Ok(address) => {
                let segments = address.segments();
                format!("{:x}:{:x}:{:x}:*:*:*:*:*", segments[0], segments[1], segments[2])
            }
            Err(_) => format!("[{label}]"),
        },
        Detector::Jwt => match value.split_once('.') {
            Some((header, _)) => format!("{header}.***"),
            None => format!("[{label}]"),
        },
        Detector::GithubToken
        | Detector::SlackToken
        | Detector::AnthropicKey
        | Detector::OpenAiKey
        | Detector::StripeKey => format!("{}***", credential_prefix(value)),
        Detector::AwsAccessKeyId => format!("{}***", &value[..value.len().min(4)]),
        Detector::AwsSecretKey | Detector::PemPrivateKey => format!("[{label}]"),
    }
}

/// A credential's public prefix: up to and including its last `_` or `-` within the first 12 bytes (`ghp_`,
/// `sk-ant-api03-`, `xoxb-`, `sk_live_`).
fn credential_prefix(value: &str) -> &str {
    let head = &value.as_bytes()[..value.len().min(14)];
    match head.iter().rposition(|byte| *byte == b'_' || *byte == b'-') {
        Some(position) => &value[..=position],
        None => "",
    }
}

fn keep_last_four(value: &str) -> String {
    let count = value.chars().count();
    if count < 8 {
        return "****".to_string();
    }
    let tail: String = value.chars().skip(count - 4).collect();
    format!("****{tail}")
}
