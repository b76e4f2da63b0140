//! The SHA-256 digest of an edge's client-facing certificate.
//!
//! Browsers open WebTransport to a certificate no CA signed only when the
//! page names its digest in `serverCertificateHashes` (and the certificate
//! is ECDSA and valid for at most 14 days). In development and the lab an
//! edge rotates such a certificate and publishes the digests of its current
//! and next one: in its registration, hence in the controller's nearest-edge
//! answer, and in a goaway's redirects. The Rust SDK may pin the same
//! digests instead of verifying a WebPKI chain.
//!
//! Text form (JSON, config, logs): 64 lowercase hex digits; protobuf form:
//! the 32 raw bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertHash(pub [u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a certificate hash is 64 hex digits (SHA-256), got {0:?}")]
pub struct CertHashError(String);

impl CertHash {
    /// The digest of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> CertHash {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        CertHash(out)
    }

    /// From the protobuf form; `None` unless exactly 32 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<CertHash> {
        Some(CertHash(b.try_into().ok()?))
    }
}

impl fmt::Display for CertHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertHash({self})")
    }
}

impl FromStr for CertHash {
    type Err = CertHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CertHashError(s.chars().take(80).collect());
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(CertHash(out))
    }
}

impl Serialize for CertHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CertHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_and_text_forms() {
        // SHA-256 of the empty string.
        let h = CertHash::of(b"");
        let text = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(h.to_string(), text);
        assert_eq!(text.parse::<CertHash>().unwrap(), h);
        assert_eq!(text.to_uppercase().parse::<CertHash>().unwrap(), h);
        assert_eq!(serde_json::to_string(&h).unwrap(), format!("\"{text}\""));
        assert_eq!(
            serde_json::from_str::<CertHash>(&format!("\"{text}\"")).unwrap(),
            h
        );
        assert_eq!(CertHash::from_bytes(&h.0), Some(h));
    }

    #[test]
    fn bad_forms_are_refused() {
        assert!("abc".parse::<CertHash>().is_err());
        assert!("zz".repeat(32).parse::<CertHash>().is_err());
        assert!("é".repeat(32).parse::<CertHash>().is_err());
        assert!(serde_json::from_str::<CertHash>("\"00\"").is_err());
        assert_eq!(CertHash::from_bytes(&[0; 31]), None);
    }
}
