//! The cache key of a query. Two texts with the same key differ only in whitespace, comments and literal
//! values, so they parse to the same statement shapes.
//!
//! Text with no quotes, dollar signs (other than `$1` parameters), backslashes, comments or non-ASCII bytes —
//! most generated SQL — takes a fast path: whitespace runs become one space and digit runs that start a token
//! become `?`. Such text has no string literals, so there is nothing a lexer could get wrong. Anything else is
//! keyed by PostgreSQL's own lexer: its token stream, comments dropped and constants blanked. Using the
//! server's lexer there (not a hand-written one) matters: a lexer that disagreed about where a string ends
//! could make a harmless text and a harmful one share a key. The two kinds of key cannot collide: fast keys
//! start with a byte no lexer token can start with.

use pg_query::protobuf::Token;

use crate::ParseOptions;

/// The key for `text`, or `None` when it cannot be keyed (the lexer rejects it, or the session lexes
/// backslashes differently from the default, which the scanner cannot follow): analyse such text uncached.
pub fn cache_key(text: &str, options: ParseOptions) -> Option<String> {
    if options.backslash_escapes {
        return None;
    }
    if let Some(key) = fast_key(text) {
        return Some(key);
    }
    let tokens = pg_query::scan_tokens(text).ok()?;
    let mut key = String::with_capacity(text.len());
    for token in tokens {
        let (Ok(start), Ok(end)) = (usize::try_from(token.start), usize::try_from(token.end)) else {
            return None;
        };
        let kind = Token::try_from(token.token).ok()?;
        let piece = match kind {
            Token::SqlComment | Token::CComment => continue,
            Token::Sconst | Token::Usconst | Token::Bconst | Token::Xconst | Token::Iconst | Token::Fconst => "?",
            _ => text.get(start..end)?,
        };
        if !key.is_empty() {
            key.push(' ');
        }
        key.push_str(piece);
    }
    Some(key)
}

/// Marks keys made by [`fast_key`].
const FAST: char = '\u{1}';

fn is_identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The key of text that holds nothing a lexer could read two ways, or `None`.
fn fast_key(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut key = String::with_capacity(text.len() + 1);
    key.push(FAST);
    let mut index = 0;
    let mut previous: u8 = b' ';
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                if !key.ends_with(' ') && key.len() > FAST.len_utf8() {
                    key.push(' ');
                }
                while index < bytes.len() && matches!(bytes[index], b' ' | b'\t' | b'\n' | b'\r' | 0x0c) {
                    index += 1;
                }
                previous = b' ';
                continue;
            }
            b'\'' | b'"' | b'\\' => return None,
            b'-' if bytes.get(index + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(index + 1) == Some(&b'*') => return None,
            // A parameter ($1) is the only dollar allowed: anything else may open a dollar quote.
            b'$' => {
                if is_identifier_byte(previous) || !bytes.get(index + 1).is_some_and(u8::is_ascii_digit) {
                    return None;
                }
                key.push('$');
                index += 1;
                while index < bytes.len() && bytes[index].is_ascii_digit() {
                    key.push(bytes[index] as char);
                    index += 1;
                }
                previous = b'0';
                continue;
            }
            b'0'..=b'9' if !is_identifier_byte(previous) => {
                key.push('?');
                while index < bytes.len() && bytes[index].is_ascii_digit() {
                    index += 1;
                }
                previous = b'0';
                continue;
            }
            0x21..=0x7e => key.push(byte as char),
            _ => return None,
        }
        previous = byte;
        index += 1;
    }
    if key.ends_with(' ') {
        key.pop();
    }
    Some(key)
}

#[cfg(test)]
mod tests;
