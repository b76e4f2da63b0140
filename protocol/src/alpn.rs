//! Versioned ALPN ids. A client link and a relay link are told apart by ALPN,
//! on the same UDP port; the version rides in the id so that an edge can serve
//! several versions during an upgrade and refuse unknown ones cleanly (the TLS
//! handshake fails with `no_application_protocol`, and [`parse`] says why).

/// ALPN of client links, protocol version 1.
pub const CLIENT_V1: &[u8] = b"rtn-client/1";
/// ALPN of edge-to-edge relay links, protocol version 1.
pub const RELAY_V1: &[u8] = b"rtn-relay/1";

/// ALPN of HTTP/3, which WebTransport sessions (browsers) ride: a
/// WebTransport session at [`WEBTRANSPORT_PATH`] is a client link of
/// version 1 with the same frames and datagrams.
pub const WEBTRANSPORT: &[u8] = b"h3";
/// The URL path of the client protocol over WebTransport
/// (`https://host:port/rtn-client/1`): the version rides in the path as it
/// does in the native ALPN id.
pub const WEBTRANSPORT_PATH: &str = "/rtn-client/1";

/// Every client ALPN this build speaks, newest first.
pub const CLIENT_SUPPORTED: &[&[u8]] = &[CLIENT_V1];
/// Every relay ALPN this build speaks, newest first.
pub const RELAY_SUPPORTED: &[&[u8]] = &[RELAY_V1];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Client,
    Relay,
    /// HTTP/3 carrying a WebTransport session of the client protocol.
    WebTransport,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlpnError {
    #[error("no ALPN negotiated: the peer must offer rtn-client/N or rtn-relay/N")]
    Missing,
    #[error(
        "unknown ALPN {0:?}: this edge speaks rtn-client/1, rtn-relay/1 and h3 (WebTransport)"
    )]
    Unknown(String),
    #[error("unsupported {kind} protocol version {version}: this edge speaks version 1")]
    UnsupportedVersion { kind: &'static str, version: String },
}

/// Identify a negotiated ALPN: which kind of link and which version.
pub fn parse(alpn: Option<&[u8]>) -> Result<(LinkKind, u32), AlpnError> {
    let alpn = alpn.ok_or(AlpnError::Missing)?;
    if alpn == WEBTRANSPORT {
        return Ok((LinkKind::WebTransport, 1));
    }
    let text = String::from_utf8_lossy(alpn);
    let (kind, name, version) = if let Some(v) = text.strip_prefix("rtn-client/") {
        (LinkKind::Client, "client", v)
    } else if let Some(v) = text.strip_prefix("rtn-relay/") {
        (LinkKind::Relay, "relay", v)
    } else {
        return Err(AlpnError::Unknown(text.into_owned()));
    };
    match version.parse::<u32>() {
        Ok(1) => Ok((kind, 1)),
        _ => Err(AlpnError::UnsupportedVersion {
            kind: name,
            version: version.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids_parse() {
        assert_eq!(parse(Some(CLIENT_V1)), Ok((LinkKind::Client, 1)));
        assert_eq!(parse(Some(RELAY_V1)), Ok((LinkKind::Relay, 1)));
        assert_eq!(parse(Some(WEBTRANSPORT)), Ok((LinkKind::WebTransport, 1)));
    }

    #[test]
    fn unknown_versions_and_ids_are_refused() {
        assert!(matches!(
            parse(Some(b"rtn-client/2")),
            Err(AlpnError::UnsupportedVersion { .. })
        ));
        assert!(matches!(parse(Some(b"h3-29")), Err(AlpnError::Unknown(_))));
        assert_eq!(parse(None), Err(AlpnError::Missing));
    }
}
