//! The bearer token of operator endpoints (the controller's mesh view, the
//! edge's `/netem`): one check for both binaries.

/// Whether an `Authorization` header value presents `token` as a bearer
/// token. The scheme is case-insensitive ("bearer" is as valid as
/// "Bearer"); the token is compared in constant time, so the time a refusal
/// takes says nothing about how much of a guess was right.
pub fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    let Some((scheme, given)) = authorization.and_then(|v| v.split_once(' ')) else {
        return false;
    };
    // RFC 9110 section 11.1: the scheme is case-insensitive.
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(given.trim_start_matches(' ').as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(Some("bearer s3cret"), "s3cret"));
        for bad in [
            None,
            Some("s3cret"),
            Some("Basic s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3crets"),
            Some("Bearer "),
        ] {
            assert!(!bearer_matches(bad, "s3cret"), "{bad:?}");
        }
    }
}
