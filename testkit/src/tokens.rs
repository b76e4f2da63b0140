//! Join tokens, minted as the app's backend would: for the tests' app and
//! for any other (the lab's, a benchmark's).

use protocol::token::{mint, Grant};

/// The app of the tests' edges (`EdgeConfig::dev(id, APP, SECRET)`).
pub const APP: &str = "demo";
pub const SECRET: &str = "test-secret-0123456789";

/// How long the tokens minted here are valid: a day, longer than any lab
/// run or test.
const VALID_SECS: u64 = 24 * 3600;

/// An app as edges are configured with it: its id and signing secret.
#[derive(Clone, Debug)]
pub struct App {
    pub id: String,
    pub secret: String,
}

impl App {
    pub fn new(id: &str, secret: &str) -> App {
        App {
            id: id.into(),
            secret: secret.into(),
        }
    }

    /// The tests' app ([`APP`], [`SECRET`]).
    pub fn test() -> App {
        App::new(APP, SECRET)
    }

    /// A token for `user` in `channel` with these rights.
    pub fn token(&self, channel: &str, user: &str, publish: bool, subscribe: bool) -> String {
        let now = control::clock::now_secs();
        self.mint(
            channel,
            user,
            publish,
            subscribe,
            self.secret.as_bytes(),
            (now, now + VALID_SECS),
        )
    }

    /// A publish-and-subscribe token valid `ttl_secs` from now; a negative
    /// `ttl_secs` gives one that expired that long ago (issued a minute
    /// before it expired), as an app server's clock would.
    pub fn token_expiring_in(&self, channel: &str, user: &str, ttl_secs: i64) -> String {
        let now = control::clock::now_secs();
        let expires_at = now.saturating_add_signed(ttl_secs);
        let issued_at = if ttl_secs > 0 {
            now
        } else {
            expires_at.saturating_sub(60)
        };
        self.mint(
            channel,
            user,
            true,
            true,
            self.secret.as_bytes(),
            (issued_at, expires_at),
        )
    }

    /// A token signed with a secret the app does not have: refused with
    /// `TOKEN_BAD_SIGNATURE`.
    pub fn forged_token(&self, channel: &str, user: &str) -> String {
        let now = control::clock::now_secs();
        self.mint(
            channel,
            user,
            true,
            true,
            b"not-the-apps-secret-at-all",
            (now, now + VALID_SECS),
        )
    }

    fn mint(
        &self,
        channel: &str,
        user: &str,
        publish: bool,
        subscribe: bool,
        key: &[u8],
        (issued_at, expires_at): (u64, u64),
    ) -> String {
        mint(
            &Grant {
                app_id: &self.id,
                channel,
                user_id: user,
                publish,
                subscribe,
                issued_at,
                expires_at,
            },
            key,
        )
    }
}

/// [`App::token`] of the tests' app.
pub fn token(channel: &str, user: &str, publish: bool, subscribe: bool) -> String {
    App::test().token(channel, user, publish, subscribe)
}

/// [`App::forged_token`] of the tests' app.
pub fn forged_token(channel: &str, user: &str) -> String {
    App::test().forged_token(channel, user)
}
