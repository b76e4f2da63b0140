//! TLS from the control store to etcd, against a real etcd (Debian's
//! `etcd-server`) serving clients over TLS only with client certificates
//! required (`EtcdServer::start_tls`, a throwaway PKI, loopback):
//! - with the right CA and a client certificate: put/get, watch, leases and
//!   elections work (the conformance suite), from PEM files too, and a watch
//!   resumes after an etcd restart;
//! - without a client certificate, with a wrong CA, with a certificate from
//!   another CA or a wrong server name: refused, with an error that says so;
//! - TLS settings and endpoint schemes must agree;
//! - the region-controller binary, configured with the files, becomes the
//!   region's leader over TLS, and `check-config` checks the files' contents.
#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use control::store::{ControlStore, EtcdStore, EtcdTls, StoreError, WatchEvent};
use testkit::{store_conformance, EtcdServer, EtcdTestPki};

const BOUND: Duration = Duration::from_secs(10);

fn tls_server() -> EtcdServer {
    EtcdServer::start_tls().expect("etcd (Debian's etcd-server) is needed")
}

/// The message of a refused connection (bounded: a refusal must be quick).
async fn refused(endpoints: &[String], tls: Option<&EtcdTls>) -> String {
    let started = Instant::now();
    let err = tokio::time::timeout(BOUND, EtcdStore::connect_with(endpoints.to_vec(), tls))
        .await
        .expect("a refusal comes quickly")
        .err()
        .expect("the connection must be refused");
    assert!(started.elapsed() < Duration::from_secs(3), "{err}");
    match err {
        StoreError::Unavailable(m) => m,
        other => panic!("want Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn tls_with_client_certificate_conforms_and_survives_a_restart() {
    let mut etcd = tls_server();
    assert!(etcd.client_url().starts_with("https://127.0.0.1:"));
    let store = Arc::new(etcd.store().await.expect("etcd answers over TLS"));
    store_conformance::run_all(store.clone(), "/rtn/tls/").await;

    // Reconnect and watch resumption work over TLS as over http.
    let rev = store
        .put("/rtn/w/a", Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    let mut watch = store.watch_prefix("/rtn/w/", rev + 1).await.unwrap();
    etcd.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store
        .put("/rtn/w/b", Bytes::from_static(b"2"), None)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "etcd back within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = tokio::time::timeout(Duration::from_secs(20), watch.recv())
        .await
        .expect("the watch resumed")
        .unwrap()
        .unwrap();
    assert!(matches!(&events[0], WatchEvent::Put(kv) if kv.key == "/rtn/w/b"));
}

#[tokio::test]
async fn tls_material_from_files_put_get_watch_lease() {
    let etcd = tls_server();
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = etcd.pki().unwrap().write_client_files(dir.path()).unwrap();
    let tls = EtcdTls::from_paths(Some(&ca), Some(&cert), Some(&key), Some("localhost"))
        .unwrap()
        .unwrap();
    assert!(tls.has_client_cert());
    // Lazy, as the binaries build it: the first call dials.
    let store = EtcdStore::lazy_with(vec![etcd.client_url()], Some(&tls)).unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if store.get("/rtn/f/x").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "etcd answers");
    let mut watch = store.watch_prefix("/rtn/f/", 0).await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(5)).await.unwrap();
    store
        .put("/rtn/f/a", Bytes::from_static(b"v"), Some(lease))
        .await
        .unwrap();
    let kv = store.get("/rtn/f/a").await.unwrap().unwrap();
    assert_eq!((&kv.value[..], kv.lease), (&b"v"[..], Some(lease)));
    store.keep_alive(lease).await.unwrap();
    store.revoke_lease(lease).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let events = tokio::time::timeout(BOUND, watch.recv())
            .await
            .expect("watch events")
            .unwrap()
            .unwrap();
        seen.extend(events);
    }
    assert!(matches!(&seen[0], WatchEvent::Put(kv) if kv.key == "/rtn/f/a"));
    assert!(matches!(&seen[1], WatchEvent::Delete { key, .. } if key == "/rtn/f/a"));
    assert!(store.get("/rtn/f/a").await.unwrap().is_none());
}

#[tokio::test]
async fn refused_without_client_certificate_or_with_a_wrong_ca() {
    let etcd = tls_server();
    etcd.store().await.expect("etcd answers");
    let endpoints = vec![etcd.client_url()];
    let pki = etcd.pki().unwrap();
    let other = EtcdTestPki::generate().unwrap();

    // No client certificate: etcd ends the session; the error says why.
    let ca_only = EtcdTls::new(pki.ca_pem.as_bytes()).unwrap();
    assert!(!ca_only.has_client_cert());
    let m = refused(&endpoints, Some(&ca_only)).await;
    assert!(m.contains("no client certificate is configured"), "{m}");
    // ...on every kind of call, not only the first one.
    let lazy = EtcdStore::lazy_with(endpoints.clone(), Some(&ca_only)).unwrap();
    for _ in 0..3 {
        let e = lazy.put("/rtn/x", Bytes::new(), None).await.unwrap_err();
        assert!(e.to_string().contains("no client certificate"), "{e}");
        let e = lazy.watch_prefix("/rtn/", 0).await.unwrap_err();
        assert!(e.to_string().contains("no client certificate"), "{e}");
    }

    // A CA that did not sign etcd's certificate: we refuse etcd.
    let wrong_ca = EtcdTls::new(other.ca_pem.as_bytes())
        .unwrap()
        .with_client_cert(
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )
        .unwrap();
    let m = refused(&endpoints, Some(&wrong_ca)).await;
    assert!(m.contains("invalid peer certificate"), "{m}");
    assert!(
        m.contains("does not verify against the configured etcd CA"),
        "{m}"
    );

    // A client certificate another CA signed: etcd refuses us.
    let foreign = EtcdTls::new(pki.ca_pem.as_bytes())
        .unwrap()
        .with_client_cert(
            other.client_cert_pem.as_bytes(),
            other.client_key_pem.as_bytes(),
        )
        .unwrap();
    let m = refused(&endpoints, Some(&foreign)).await;
    assert!(
        m.contains("client certificates that its CA did not sign")
            || m.contains("requires a client certificate signed by its CA"),
        "{m}"
    );

    // A server name etcd's certificate is not valid for.
    let named = pki.client_tls().with_server_name("etcd.example").unwrap();
    let m = refused(&endpoints, Some(&named)).await;
    assert!(m.contains("not valid for name"), "{m}");

    // Plain http to the TLS port.
    let m = refused(&[etcd.client_url().replace("https://", "http://")], None).await;
    assert!(
        m.contains("if the endpoint serves TLS, use https://"),
        "{m}"
    );

    // The right settings still work on the same server.
    EtcdStore::connect_with(endpoints, Some(&pki.client_tls()))
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_settings_and_schemes_must_agree_and_material_is_checked() {
    let pki = EtcdTestPki::generate().unwrap();
    let tls = pki.client_tls();
    let invalid = |r: Result<EtcdStore, StoreError>| match r {
        Err(StoreError::Invalid(m)) => m,
        Err(e) => panic!("want Invalid, got {e}"),
        Ok(_) => panic!("want an error"),
    };
    let m = invalid(EtcdStore::lazy_with(
        vec!["https://127.0.0.1:2379".into()],
        None,
    ));
    assert!(
        m.contains("is https:// but no TLS settings were given"),
        "{m}"
    );
    let m = invalid(EtcdStore::lazy_with(
        vec!["http://127.0.0.1:2379".into()],
        Some(&tls),
    ));
    assert!(
        m.contains("is not https:// but TLS settings were given"),
        "{m}"
    );
    let m = invalid(EtcdStore::lazy_with(
        vec!["https://127.0.0.1:2379".into(), "127.0.0.1:2380".into()],
        Some(&tls),
    ));
    assert!(m.contains("127.0.0.1:2380 is not https://"), "{m}");
    // Both orders of refusal come before any dialing.
    let m = invalid(EtcdStore::connect_with(vec!["https://127.0.0.1:1".into()], None).await);
    assert!(m.contains("no TLS settings"), "{m}");
    EtcdStore::lazy_with(vec!["https://127.0.0.1:2379".into()], Some(&tls)).unwrap();
    EtcdStore::lazy_with(vec!["http://127.0.0.1:2379".into()], None).unwrap();

    // The material itself.
    let err = |r: Result<EtcdTls, StoreError>| r.unwrap_err().to_string();
    assert!(err(EtcdTls::new("not a pem")).contains("etcd CA: no PEM CERTIFICATE"));
    assert!(err(EtcdTls::new(pki.client_key_pem.as_bytes())).contains("etcd CA"));
    let other = EtcdTestPki::generate().unwrap();
    let m = err(EtcdTls::new(pki.ca_pem.as_bytes())
        .unwrap()
        .with_client_cert(
            pki.client_cert_pem.as_bytes(),
            other.client_key_pem.as_bytes(),
        ));
    assert!(m.contains("etcd client certificate and key"), "{m}");
    let m = err(EtcdTls::new(pki.ca_pem.as_bytes())
        .unwrap()
        .with_client_cert(pki.client_cert_pem.as_bytes(), "no key"));
    assert!(m.contains("etcd client key"), "{m}");
    assert!(err(tls.clone().with_server_name("bad name!")).contains("etcd server name"));
    // Debug never shows the key.
    let shown = format!("{tls:?}");
    assert!(!shown.contains("PRIVATE KEY") && shown.contains("client_cert: true"));

    // From files: a missing file names itself; a pair that does not match is refused.
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = pki.write_client_files(dir.path()).unwrap();
    let missing = dir.path().join("missing.pem");
    let m = err(EtcdTls::from_paths(Some(&missing), None, None, None).map(|t| t.unwrap()));
    assert!(m.contains("missing.pem"), "{m}");
    std::fs::write(&key, &other.client_key_pem).unwrap();
    let m = err(EtcdTls::from_paths(Some(&ca), Some(&cert), Some(&key), None).map(|t| t.unwrap()));
    assert!(
        m.contains("etcd-client.key") && m.contains("etcd client certificate and key"),
        "{m}"
    );
    assert!(EtcdTls::from_paths(None, None, None, None)
        .unwrap()
        .is_none());
    assert!(EtcdTls::from_paths(None, Some(&cert), Some(&key), None).is_err());
}

struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn controller_binary_leads_its_region_over_tls() {
    let etcd = tls_server();
    let store = etcd.store().await.expect("etcd answers");
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key] = etcd.pki().unwrap().write_client_files(dir.path()).unwrap();
    let (api, admin) = (testkit::ports::tcp_local(), testkit::ports::tcp_local());
    let config = dir.path().join("ctl.toml");
    let write_config = |key: &std::path::Path| {
        std::fs::write(
            &config,
            format!(
                "[controller]\nregion = \"eu\"\nname = \"ctl-tls\"\n[store]\netcd_endpoints = [{:?}]\netcd_ca = {ca:?}\netcd_cert = {cert:?}\netcd_key = {key:?}\nelection_ttl_ms = 2000\n[api]\nlisten = \"{api}\"\n[admin]\nlisten = \"{admin}\"\n",
                etcd.client_url()
            ),
        )
        .unwrap()
    };
    let bin = env!("CARGO_BIN_EXE_region-controller");
    let check = |extra: &[&str]| {
        std::process::Command::new(bin)
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .args(extra)
            .output()
            .unwrap()
    };

    // check-config reads the files: a key that is not the certificate's fails.
    let other = EtcdTestPki::generate().unwrap();
    let wrong_key = dir.path().join("other.key");
    std::fs::write(&wrong_key, &other.client_key_pem).unwrap();
    write_config(&wrong_key);
    let out = check(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("etcd client certificate and key"),
        "{stderr}"
    );
    // ... and the flag overrides the file's key, as the systemd unit does.
    let out = check(&["--etcd-key", key.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write_config(&key);
    let out = check(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok: region eu"));

    let _child = Reap(
        std::process::Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(kv)) = store.get("/rtn/v1/controllers/eu/leader").await {
            if kv.value.as_ref() == b"ctl-tls" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the controller became leader over TLS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
