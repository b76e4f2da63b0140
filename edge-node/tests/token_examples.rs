//! The token examples of `examples/tokens/` (PyJWT and Node's
//! `jsonwebtoken`, the libraries app servers use) mint tokens a real edge
//! accepts with the rights they name, and ones it refuses with the right
//! code: expired, another channel, another secret, another app. Each
//! example runs as the app's server would run it, a process with the secret
//! in its environment; the SDK joins with what it prints.
//!
//! Needs python3 with PyJWT and the Node example's `node_modules`.
//! `scripts/test.sh` installs both (a venv in `target/tokens-venv`, named
//! by `RTN_TOKEN_PYTHON`, and `npm ci`) and sets
//! `RTN_TOKEN_EXAMPLES_REQUIRED`, under which a missing one fails the test;
//! elsewhere the test says what is missing and skips that example.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use protocol::pb::ErrorCode;
use protocol::ChannelId;
use sdk::{Client, SdkError, TrackKind};
use testkit::process::{output_within, try_output_within};

/// How long one minting run may take (an interpreter's start included).
const MINT_LIMIT: Duration = Duration::from_secs(30);
/// How long the joins of one example may take, all told.
const JOINS_LIMIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// An example script and the interpreter that runs it.
struct Minter {
    /// "python" or "node": prefixes the channels and users of its tokens.
    name: &'static str,
    program: PathBuf,
    script: PathBuf,
}

impl Minter {
    /// The Python example with PyJWT, or why it cannot run.
    fn python() -> Result<Minter, String> {
        let program = match std::env::var_os("RTN_TOKEN_PYTHON") {
            Some(p) => PathBuf::from(p),
            None => {
                let venv = repo().join("target/tokens-venv/bin/python");
                if venv.exists() {
                    venv
                } else {
                    PathBuf::from("python3")
                }
            }
        };
        let probe = try_output_within(
            Command::new(&program).args(["-c", "import jwt"]),
            MINT_LIMIT,
        )
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if !probe.status.success() {
            return Err(format!(
                "{} has no `jwt` module (PyJWT: `pip install pyjwt`; scripts/test.sh puts it in target/tokens-venv)",
                program.display()
            ));
        }
        Ok(Minter {
            name: "python",
            program,
            script: repo().join("examples/tokens/python/mint_token.py"),
        })
    }

    /// The Node example with its `jsonwebtoken`, or why it cannot run.
    fn node() -> Result<Minter, String> {
        let dir = repo().join("examples/tokens/node");
        if !dir.join("node_modules/jsonwebtoken/package.json").exists() {
            return Err(format!(
                "{} has no node_modules/jsonwebtoken (run `npm ci` there)",
                dir.display()
            ));
        }
        try_output_within(Command::new("node").arg("--version"), MINT_LIMIT)
            .map_err(|e| format!("cannot run node: {e}"))?;
        Ok(Minter {
            name: "node",
            program: PathBuf::from("node"),
            script: dir.join("mint-token.mjs"),
        })
    }

    /// Run the example: a token for (app, channel, user, rights, ttl),
    /// signed with `secret`.
    fn mint(
        &self,
        secret: &str,
        app: &str,
        channel: &str,
        user: &str,
        rights: &str,
        ttl: i64,
    ) -> String {
        let out = output_within(
            Command::new(&self.program)
                .arg(&self.script)
                .args([app, channel, user, rights, &ttl.to_string()])
                .env("RTN_APP_SECRET", secret),
            MINT_LIMIT,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} example failed ({}): {}{}",
            self.name,
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let token = stdout.trim().to_string();
        assert_eq!(
            token.split('.').count(),
            3,
            "{} example printed no JWT: {stdout:?}",
            self.name
        );
        token
    }
}

/// The example, or None after saying why it is skipped (a failure when
/// the test script asked for the examples).
fn available(m: Result<Minter, String>, which: &str) -> Option<Minter> {
    match m {
        Ok(m) => Some(m),
        Err(why) if std::env::var_os("RTN_TOKEN_EXAMPLES_REQUIRED").is_some() => {
            panic!("RTN_TOKEN_EXAMPLES_REQUIRED is set but the {which} token example cannot run: {why}")
        }
        Err(why) => {
            // Straight to stderr: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the {which} token example cannot run: {why}"
            );
            None
        }
    }
}

/// The tokens of one example, minted before the edge starts (the minting
/// processes then do not share the test's runtime with the edge).
struct Tokens {
    both: String,
    subscribe_only: String,
    publish_only: String,
    expired: String,
    other_secret: String,
    other_app: String,
}

fn mint_all(m: &Minter) -> Tokens {
    let p = m.name;
    let (room, alice) = (format!("{p}-room"), format!("{p}-alice"));
    Tokens {
        both: m.mint(SECRET, APP, &room, &alice, "publish,subscribe", 300),
        subscribe_only: m.mint(SECRET, APP, &format!("{p}-sub"), "bob", "subscribe", 300),
        publish_only: m.mint(SECRET, APP, &format!("{p}-pub"), "carol", "publish", 300),
        // Beyond the edge's 5 s of leeway.
        expired: m.mint(SECRET, APP, &room, &alice, "publish,subscribe", -60),
        other_secret: m.mint(
            "not-the-apps-secret-0123456789",
            APP,
            &room,
            &alice,
            "publish,subscribe",
            300,
        ),
        other_app: m.mint(SECRET, "other-app", &room, &alice, "publish,subscribe", 300),
    }
}

fn refusal<T>(r: Result<T, SdkError>) -> Option<ErrorCode> {
    match r {
        Ok(_) => None,
        Err(e) => e.code(),
    }
}

async fn check(m: Minter) {
    let t = mint_all(&m);
    let p = m.name;
    let mesh = Mesh::start(1).await;
    let client = Client::connect(mesh.sdk_config(&[1])).await.unwrap();
    tokio::time::timeout(JOINS_LIMIT, async {
        // Accepted, with both rights: the claims reach the edge as written.
        let room = client
            .join(&t.both, &format!("{p}-room"), true)
            .await
            .unwrap_or_else(|e| panic!("{p} token refused: {e}"));
        assert_eq!(room.user, format!("{p}-alice"));
        assert_eq!(room.id, ChannelId::derive(APP, &format!("{p}-room")).0);
        room.publish_track("mic", TrackKind::Audio).await.unwrap();
        room.send_message("hello".into()).await.unwrap();

        // Each right alone.
        let sub = client
            .join(&t.subscribe_only, &format!("{p}-sub"), true)
            .await
            .unwrap();
        assert_eq!(sub.user, "bob");
        assert!(matches!(
            sub.publish_track("mic", TrackKind::Audio).await,
            Err(SdkError::NoPublishRight)
        ));
        assert_eq!(
            refusal(
                client
                    .join(&t.publish_only, &format!("{p}-pub"), true)
                    .await
            ),
            Some(ErrorCode::NoSubscribeRight)
        );
        let publ = client
            .join(&t.publish_only, &format!("{p}-pub"), false)
            .await
            .unwrap();
        publ.publish_track("cam", TrackKind::Video).await.unwrap();

        // Refused, each with its code.
        for (what, token, channel, code) in [
            (
                "expired",
                &t.expired,
                format!("{p}-room"),
                ErrorCode::TokenExpired,
            ),
            (
                "for another channel",
                &t.both,
                format!("{p}-elsewhere"),
                ErrorCode::TokenWrongChannel,
            ),
            (
                "signed with another secret",
                &t.other_secret,
                format!("{p}-room"),
                ErrorCode::TokenBadSignature,
            ),
            (
                "for another app",
                &t.other_app,
                format!("{p}-room"),
                ErrorCode::TokenUnknownApp,
            ),
        ] {
            assert_eq!(
                refusal(client.join(token, &channel, true).await),
                Some(code),
                "{p} token {what}"
            );
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the {p} example's joins took over {JOINS_LIMIT:?}"));
    client.close().await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_pyjwt_tokens_are_accepted_and_refused_as_minted() {
    init_logs();
    if let Some(m) = available(Minter::python(), "Python (PyJWT)") {
        check(m).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_jsonwebtoken_tokens_are_accepted_and_refused_as_minted() {
    init_logs();
    if let Some(m) = available(Minter::node(), "Node (jsonwebtoken)") {
        check(m).await;
    }
}
