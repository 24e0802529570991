//! The strings this process must never print.
//!
//! Owns: a process-wide set of secrets (the API secret, every access token
//! the process was given, minted or refreshed) and [`redact`], which the log
//! sink applies to every line, whoever wrote it. Dependencies log what they
//! like — tungstenite prints its whole HTTP request, `Authorization: Bearer
//! <token>` included, at trace level — so the one place that can promise
//! "never logged" is the sink, not each call site.
//!
//! Must not touch: where the output goes (`crate::logsink`).

use std::borrow::Cow;
use std::sync::RwLock;

/// Shorter values are not registered: redacting a 5-letter word everywhere
/// would mangle the log, and such a secret protects nothing (the dev server's
/// public `secret` is one).
pub const MIN_SECRET_LEN: usize = 8;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds `secret` to the set (ignored when shorter than [`MIN_SECRET_LEN`] or
/// already there). Cheap; any thread.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_string());
    }
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let all = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in all.iter() {
        out = out.replace(s.as_str(), REDACTED);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_never_survive_redaction() {
        register("eyJhbGciOi.payload.signature-xyz");
        register("short");
        let line = "Request: authorization: Bearer eyJhbGciOi.payload.signature-xyz, short";
        assert_eq!(
            redact(line),
            "Request: authorization: Bearer <redacted>, short"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }
}
