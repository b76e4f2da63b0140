//! Typed errors, mapped from the edge's wire error codes.

use protocol::pb::ErrorCode;

/// Why a token was refused.
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
    #[error("token refused: {0:?} ({1})")]
    Token(TokenRefusal, String),
    #[error("the token does not grant publishing")]
    NoPublishRight,
    #[error("the token does not grant subscribing")]
    NoSubscribeRight,
    #[error("refused by the edge: {code:?}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("could not connect to any edge: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("not connected to an edge right now")]
    NotConnected,
    #[error("too many unacknowledged messages; retry later")]
    Backpressure,
    #[error("the client is closed")]
    Closed,
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl SdkError {
    /// Map an edge `Error` frame.
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

    /// Refusals that a reconnect will not fix.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SdkError::Token(..) | SdkError::NoPublishRight | SdkError::NoSubscribeRight
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_map_to_typed_errors() {
        assert_eq!(
            SdkError::from_wire(ErrorCode::TokenExpired as i32, "x".into()),
            SdkError::Token(TokenRefusal::Expired, "x".into())
        );
        assert_eq!(
            SdkError::from_wire(ErrorCode::NoPublishRight as i32, String::new()),
            SdkError::NoPublishRight
        );
        assert!(matches!(
            SdkError::from_wire(9999, "?".into()),
            SdkError::Refused {
                code: ErrorCode::Unspecified,
                ..
            }
        ));
        assert!(
            SdkError::from_wire(ErrorCode::TokenWrongChannel as i32, String::new()).is_permanent()
        );
    }
}
