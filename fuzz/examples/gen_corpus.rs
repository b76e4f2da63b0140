//! Writes the seed corpora under `corpus/<target>/`: the repository's real
//! example files (lab topologies, chaos plans), the terraform templates
//! rendered with the values their modules and examples use, the snippets of
//! docs/lab.md, and a few hand-written edge cases, each named after what it
//! holds. Run from `fuzz/`:
//!
//! ```sh
//! cargo run --example gen_corpus
//! ```
//!
//! The edge configs' `secrets_env` name `RTN_FUZZ_APP_SECRETS`, which the
//! targets set, so that seeds get past validation. TLS files are never
//! read; seeds that should validate use `dev_self_signed = true`.

use std::fs;
use std::path::Path;

fn write(target: &str, name: &str, text: &str) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    fs::write(dir.join(name), text).expect("write corpus file");
}

/// Copy every `*.toml` of a repository folder.
fn copy_dir(target: &str, dir: &str, prefix: &str) {
    let mut entries: Vec<_> = fs::read_dir(Path::new("..").join(dir))
        .expect("repository folder")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    entries.sort();
    for p in entries {
        let name = format!(
            "{prefix}{}",
            p.file_name().expect("file name").to_string_lossy()
        );
        write(
            target,
            &name,
            &fs::read_to_string(&p).expect("read example"),
        );
    }
}

fn main() {
    edge_config();
    controller_config();
    lab_topology();
    chaos_plan();
    netem_rules();
    println!("seed corpora written under corpus/");
}

fn edge_config() {
    let t = "edge_config";
    // terraform/modules/edge-node/templates/edge.toml.tftpl, as the module
    // renders it (TLS files and etcd over TLS: fails validation here, as
    // the files do not exist, but covers every field).
    write(
        t,
        "tf_module_edge.toml",
        r#"# RTN edge 7 (rendered by terraform/modules/edge-node)
[edge]
id = 7
region = "eu-central"
city = "fra"
lat = 50.1109
lon = 8.6821
listen = "0.0.0.0:4433"
public_addr = "203.0.113.7:4433"
admin_listen = "0.0.0.0:9433"
server_name = "edge-7.rtn.example"
udp_buffer_bytes = 8388608

[tls]
cert = "/etc/rtn/tls/edge.pem"
key = "/etc/rtn/tls/edge.key"
mesh_ca = "/etc/rtn/tls/mesh-ca.pem"

[limits]
max_sessions = 10000
join_timeout_ms = 10000
subscriber_queue = 256
client_frame_queue = 4096
client_idle_timeout_ms = 10000
drain_timeout_ms = 5000
goaway_reconnect_ms = 50

[control]
etcd_endpoints = ["https://10.0.1.10:2379", "https://10.0.1.11:2379"]
etcd_ca = "/etc/rtn/etcd/ca.pem"
etcd_cert = "/etc/rtn/etcd/client.pem"
etcd_key = "/etc/rtn/etcd/client.key"
prefix = "/rtn/v1/"
lease_ttl_ms = 3000
probes_per_other_region = 3

[[apps]]
id = "myapp"
secrets_env = "RTN_APP_SECRETS_MYAPP"
"#,
    );
    // The same with what can validate here.
    write(
        t,
        "tf_module_edge_dev.toml",
        r#"[edge]
id = 7
region = "eu-central"
city = "fra"
lat = 50.1109
lon = 8.6821
listen = "0.0.0.0:4433"
public_addr = "203.0.113.7:4433"
admin_listen = "0.0.0.0:9433"
server_name = "edge-7.rtn.example"
udp_buffer_bytes = 8388608

[tls]
dev_self_signed = true

[limits]
max_sessions = 10000
join_timeout_ms = 10000
subscriber_queue = 256
client_frame_queue = 4096
client_idle_timeout_ms = 10000
drain_timeout_ms = 5000
goaway_reconnect_ms = 50

[control]
etcd_endpoints = ["http://10.0.1.10:2379"]
prefix = "/rtn/v1/"
lease_ttl_ms = 3000
probes_per_other_region = 3

[[apps]]
id = "myapp"
secrets_env = "RTN_FUZZ_APP_SECRETS"
"#,
    );
    // terraform/examples/local/templates/edge.toml.tftpl, with its [netem].
    write(
        t,
        "tf_local_edge_netem.toml",
        r#"# RTN edge 1 of terraform/examples/local
[edge]
id = 1
region = "eu-west"
city = "lhr"
listen = "127.0.1.1:4433"
admin_listen = "127.0.1.1:9433"
server_name = "edge-1.rtn.local"

[tls]
dev_self_signed = true

[limits]
max_sessions = 10000
join_timeout_ms = 10000
subscriber_queue = 256
client_frame_queue = 4096
client_idle_timeout_ms = 10000
drain_timeout_ms = 1000
goaway_reconnect_ms = 50

[control]
etcd_endpoints = ["http://127.0.0.1:2379"]

[[apps]]
id = "demo"
secrets_env = "RTN_FUZZ_APP_SECRETS"

[netem]
links = [
  { from = "127.0.1.1/32", to = "127.0.2.1/32", delay_ms = 38.250, jitter_ms = 0.300, loss = 0.0000, down = false },
  { from = "127.0.1.1/32", to = "127.0.3.1/32", delay_ms = 81.700, jitter_ms = 0.300, loss = 0.0010, down = false },
  { from = "127.0.1.0/24", to = "127.0.0.0/8", delay_ms = 1.000, jitter_ms = 0.000, loss = 0.0000, down = false },
]
"#,
    );
    // edge-node's tests: static peers, no control plane.
    write(
        t,
        "static_peers_routes.toml",
        r#"[edge]
id = 1
region = "eu"
city = "fra"
listen = "127.0.0.1:4433"
admin_listen = "127.0.0.1:9433"

[tls]
dev_self_signed = true

[[apps]]
id = "demo"
secrets = ["0123456789abcdef0123"]

[[apps]]
id = "other"
secrets = ["fedcba9876543210fedc", "rotated-secret-0000000"]
secrets_env = "RTN_FUZZ_APP_SECRETS"

[[peers]]
id = 2
addr = "127.0.0.2:4433"
server_name = "localhost"
region = "eu"

[[peers]]
id = 3
addr = "[::1]:4433"
server_name = "edge-3"
region = "us"

[[routes]]
dest = 3
via = [2]

[[routes]]
dest = 2
"#,
    );
    write(
        t,
        "minimal.toml",
        r#"[edge]
id = 1
[tls]
dev_self_signed = true
[[apps]]
id = "a"
secrets = ["0123456789abcdef"]
"#,
    );
    // Edge cases, each refused with a reason.
    write(
        t,
        "lat_without_lon.toml",
        "[edge]\nid = 5\nlat = 91.5\n[tls]\ndev_self_signed = true\n[control]\netcd_endpoints = [\"http://e:2379\"]\n[[apps]]\nid = \"a\"\nsecrets = [\"0123456789abcdef\"]\n",
    );
    write(
        t,
        "route_via_unknown.toml",
        "[edge]\nid = 1\n[tls]\ndev_self_signed = true\n[[apps]]\nid = \"a\"\nsecrets = [\"0123456789abcdef\"]\n[[peers]]\nid = 2\naddr = \"127.0.0.2:1\"\nserver_name = \"x\"\n[[routes]]\ndest = 2\nvia = [9, 2]\n",
    );
    write(
        t,
        "huge_limits.toml",
        "[edge]\nid = 4294967295\nudp_buffer_bytes = 18446744073709551615\n[tls]\ndev_self_signed = true\n[[apps]]\nid = \"a\"\nsecrets = [\"0123456789abcdef\"]\n[limits]\nmax_sessions = 18446744073709551615\njoin_timeout_ms = 18446744073709551615\nsubscriber_queue = 18446744073709551615\nclient_frame_queue = 2305843009213693952\nclient_idle_timeout_ms = 18446744073709551615\ndrain_timeout_ms = 18446744073709551615\ngoaway_reconnect_ms = 4294967295\n",
    );
    write(
        t,
        "bad_prefix_and_netem.toml",
        "[edge]\nid = 2\ncity = \"São Paulo\"\n[tls]\ndev_self_signed = true\n[[apps]]\nid = \"a\"\nsecrets = [\"0123456789abcdef\"]\n[control]\nprefix = \"rtn\"\nlease_ttl_ms = 1\n[netem]\nlinks = [{ from = \"::/0\", to = \"10.0.0.0/8\", delay_ms = nan, loss = 2.0 }]\n",
    );
    write(t, "not_a_config.toml", "edge = 1\n[[apps]]\n");
}

fn controller_config() {
    let t = "controller_config";
    // terraform/modules/region-controller/templates/controller.toml.tftpl.
    write(
        t,
        "tf_module_controller.toml",
        r#"# RTN region controller ctl-eu-1 (rendered by terraform/modules/region-controller)
[controller]
region = "eu-central"
name = "ctl-eu-1"
debounce_ms = 200
recompute_ms = 5000

[store]
etcd_endpoints = ["https://10.0.1.10:2379"]
etcd_ca = "/etc/rtn/etcd/ca.pem"
etcd_cert = "/etc/rtn/etcd/client.pem"
etcd_key = "/etc/rtn/etcd/client.key"
prefix = "/rtn/v1/"
election_ttl_ms = 3000

[api]
listen = "0.0.0.0:8080"
geoip_db = "/var/lib/rtn/GeoLite2-City.mmdb"
client_ip_header = "x-forwarded-for"
trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]
lookups_per_ip_per_s = 20

[admin]
listen = "0.0.0.0:9434"
# The bearer token of /v1/mesh and /v1/links/history, from /etc/rtn/controller.env.
token_env = "RTN_CTL_ADMIN_TOKEN"
"#,
    );
    write(
        t,
        "tf_module_controller_plain.toml",
        r#"[controller]
region = "eu-central"
name = "ctl-eu-1"
debounce_ms = 200
recompute_ms = 5000

[store]
etcd_endpoints = ["http://10.0.1.10:2379", "http://10.0.1.11:2379"]
prefix = "/rtn/v1/"
election_ttl_ms = 3000

[api]
listen = "[::]:8080"
client_ip_header = "x-forwarded-for"
trusted_proxies = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]
lookups_per_ip_per_s = 20
"#,
    );
    // terraform/examples/local/templates/controller.toml.tftpl.
    write(
        t,
        "tf_local_controller.toml",
        r#"# RTN region controller ctl-eu-west-a of terraform/examples/local
[controller]
region = "eu-west"
name = "ctl-eu-west-a"

[store]
etcd_endpoints = ["http://127.0.0.1:2379"]

[api]
listen = "127.0.9.1:8080"
# Every local client shares one address: lift the per-address rate limit.
lookups_per_ip_per_s = 1000

[admin]
listen = "127.0.9.1:9434"
# /v1/mesh and the dashboard's data take this bearer token (state_dir/secrets/admin-token).
token_env = "RTN_CTL_ADMIN_TOKEN"
"#,
    );
    write(t, "minimal.toml", "[controller]\nregion = \"eu\"\n");
    write(
        t,
        "bad_values.toml",
        "[controller]\nregion = \"eu/west\"\ndebounce_ms = 0\nrecompute_ms = 18446744073709551615\n[store]\nprefix = \"/a b/\"\nelection_ttl_ms = 500\netcd_endpoints = [\"10.0.0.1:2379\"]\netcd_server_name = \"\"\n[api]\ntrusted_proxies = [\"10.0.0.0/99\", \"\"]\nlookups_per_ip_per_s = 0\n",
    );
    write(
        t,
        "odd_header.toml",
        "[controller]\nregion = \"ap-south\"\n[api]\nclient_ip_header = \"X-Real-IP\"\ntrusted_proxies = [\"::1\", \"fe80::/10\"]\n",
    );
}

fn lab_topology() {
    let t = "lab_topology";
    copy_dir(t, "loadtest/topologies", "");
    // docs/lab.md's annotated example.
    write(
        t,
        "docs_lab_example.toml",
        r#"seed = 1                 # seed of the per-city-pair inflation draws
inflation = [1.4, 2.1]   # RTT over the fiber bound, drawn per city pair
access_ms = 3.0          # client last mile, one way
metro_ms = 1.0           # two hosts of one city, one way
jitter_ms = 0.3          # every link, each way
loss = 0.0               # every link, each way

[[city]]
city = "lhr"             # a city of topology::geo::CITIES, by code or name
edges = 1                # edges there (their region is the city's)
clients = 2              # clients there

[[city]]
city = "sin"
edges = 1

[[link]]                 # between all hosts of two cities, both ways
a = "lhr"
b = "sin"
extra_delay_ms = 60      # added to the geographic delay
jitter_ms = 4.0          # replaces the default
loss = 0.01              # replaces the default
down = false             # cut
"#,
    );
    write(
        t,
        "one_edge.toml",
        "[[city]]\ncity = \"Frankfurt\"\nedges = 1\n",
    );
    write(
        t,
        "names_and_extremes.toml",
        "seed = 0\ninflation = [1.0, 5.0]\naccess_ms = 1000\nmetro_ms = 0\njitter_ms = 1000\nloss = 1.0\n[[city]]\ncity = \"são paulo\"\nedges = 3\nclients = 2\n[[city]]\ncity = \"NRT\"\nedges = 2\n[[link]]\na = \"nrt\"\nb = \"SÃO PAULO\"\ndown = true\n[[link]]\na = \"nrt\"\nb = \"nrt\"\nextra_delay_ms = 5000\n",
    );
    write(
        t,
        "partitioned.toml",
        "[[city]]\ncity = \"iad\"\nedges = 2\nclients = 1\n[[city]]\ncity = \"sea\"\nedges = 1\n[[city]]\ncity = \"syd\"\nedges = 1\n[[link]]\na = \"iad\"\nb = \"sea\"\ndown = true\n[[link]]\na = \"syd\"\nb = \"iad\"\ndown = true\n",
    );
    write(
        t,
        "refused.toml",
        "inflation = [2.0, 1.5]\nloss = -0.1\n[[city]]\ncity = \"atlantis\"\nedges = 255\n[[city]]\ncity = \"fra\"\nclients = 255\n[[link]]\na = \"fra\"\nb = \"sin\"\n",
    );
}

fn chaos_plan() {
    let t = "chaos_plan";
    copy_dir(t, "loadtest/chaos", "");
    write(
        t,
        "every_action.toml",
        r#"[[event]]
at_s = 5.5
action = "rolling_restart"
every_s = 2

[[event]]
at_s = 1
action = "partition"
a = "lhr"
b = "Singapore"

[[event]]
at_s = 3
action = "heal_link"
a = "sin"
b = "lhr"

[[event]]
at_s = 3
action = "degrade_link"
a = "ams"
b = "iad"
extra_delay_ms = 40.5
jitter_ms = 3
loss = 0.05

[[event]]
at_s = 0
action = "heal_region"
region = "eu-west"

[[event]]
at_s = 9
action = "kill_controller"
region = "ap-south"

[[event]]
at_s = 12
action = "drain_edge"
edge = 2
"#,
    );
    write(t, "empty.toml", "");
    write(
        t,
        "refused.toml",
        "[[event]]\nat_s = -1\naction = \"kill_edge\"\nedge = 0\n[[event]]\nat_s = 1e300\naction = \"rolling_restart\"\nevery_s = nan\n[[event]]\nat_s = \"soon\"\naction = \"stop_store\"\n",
    );
}

fn netem_rules() {
    let t = "netem_rules";
    // The `PUT /netem` body (docs/operations.md, terraform/examples/local).
    write(
        t,
        "put_body.json",
        r#"[{"from":"127.0.1.1/32","to":"127.0.2.1/32","delay_ms":40.0,"jitter_ms":2.5,"loss":0.01,"down":false},{"from":"127.0.0.0/8","to":"127.0.0.0/8","delay_ms":5}]"#,
    );
    write(
        t,
        "put_body_down_v6.json",
        r#"[{"from":"::/0","to":"::1/128","down":true},{"from":"0.0.0.0/0","to":"127.0.0.2/32","loss":1.0}]"#,
    );
    write(t, "put_body_empty.json", "[]");
    write(
        t,
        "put_body_refused.json",
        r#"[{"from":"127.0.0.1/32","to":"127.0.0.2/32","delay_ms":-1},{"from":"1.2.3.4/33","to":"x"},{"from":"127.0.0.1/32","to":"127.0.0.2/32","dealy_ms":4}]"#,
    );
    // The [netem] section of an edge config.
    write(
        t,
        "section.toml",
        r#"links = [
  { from = "127.0.1.1/32", to = "127.0.2.1/32", delay_ms = 38.250, jitter_ms = 0.300, loss = 0.0000, down = false },
  { from = "127.0.1.0/24", to = "127.0.2.1/32", delay_ms = 40, jitter_ms = 2.5 },
  { from = "127.0.0.0/8", to = "127.0.0.0/8", delay_ms = 1.0 },
  { from = "127.0.1.1/32", to = "127.0.0.0/0", down = true },
]
"#,
    );
    write(
        t,
        "section_tables.toml",
        "[[links]]\nfrom = \"10.1.2.3/16\"\nto = \"10.9.0.0/16\"\ndelay_ms = 10000\njitter_ms = 10000\nloss = 0.5\n\n[[links]]\nfrom = \"fe80::1/64\"\nto = \"::/0\"\ndelay_ms = 0.001\n",
    );
    // A loss serde_json read one ulp off before `float_roundtrip` (a crash
    // CI found): `GET /netem` then `PUT` changed the rule.
    write(
        t,
        "float_roundtrip.toml",
        "[[links]]\nfrom = \"10.1.3.3/16\"\nto = \"10.0.0.0/16\"\nloss = 0.188934881474191032620\n",
    );
}
