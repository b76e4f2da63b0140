//! Scraping what edges expose: samples from a Prometheus text exposition
//! (the in-process edges' recorder, or a process's `/metrics`), and one
//! plain HTTP/1.1 request for admin ports.

use std::net::SocketAddr;
use std::time::Duration;

/// The in-process edges' metrics, as Prometheus text.
pub fn edge_metrics() -> String {
    edge_node::metrics::prometheus().render()
}

/// [`metric_in`] the in-process edges' metrics.
pub fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_in(&edge_metrics(), name, labels)
}

/// Sum of the samples of `name` in a Prometheus text exposition whose
/// labels include all of `labels` (exact name: `name{...} value`, or `name
/// value` for a sample without labels); 0 when there is none.
pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sum(text, name, labels).unwrap_or(0.0)
}

/// [`metric_in`], but `None` when no sample matches (a metric the process
/// does not expose, rather than one at zero).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
}

/// Samples of `name` matching all of `labels`, summed per value of the
/// label `by` (e.g. drops per `reason`).
pub fn metric_by(
    text: &str,
    name: &str,
    labels: &[(&str, &str)],
    by: &str,
) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let key = format!("{by}=\"");
    for l in text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
    {
        let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let Some(at) = l.find(&key) else { continue };
        let rest = &l[at + key.len()..];
        let Some(end) = rest.find('"') else { continue };
        *out.entry(rest[..end].to_string()).or_insert(0.0) += v;
    }
    out
}

/// Whether the exposition has any sample of `name`.
pub fn has_metric(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
}

/// One HTTP/1.1 request with `connection: close`: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "http timed out"))??;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_with_and_without_labels_are_read() {
        let text = "# HELP x\netcd_mvcc_put_total 12\netcd_mvcc_put_total_other 5\nrtn_controller_compute_seconds_count{region=\"a\"} 3\nrtn_controller_compute_seconds_count{region=\"b\"} 4\n";
        assert_eq!(metric_sum(text, "etcd_mvcc_put_total", &[]), Some(12.0));
        assert_eq!(
            metric_sum(text, "rtn_controller_compute_seconds_count", &[]),
            Some(7.0)
        );
        assert_eq!(metric_sum(text, "absent", &[]), None);
    }

    #[test]
    fn samples_are_summed_over_matching_labels() {
        let text = "a_total{edge=\"1\",dir=\"in\"} 5\na_total{edge=\"11\",dir=\"in\"} 7\nab_total{edge=\"1\"} 9\n";
        assert_eq!(metric_in(text, "a_total", &[("edge", "1")]), 5.0);
        assert_eq!(metric_in(text, "a_total", &[("dir", "in")]), 12.0);
        assert!(has_metric(text, "ab_total") && !has_metric(text, "b_total"));
        let drops = "d_total{edge=\"1\",reason=\"x\"} 2\nd_total{edge=\"1\",reason=\"y\"} 3\nd_total{edge=\"2\",reason=\"x\"} 4\n";
        let by = metric_by(drops, "d_total", &[("edge", "1")], "reason");
        assert_eq!(by.get("x"), Some(&2.0));
        assert_eq!(by.get("y"), Some(&3.0));
        assert_eq!(metric_by(drops, "d_total", &[], "reason")["x"], 6.0);
    }
}
