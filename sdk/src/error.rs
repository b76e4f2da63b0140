//! Typed errors, mapped from the edge's wire error codes.

use protocol::pb::ErrorCode;

/// Why the edge refused a join token. Fix: get a fresh token from the app's
/// server (`Expired`), or fix the app's configuration (the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Malformed,
    BadSignature,
    Expired,
    UnknownApp,
    WrongChannel,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SdkError {
    /// The edge refused the join token; the text is the edge's explanation.
    #[error("token refused: {0:?} ({1})")]
    Token(TokenRefusal, String),
    #[error("the token does not grant publishing")]
    NoPublishRight,
    #[error("the token does not grant subscribing")]
    NoSubscribeRight,
    /// Any other refusal by the edge.
    #[error("refused by the edge: {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    /// No candidate edge could be reached.
    #[error("could not connect to any edge: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    /// Media cannot be sent right now: the client is between connections
    /// (it is reconnecting by itself).
    #[error("not connected to an edge right now")]
    NotConnected,
    /// `try_send_message` found `max_unacked` messages unacknowledged.
    #[error("too many unacknowledged messages; retry later")]
    Backpressure,
    /// The client, the channel or the track is closed.
    #[error("closed")]
    Closed,
    /// The edge broke the protocol (bad frame, impossible reply).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The region controller's nearest-edge lookup failed.
    #[error("nearest-edge lookup: {0}")]
    Controller(String),
    /// A bad argument or configuration value.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// End-to-end encryption: a payload could not be sealed (no key to send
    /// with, too large once sealed), or, in
    /// [`crate::Event::Undecryptable`], opened.
    #[error("end-to-end encryption: {0}")]
    E2ee(crate::e2ee::E2eeError),
}

impl SdkError {
    /// Map an edge `Error{code, message}` (or a QUIC application close code,
    /// which uses the same numbers).
    pub fn from_wire(code: i32, message: String) -> Self {
        let code = ErrorCode::try_from(code).unwrap_or(ErrorCode::Unspecified);
        let token = |r| SdkError::Token(r, message.clone());
        match code {
            ErrorCode::TokenMalformed => token(TokenRefusal::Malformed),
            ErrorCode::TokenBadSignature => token(TokenRefusal::BadSignature),
            ErrorCode::TokenExpired => token(TokenRefusal::Expired),
            ErrorCode::TokenUnknownApp => token(TokenRefusal::UnknownApp),
            ErrorCode::TokenWrongChannel => token(TokenRefusal::WrongChannel),
            ErrorCode::NoPublishRight => SdkError::NoPublishRight,
            ErrorCode::NoSubscribeRight => SdkError::NoSubscribeRight,
            code => SdkError::Refused { code, message },
        }
    }

    /// Refusals that a reconnect will not fix: the app must act (new token,
    /// other rights).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SdkError::Token(..) | SdkError::NoPublishRight | SdkError::NoSubscribeRight
        )
    }

    /// The wire code of an edge refusal, if this is one.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            SdkError::Token(r, _) => match r {
                TokenRefusal::Malformed => ErrorCode::TokenMalformed,
                TokenRefusal::BadSignature => ErrorCode::TokenBadSignature,
                TokenRefusal::Expired => ErrorCode::TokenExpired,
                TokenRefusal::UnknownApp => ErrorCode::TokenUnknownApp,
                TokenRefusal::WrongChannel => ErrorCode::TokenWrongChannel,
            },
            SdkError::NoPublishRight => ErrorCode::NoPublishRight,
            SdkError::NoSubscribeRight => ErrorCode::NoSubscribeRight,
            SdkError::Refused { code, .. } => *code,
            _ => return None,
        })
    }
}

/// A human-readable reason for a lost connection, naming the edge's error
/// code when it closed the connection with one.
pub(crate) fn describe_close(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            let code = c.error_code.into_inner();
            let reason = String::from_utf8_lossy(&c.reason).into_owned();
            match i32::try_from(code) {
                Ok(0) => format!("edge closed the connection ({reason})"),
                Ok(code) => format!(
                    "edge closed the connection: {}",
                    SdkError::from_wire(code, reason)
                ),
                Err(_) => format!("edge closed the connection with code {code} ({reason})"),
            }
        }
        other => other.to_string(),
    }
}

/// The edge's close code, when it closed the connection with one.
pub(crate) fn close_code(e: &quinn::ConnectionError) -> Option<ErrorCode> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => i32::try_from(c.error_code.into_inner())
            .ok()
            .and_then(|c| ErrorCode::try_from(c).ok()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_code_maps_to_its_refusal_and_back() {
        let cases = [
            (ErrorCode::TokenMalformed, TokenRefusal::Malformed),
            (ErrorCode::TokenBadSignature, TokenRefusal::BadSignature),
            (ErrorCode::TokenExpired, TokenRefusal::Expired),
            (ErrorCode::TokenUnknownApp, TokenRefusal::UnknownApp),
            (ErrorCode::TokenWrongChannel, TokenRefusal::WrongChannel),
        ];
        for (code, refusal) in cases {
            let e = SdkError::from_wire(code as i32, "why".into());
            assert_eq!(e, SdkError::Token(refusal, "why".into()));
            assert_eq!(e.code(), Some(code));
            assert!(e.is_permanent());
        }
    }

    #[test]
    fn rights_and_other_codes() {
        assert_eq!(
            SdkError::from_wire(ErrorCode::NoPublishRight as i32, String::new()),
            SdkError::NoPublishRight
        );
        assert_eq!(
            SdkError::from_wire(ErrorCode::NoSubscribeRight as i32, String::new()),
            SdkError::NoSubscribeRight
        );
        let e = SdkError::from_wire(ErrorCode::GoingAway as i32, "drain".into());
        assert_eq!(
            e,
            SdkError::Refused {
                code: ErrorCode::GoingAway,
                message: "drain".into()
            }
        );
        assert!(!e.is_permanent());
        // Codes from a newer edge do not panic and stay visible as refusals.
        assert!(matches!(
            SdkError::from_wire(9999, "?".into()),
            SdkError::Refused {
                code: ErrorCode::Unspecified,
                ..
            }
        ));
        assert!(matches!(
            SdkError::from_wire(-1, "?".into()),
            SdkError::Refused { .. }
        ));
        assert_eq!(SdkError::Timeout.code(), None);
    }

    #[test]
    fn close_reasons_name_the_code() {
        let closed = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(ErrorCode::Overloaded as u32),
            reason: bytes::Bytes::from_static(b"slow reader"),
        });
        assert_eq!(close_code(&closed), Some(ErrorCode::Overloaded));
        let text = describe_close(&closed);
        assert!(
            text.contains("Overloaded") && text.contains("slow reader"),
            "{text}"
        );
        let huge = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u64(1 << 40).unwrap(),
            reason: bytes::Bytes::new(),
        });
        assert_eq!(close_code(&huge), None);
        assert!(describe_close(&huge).contains("code"));
        assert_eq!(close_code(&quinn::ConnectionError::TimedOut), None);
    }
}
