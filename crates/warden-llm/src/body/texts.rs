//! The texts of a whole body, decoded as the [`BodyMasker`](super::BodyMasker) reads them: a JSON document's strings
//! (keys too) unescaped, a text body whole, a multipart body part by part by each part's own type (with its header
//! values, a file name say), a body without a type (or `application/octet-stream`) sniffed on its first bytes. The
//! prompt guard checks them in requests to endpoints warden does not interpret (an image's prompt, speech's input,
//! a form field), where any text may be a prompt.

use super::multipart::{self, form_parts, MAX_DEPTH};
use super::{sniff, BodyError, BodyKind, Sniffed, SNIFF_BYTES};

/// Calls `visit` with each text of `body`, a whole body of `content_type` (the header's value, empty when there is
/// none). Binary bodies and parts have none. A body that is not what its type says (JSON that does not parse, text
/// that is not UTF-8, a multipart body RFC 2046 does not frame, a text part in base64) is an error, as it is to the
/// masker: its text cannot be told.
pub fn visit_texts(content_type: &str, body: &[u8], visit: &mut dyn FnMut(&str)) -> Result<(), BodyError> {
    let content_type = (!content_type.trim().is_empty()).then_some(content_type);
    texts(content_type, body, 1, visit)
}

fn texts(content_type: Option<&str>, body: &[u8], depth: usize, visit: &mut dyn FnMut(&str)) -> Result<(), BodyError> {
    match BodyKind::of(content_type) {
        BodyKind::Binary => Ok(()),
        BodyKind::Json => json_texts(body, visit),
        BodyKind::Text | BodyKind::EventStream => text(body, visit),
        BodyKind::Unknown => {
            // As the masker decides: binary when the first bytes are not UTF-8 or hold a NUL, JSON when they begin a
            // document that parses, text otherwise.
            match sniff(&body[..body.len().min(SNIFF_BYTES)]) {
                Sniffed::Binary => Ok(()),
                Sniffed::JsonLike if json_texts(body, visit).is_ok() => Ok(()),
                Sniffed::JsonLike | Sniffed::Text => text(body, visit),
            }
        }
        BodyKind::Multipart => {
            if depth > MAX_DEPTH {
                return Err(BodyError::InvalidMultipart {
                    offset: 0,
                    reason: format!("multipart bodies nest deeper than {MAX_DEPTH} levels"),
                });
            }
            for part in form_parts(content_type.unwrap_or_default(), body)? {
                let offset = part.content.start as u64;
                if let Some(reason) =
                    multipart::hidden_text(part.content_type.as_deref(), part.transfer_encoding.as_deref())
                {
                    return Err(BodyError::InvalidMultipart { offset, reason });
                }
                for value in &part.other_headers {
                    visit(value);
                }
                texts(part.content_type.as_deref(), &body[part.content], depth + 1, visit)?;
            }
            Ok(())
        }
    }
}

fn text(body: &[u8], visit: &mut dyn FnMut(&str)) -> Result<(), BodyError> {
    let text =
        std::str::from_utf8(body).map_err(|error| BodyError::InvalidUtf8 { offset: error.valid_up_to() as u64 })?;
    visit(text);
    Ok(())
}

/// One JSON document, or several one after another (JSON lines).
fn json_texts(body: &[u8], visit: &mut dyn FnMut(&str)) -> Result<(), BodyError> {
    for value in serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>() {
        let value = value.map_err(|error| BodyError::InvalidJson {
            offset: 0,
            reason: if error.is_eof() { "the body ends inside a JSON value" } else { "not JSON" },
        })?;
        strings(&value, visit);
    }
    Ok(())
}

fn strings(value: &serde_json::Value, visit: &mut dyn FnMut(&str)) {
    match value {
        serde_json::Value::String(text) => visit(text),
        serde_json::Value::Array(items) => items.iter().for_each(|item| strings(item, visit)),
        serde_json::Value::Object(members) => {
            for (key, member) in members {
                visit(key);
                strings(member, visit);
            }
        }
        _ => {}
    }
}
