# terraform test for the edge-node module: what it renders, and the inputs its
# validation blocks refuse. (terraform/tests/run_tests.py also feeds the
# rendered config to the real edge-node binary's check-config.)

variables {
  edge_id     = 17
  region      = "eu-central"
  city        = "fra"
  coordinates = { lat = 50.1109, lon = 8.6821 }
  etcd_endpoints = [
    "https://10.0.0.10:2379",
    "https://10.0.0.11:2379",
  ]
  public_ip   = "203.0.113.17"
  server_name = "edge-17.rtn.example.net"
  capacity    = 5000
  apps        = [{ id = "demo" }, { id = "acme.video-prod" }]
  app_secrets = {
    "demo"            = ["0123456789abcdef0123"]
    "acme.video-prod" = ["new-secret-0123456789", "old-secret-0123456789"]
  }
  tls = {
    cert_pem    = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    key_pem     = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
    mesh_ca_pem = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
  }
  etcd_tls = {
    ca_pem   = "-----BEGIN CERTIFICATE-----\nETCDCA\n-----END CERTIFICATE-----\n"
    cert_pem = "-----BEGIN CERTIFICATE-----\nETCDCLIENT\n-----END CERTIFICATE-----\n"
    key_pem  = "-----BEGIN EC PRIVATE KEY-----\nETCDKEY\n-----END EC PRIVATE KEY-----\n"
  }
  package = {
    url    = "https://releases.example.net/rtn/v0.1.0/rtn-edge_0.1.0_amd64.deb"
    sha256 = "5a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f5a"
  }
  admin_cidrs = ["10.0.0.0/8", "fd00::/8"]
  ssh_cidrs   = ["192.0.2.0/24"]
}

run "renders_the_config" {
  command = plan

  assert {
    condition     = strcontains(output.config_toml, "id = 17\n") && strcontains(output.config_toml, "region = \"eu-central\"\n")
    error_message = "edge id and region are not in the config"
  }
  assert {
    condition     = strcontains(output.config_toml, "public_addr = \"203.0.113.17:4433\"\n") && strcontains(output.config_toml, "listen = \"0.0.0.0:4433\"\n") && strcontains(output.config_toml, "admin_listen = \"0.0.0.0:9433\"\n")
    error_message = "addresses are wrong"
  }
  assert {
    condition     = strcontains(output.config_toml, "lat = 50.1109\nlon = 8.6821\n")
    error_message = "coordinates are missing"
  }
  assert {
    condition     = strcontains(output.config_toml, "etcd_endpoints = [\"https://10.0.0.10:2379\",\"https://10.0.0.11:2379\"]\n")
    error_message = "etcd endpoints are wrong"
  }
  assert {
    condition     = strcontains(output.config_toml, "etcd_ca = \"/etc/rtn/tls/etcd-ca.pem\"\netcd_cert = \"/etc/rtn/tls/etcd-client.pem\"\netcd_key = \"/etc/rtn/tls/etcd-client.key\"\n")
    error_message = "the etcd TLS paths are missing from [control]"
  }
  assert {
    condition     = strcontains(output.config_toml, "max_sessions = 5000\n") && strcontains(output.config_toml, "drain_timeout_ms = 5000\n")
    error_message = "capacity does not set limits.max_sessions"
  }
  assert {
    condition     = strcontains(output.config_toml, "secrets_env = \"RTN_APP_SECRETS_ACME_VIDEO_PROD\"")
    error_message = "app secrets must come from an environment variable"
  }
  assert {
    condition     = !strcontains(output.config_toml, "0123456789")
    error_message = "the config file must not contain secrets"
  }
  assert {
    condition     = output.edge.public_addr == "203.0.113.17:4433" && output.edge.server_name == "edge-17.rtn.example.net"
    error_message = "edge summary is wrong"
  }
}

run "renders_the_unit_dropin" {
  command = plan

  assert {
    condition = alltrue([for d in [
      "[Unit]\nDescription=RTN edge relay 17 (eu-central)\n",
      "[Service]\nEnvironment=RTN_CONFIG=/etc/rtn/edge.toml\nEnvironmentFile=\nEnvironmentFile=/etc/rtn/edge.env\n",
      "Environment=RTN_LOG_FORMAT=json\n", "Environment=RUST_LOG=info\n",
      "LoadCredential=edge.key:/etc/rtn/tls/edge.key\n", "LoadCredential=etcd-client.key:/etc/rtn/tls/etcd-client.key\n",
      "Environment=RTN_TLS_KEY=/run/credentials/rtn-edge.service/edge.key\n",
      "Environment=RTN_CONTROL_ETCD_KEY=/run/credentials/rtn-edge.service/etcd-client.key\n",
      "TimeoutStopSec=20\n", "LimitNOFILE=65536\n", "MemoryMax=2G\n",
    ] : strcontains(output.systemd_dropin, d)])
    error_message = "a per-host setting is missing from the drop-in"
  }
  assert {
    condition     = alltrue([for d in ["ExecStart", "User=", "DynamicUser", "ProtectSystem", "SystemCallFilter", "Restart=", "AmbientCapabilities", "PrivateUsers"] : !strcontains(output.systemd_dropin, d)])
    error_message = "the unit's command, user and sandbox are the package's (packaging/edge-node/rtn-edge.service), never the drop-in's; no capability on an unprivileged port"
  }
  assert {
    condition     = output.paths.dropin == "/etc/systemd/system/rtn-edge.service.d/10-terraform.conf" && output.paths.binary == "/usr/bin/edge-node"
    error_message = "the drop-in and the package's binary are not where systemd and the package put them"
  }
}

run "no_memory_limit" {
  command = plan

  variables {
    memory_max = null
    limits     = { drain_timeout_ms = 30000 }
  }

  assert {
    condition     = strcontains(output.systemd_dropin, "MemoryMax=infinity\n") && strcontains(output.systemd_dropin, "TimeoutStopSec=45\n")
    error_message = "memory_max = null must lift the package's MemoryMax, and the stop timeout must follow the drain timeout"
  }
}

run "privileged_port_gets_only_net_bind_service" {
  command = plan

  variables {
    quic_port = 443
  }

  assert {
    condition     = strcontains(output.systemd_dropin, "AmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\nPrivateUsers=no\n")
    error_message = "port 443 needs CAP_NET_BIND_SERVICE (and no user namespace)"
  }
  assert {
    condition     = strcontains(output.config_toml, "public_addr = \"203.0.113.17:443\"")
    error_message = "public_addr must use quic_port"
  }
}

run "tunes_udp_and_opens_the_firewall" {
  command = plan

  assert {
    condition     = strcontains(output.sysctl_conf, "net.core.rmem_max = 8388608\n") && strcontains(output.sysctl_conf, "net.core.wmem_max = 8388608\n")
    error_message = "UDP buffer limits are not raised to udp_buffer_bytes"
  }
  assert {
    condition     = strcontains(output.firewall_nft, "policy drop;") && strcontains(output.firewall_nft, "ip saddr { 0.0.0.0/0 } udp dport 4433 accept") && strcontains(output.firewall_nft, "ip6 saddr { ::/0 } udp dport 4433 accept")
    error_message = "the QUIC port must be open to everyone"
  }
  assert {
    condition     = strcontains(output.firewall_nft, "ip saddr { 10.0.0.0/8 } tcp dport 9433 accept") && strcontains(output.firewall_nft, "ip6 saddr { fd00::/8 } tcp dport 9433 accept") && strcontains(output.firewall_nft, "ip saddr { 192.0.2.0/24 } tcp dport 22 accept")
    error_message = "admin and ssh must be open to their networks only"
  }
}

run "user_data_installs_everything" {
  command = plan

  assert {
    condition     = startswith(nonsensitive(output.user_data), "#cloud-config\n")
    error_message = "user data must be a cloud-config"
  }
  assert {
    condition = alltrue([for p in [
      "/etc/rtn/edge.toml", "/etc/rtn/edge.env", "/etc/rtn/tls/edge.pem", "/etc/rtn/tls/edge.key",
      "/etc/rtn/tls/mesh-ca.pem", "/etc/rtn/tls/etcd-ca.pem", "/etc/rtn/tls/etcd-client.pem", "/etc/rtn/tls/etcd-client.key",
      "/etc/sysctl.d/60-rtn-edge.conf", "/etc/systemd/system/rtn-edge.service.d/10-terraform.conf",
      "/etc/systemd/system/rtn-firewall.service", "/etc/rtn/firewall.nft", "/usr/local/sbin/rtn-install",
    ] : contains(keys(nonsensitive(output.files)), p)])
    error_message = "a file is missing from the user data"
  }
  assert {
    condition     = nonsensitive(output.files["/etc/rtn/tls/edge.key"].permissions) == "0600" && nonsensitive(output.files["/etc/rtn/edge.env"].permissions) == "0600"
    error_message = "the key and the secrets must be root-only"
  }
  assert {
    condition     = nonsensitive(output.files["/etc/rtn/tls/etcd-client.key"].permissions) == "0600" && nonsensitive(output.files["/etc/rtn/tls/etcd-client.key"].content) == "-----BEGIN EC PRIVATE KEY-----\nETCDKEY\n-----END EC PRIVATE KEY-----\n" && nonsensitive(output.files["/etc/rtn/tls/etcd-ca.pem"].content) == "-----BEGIN CERTIFICATE-----\nETCDCA\n-----END CERTIFICATE-----\n"
    error_message = "the etcd client key must be root-only, the CA and certificate as given"
  }
  assert {
    condition     = nonsensitive(output.files["/etc/rtn/edge.env"].content) == "# App secrets of RTN edge 17 (rendered by terraform). Root-only; systemd reads it.\nRTN_APP_SECRETS_DEMO=0123456789abcdef0123\nRTN_APP_SECRETS_ACME_VIDEO_PROD=new-secret-0123456789,old-secret-0123456789\n"
    error_message = "the environment file is wrong"
  }
  assert {
    condition     = !contains(keys(nonsensitive(output.files)), "/etc/systemd/system/rtn-edge.service") && !contains(keys(nonsensitive(output.files)), "/usr/local/bin/edge-node")
    error_message = "the unit and the binary come from the package"
  }
  assert {
    condition     = strcontains(nonsensitive(output.user_data), "https://releases.example.net/rtn/v0.1.0/rtn-edge_0.1.0_amd64.deb") && strcontains(nonsensitive(output.user_data), "--package")
    error_message = "the user data must install the package"
  }
  assert {
    condition     = length(nonsensitive(output.user_data)) < 16384
    error_message = "user data must fit AWS's 16 KiB"
  }
}

run "ipv6_public_address" {
  command = plan

  variables {
    public_ip = "2001:db8::17"
  }

  assert {
    condition     = output.edge.public_addr == "[2001:db8::17]:4433"
    error_message = "an IPv6 public address needs brackets"
  }
}

run "no_host_firewall" {
  command = plan

  variables {
    host_firewall = false
  }

  assert {
    condition     = output.firewall_nft == null && !contains(keys(nonsensitive(output.files)), "/etc/rtn/firewall.nft")
    error_message = "host_firewall = false must not install the firewall"
  }
}

# Invalid inputs are refused by the validation blocks.

run "rejects_edge_id_zero" {
  command = plan
  variables {
    edge_id = 0
  }
  expect_failures = [var.edge_id]
}

run "rejects_a_region_with_a_slash" {
  command = plan
  variables {
    region = "eu/central"
  }
  expect_failures = [var.region]
}

run "rejects_no_location" {
  command = plan
  variables {
    city        = ""
    coordinates = null
  }
  expect_failures = [var.coordinates]
}

run "rejects_bad_coordinates" {
  command = plan
  variables {
    coordinates = { lat = 91, lon = 0 }
  }
  expect_failures = [var.coordinates]
}

run "rejects_etcd_endpoints_without_scheme" {
  command = plan
  variables {
    etcd_endpoints = ["10.0.0.10:2379"]
  }
  expect_failures = [var.etcd_endpoints]
}

run "rejects_plaintext_etcd_endpoints" {
  command = plan
  variables {
    etcd_endpoints = ["http://10.0.0.10:2378"]
  }
  expect_failures = [var.etcd_endpoints]
}

run "rejects_etcd_tls_that_is_not_pem" {
  command = plan
  variables {
    etcd_tls = { ca_pem = "ca", cert_pem = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n", key_pem = "key" }
  }
  expect_failures = [var.etcd_tls]
}

run "rejects_no_etcd_endpoints" {
  command = plan
  variables {
    etcd_endpoints = []
  }
  expect_failures = [var.etcd_endpoints]
}

run "rejects_a_short_lease" {
  command = plan
  variables {
    lease_ttl_ms = 500
  }
  expect_failures = [var.lease_ttl_ms]
}

run "rejects_a_prefix_without_slashes" {
  command = plan
  variables {
    etcd_prefix = "rtn"
  }
  expect_failures = [var.etcd_prefix]
}

run "rejects_a_host_name_as_public_ip" {
  command = plan
  variables {
    public_ip = "edge-17.rtn.example.net"
  }
  expect_failures = [var.public_ip]
}

run "rejects_admin_on_the_quic_port" {
  command = plan
  variables {
    admin_port = 4433
  }
  expect_failures = [var.admin_port]
}

run "rejects_port_zero" {
  command = plan
  variables {
    quic_port = 0
  }
  expect_failures = [var.quic_port]
}

run "rejects_an_uppercase_server_name" {
  command = plan
  variables {
    server_name = "Edge_17.example.net"
  }
  expect_failures = [var.server_name]
}

run "rejects_zero_capacity" {
  command = plan
  variables {
    capacity = 0
  }
  expect_failures = [var.capacity]
}

run "rejects_a_short_secret" {
  command = plan
  variables {
    app_secrets = { "demo" = ["short"], "acme.video-prod" = ["new-secret-0123456789"] }
  }
  expect_failures = [var.app_secrets]
}

run "rejects_a_secret_with_a_comma" {
  command = plan
  variables {
    app_secrets = { "demo" = ["0123456789abcdef,0123"], "acme.video-prod" = ["new-secret-0123456789"] }
  }
  expect_failures = [var.app_secrets]
}

run "rejects_an_app_without_secrets" {
  command = plan
  variables {
    app_secrets = { "demo" = ["0123456789abcdef0123"] }
  }
  expect_failures = [var.app_secrets]
}

run "rejects_no_apps" {
  command = plan
  variables {
    apps        = []
    app_secrets = {}
  }
  expect_failures = [var.apps]
}

run "rejects_app_ids_that_collide_as_variables" {
  command = plan
  variables {
    apps        = [{ id = "a.b" }, { id = "a-b" }]
    app_secrets = { "a.b" = ["0123456789abcdef0123"], "a-b" = ["0123456789abcdef0123"] }
  }
  expect_failures = [var.apps]
}

run "rejects_tls_that_is_not_pem" {
  command = plan
  variables {
    tls = { cert_pem = "cert", key_pem = "key", mesh_ca_pem = "ca" }
  }
  expect_failures = [var.tls]
}

run "installs_a_package_already_on_the_host" {
  command = plan
  variables {
    package = { url = "/var/cache/rtn/rtn-edge_0.1.0_amd64.deb", sha256 = "5a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f5a" }
  }
  assert {
    condition     = strcontains(nonsensitive(output.user_data), "/var/cache/rtn/rtn-edge_0.1.0_amd64.deb")
    error_message = "a local path is installed as given"
  }
}

run "rejects_a_plain_http_package_url" {
  command = plan
  variables {
    package = { url = "http://releases.example.net/rtn-edge_0.1.0_amd64.deb", sha256 = "5a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f5a" }
  }
  expect_failures = [var.package]
}

run "rejects_a_bare_binary" {
  command = plan
  variables {
    package = { url = "https://releases.example.net/rtn/v0.1.0/edge-node", sha256 = "5a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f5a" }
  }
  expect_failures = [var.package]
}

run "rejects_the_controller_package" {
  command = plan
  variables {
    package = { url = "https://releases.example.net/rtn/v0.1.0/rtn-controller_0.1.0_amd64.deb", sha256 = "5a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f5a" }
  }
  expect_failures = [var.package]
}

run "rejects_a_bad_checksum" {
  command = plan
  variables {
    package = { url = "https://releases.example.net/rtn-edge_0.1.0_amd64.deb", sha256 = "abc" }
  }
  expect_failures = [var.package]
}

run "rejects_a_bad_cidr" {
  command = plan
  variables {
    admin_cidrs = ["10.0.0.0/33"]
  }
  expect_failures = [var.admin_cidrs]
}

run "rejects_a_bad_memory_limit" {
  command = plan
  variables {
    memory_max = "2 GB"
  }
  expect_failures = [var.memory_max]
}

run "rejects_a_zero_drain_timeout" {
  command = plan
  variables {
    limits = { drain_timeout_ms = 0 }
  }
  expect_failures = [var.limits]
}

run "secret_store_keeps_secrets_out_of_user_data" {
  command = plan

  variables {
    secret_store = { store = "aws-ssm", prefix = "/rtn/prod/eu-central/edge-17", region = "eu-central-1" }
  }

  assert {
    condition     = !strcontains(nonsensitive(output.user_data), "PRIVATE KEY") && !strcontains(nonsensitive(output.user_data), "0123456789abcdef0123") && strcontains(nonsensitive(output.user_data), "aws ssm get-parameter") && output.secret_names["/etc/rtn/tls/edge.key"] == "/rtn/prod/eu-central/edge-17/edge.key"
    error_message = "with a secret_store the keys and app secrets are fetched, not in user data"
  }
}

run "rejects_a_secret_store_without_region" {
  command = plan

  variables {
    secret_store = { store = "aws-ssm", prefix = "/rtn/prod/edge-17" }
  }

  expect_failures = [var.secret_store]
}
