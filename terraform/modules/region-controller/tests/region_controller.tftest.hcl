# terraform test for the region-controller module. (terraform/tests/run_tests.py
# also feeds the rendered configs to the real region-controller check-config
# and runs them against an etcd cluster rendered by etcd-cluster.)

variables {
  region         = "us-east"
  etcd_endpoints = ["https://10.0.0.10:2379", "https://10.0.0.11:2379", "https://10.0.0.12:2379"]
  etcd_tls = {
    ca_pem   = "-----BEGIN CERTIFICATE-----\nETCDCA\n-----END CERTIFICATE-----\n"
    cert_pem = "-----BEGIN CERTIFICATE-----\nETCDCLIENT\n-----END CERTIFICATE-----\n"
    key_pem  = "-----BEGIN PRIVATE KEY-----\nETCDKEY\n-----END PRIVATE KEY-----\n"
  }
  package = {
    url    = "https://releases.example.net/rtn/v0.1.0/rtn-controller_0.1.0_amd64.deb"
    sha256 = "5a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f5a"
  }
  geoip_db = {
    url    = "https://releases.example.net/geoip/GeoIP2-City.mmdb"
    sha256 = "0a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f50"
  }
  admin_token = "an-admin-token-0123456789abcdef"
  admin_cidrs = ["10.0.0.0/8", "fd00::/8"]
}

run "leader_and_standby" {
  command = plan

  assert {
    condition     = output.names == ["us-east-ctl-1", "us-east-ctl-2"] && length(output.config_toml) == 2 && length(nonsensitive(output.user_data)) == 2
    error_message = "two replicas by default, named <region>-ctl-<n>"
  }
  assert {
    condition     = strcontains(output.config_toml[0], "name = \"us-east-ctl-1\"\n") && strcontains(output.config_toml[1], "name = \"us-east-ctl-2\"\n")
    error_message = "each replica needs its own name"
  }
  assert {
    condition     = alltrue([for c in output.config_toml : strcontains(c, "region = \"us-east\"\n") && strcontains(c, "etcd_endpoints = [\"https://10.0.0.10:2379\",\"https://10.0.0.11:2379\",\"https://10.0.0.12:2379\"]\n")])
    error_message = "region and etcd endpoints are wrong"
  }
  assert {
    condition     = alltrue([for c in output.config_toml : strcontains(c, "etcd_ca = \"/etc/rtn/tls/etcd-ca.pem\"\netcd_cert = \"/etc/rtn/tls/etcd-client.pem\"\netcd_key = \"/etc/rtn/tls/etcd-client.key\"\n")])
    error_message = "the etcd TLS paths are missing from [store]"
  }
  assert {
    condition = alltrue([for f in nonsensitive(output.files) :
      f["/etc/rtn/tls/etcd-client.key"].permissions == "0600" && f["/etc/rtn/tls/etcd-client.key"].content == "-----BEGIN PRIVATE KEY-----\nETCDKEY\n-----END PRIVATE KEY-----\n" &&
      f["/etc/rtn/tls/etcd-ca.pem"].permissions == "0644" && f["/etc/rtn/tls/etcd-client.pem"].content == "-----BEGIN CERTIFICATE-----\nETCDCLIENT\n-----END CERTIFICATE-----\n"
    ])
    error_message = "every replica gets the etcd CA, the client certificate and the root-only key"
  }
}

run "renders_the_api_section" {
  command = plan

  variables {
    client_ip_header = "x-forwarded-for"
    trusted_proxies  = ["10.0.0.0/8", "192.0.2.1"]
  }

  assert {
    condition     = strcontains(output.config_toml[0], "listen = \"0.0.0.0:8080\"\n") && strcontains(output.config_toml[0], "geoip_db = \"/etc/rtn/geoip/city.mmdb\"\n")
    error_message = "API listen address or GeoIP path is wrong"
  }
  assert {
    condition     = strcontains(output.config_toml[0], "client_ip_header = \"x-forwarded-for\"\n") && strcontains(output.config_toml[0], "trusted_proxies = [\"10.0.0.0/8\",\"192.0.2.1\"]\n")
    error_message = "proxy settings are wrong"
  }
  assert {
    condition     = strcontains(output.config_toml[0], "[api]\nlisten = \"0.0.0.0:8080\"\n") && !strcontains(output.config_toml[0], "an-admin-token")
    error_message = "the public API listens on api_port, and the admin token must come from the environment file, not the config"
  }
  assert {
    condition     = nonsensitive(output.files[0]["/etc/rtn/controller.env"].content) == "# Secrets of the RTN region controller (rendered by terraform). Root-only; systemd reads it.\nRTN_CTL_ADMIN_TOKEN=an-admin-token-0123456789abcdef\n" && nonsensitive(output.files[0]["/etc/rtn/controller.env"].permissions) == "0600"
    error_message = "the environment file is wrong"
  }
  assert {
    condition     = strcontains(nonsensitive(output.user_data[0]), "/etc/rtn/geoip/city.mmdb") && strcontains(nonsensitive(output.user_data[0]), "GeoIP2-City.mmdb")
    error_message = "user data must install the GeoIP database"
  }
}

run "no_geoip_no_admin_token" {
  command = plan

  variables {
    geoip_db    = null
    admin_token = null
    replicas    = 3
    name_prefix = "use1"
  }

  assert {
    condition     = !strcontains(output.config_toml[0], "geoip_db") && !strcontains(output.config_toml[0], "token_env") && output.paths.geoip_db == null
    error_message = "optional settings must be left out"
  }
  assert {
    condition     = strcontains(output.config_toml[0], "[admin]\nlisten = \"0.0.0.0:9434\"\n")
    error_message = "without a token the admin listener is still rendered (metrics, dashboard, health)"
  }
  assert {
    condition     = output.names == ["use1-1", "use1-2", "use1-3"]
    error_message = "name_prefix and replicas are not used"
  }
}

run "unit_dropin" {
  command = plan

  assert {
    condition = alltrue(flatten([for i, name in output.names : [for d in [
      "[Unit]\nDescription=RTN region controller ${name} (us-east)\n",
      "[Service]\nEnvironment=RTN_CTL_CONFIG=/etc/rtn/controller.toml\nEnvironmentFile=\nEnvironmentFile=/etc/rtn/controller.env\n",
      "LoadCredential=etcd-client.key:/etc/rtn/tls/etcd-client.key\n",
      "Environment=RTN_CTL_ETCD_KEY=/run/credentials/rtn-controller.service/etcd-client.key\n",
      "Environment=RUST_LOG=info\n", "LimitNOFILE=65536\n", "MemoryMax=2G\n",
    ] : strcontains(output.systemd_dropin[i], d)]]))
    error_message = "a per-host setting is missing from a replica's drop-in"
  }
  assert {
    condition     = alltrue([for u in output.systemd_dropin : alltrue([for d in ["ExecStart", "User=", "DynamicUser", "ProtectSystem", "SystemCallFilter", "Restart=", "PrivateUsers"] : !strcontains(u, d)])])
    error_message = "the unit's command, user and sandbox are the package's (packaging/region-controller/rtn-controller.service), never the drop-in's"
  }
  assert {
    condition     = output.paths.dropin == "/etc/systemd/system/rtn-controller.service.d/10-terraform.conf" && output.paths.binary == "/usr/bin/region-controller" && contains(keys(nonsensitive(output.files[0])), output.paths.dropin) && !contains(keys(nonsensitive(output.files[0])), "/etc/systemd/system/rtn-controller.service")
    error_message = "the hosts get the drop-in, the unit comes from the package"
  }
  assert {
    condition     = alltrue([for u in nonsensitive(output.user_data) : strcontains(u, "--package") && strcontains(u, "https://releases.example.net/rtn/v0.1.0/rtn-controller_0.1.0_amd64.deb")])
    error_message = "every replica installs the package"
  }
  assert {
    condition     = strcontains(output.firewall_nft, "ip saddr { 0.0.0.0/0 } tcp dport 8080 accept comment \"API: nearest edge, health\"") && strcontains(output.firewall_nft, "ip6 saddr { ::/0 } tcp dport 8080 accept") && !strcontains(output.firewall_nft, "dport 22")
    error_message = "the API must be open and SSH closed by default"
  }
  assert {
    condition     = strcontains(output.firewall_nft, "ip saddr { 10.0.0.0/8 } tcp dport 9434 accept comment \"admin: mesh, dashboard, metrics, health\"") && strcontains(output.firewall_nft, "ip6 saddr { fd00::/8 } tcp dport 9434 accept")
    error_message = "the admin port must be open to admin_cidrs"
  }
  assert {
    condition     = length(regexall("dport 9434 ", output.firewall_nft)) == 2 && !can(regex("(0\\.0\\.0\\.0/0|::/0)[^\n]*dport 9434", output.firewall_nft))
    error_message = "the admin port must be open to admin_cidrs only, never to the internet"
  }
}

run "renders_the_admin_section" {
  command = plan

  assert {
    condition     = alltrue([for c in output.config_toml : strcontains(c, "\n[admin]\nlisten = \"0.0.0.0:9434\"\n# The bearer token of /v1/mesh and /v1/links/history, from /etc/rtn/controller.env.\ntoken_env = \"RTN_CTL_ADMIN_TOKEN\"\n")])
    error_message = "every replica needs [admin] with its listen address and the token's variable"
  }
  assert {
    condition     = alltrue([for c in output.config_toml : !strcontains(c, "admin_token_env") && length(regexall("(?m)^token_env = ", c)) == 1 && strcontains(split("[admin]", c)[1], "token_env") && !strcontains(split("[admin]", c)[0], "token_env")])
    error_message = "the token's variable belongs to [admin] (token_env), never [api] (admin_token_env is refused)"
  }
  assert {
    condition     = output.admin_port == 9434 && output.api_port == 8080
    error_message = "the ports outputs are wrong"
  }
}

run "admin_on_a_private_address" {
  command = plan

  variables {
    api_listen_address   = "203.0.113.10"
    admin_listen_address = "10.0.0.5"
    admin_port           = 8080
    admin_cidrs          = ["10.1.0.0/16"]
  }

  assert {
    condition     = strcontains(output.config_toml[0], "[api]\nlisten = \"203.0.113.10:8080\"\n") && strcontains(output.config_toml[0], "[admin]\nlisten = \"10.0.0.5:8080\"\n")
    error_message = "the same port on two specific addresses is allowed"
  }
  assert {
    condition     = strcontains(output.firewall_nft, "ip saddr { 10.1.0.0/16 } tcp dport 8080 accept comment \"admin: mesh, dashboard, metrics, health\"") && !strcontains(output.firewall_nft, "ip6 saddr { fd00::/8 }")
    error_message = "the admin rule follows admin_cidrs"
  }
}

run "admin_on_ipv6" {
  command = plan

  variables {
    admin_listen_address = "fd00::5"
    admin_port           = 9500
    admin_cidrs          = []
  }

  assert {
    condition     = strcontains(output.config_toml[0], "[admin]\nlisten = \"[fd00::5]:9500\"\n")
    error_message = "an IPv6 admin address needs brackets"
  }
  assert {
    condition     = !strcontains(output.firewall_nft, "dport 9500")
    error_message = "no admin_cidrs: the admin port stays closed"
  }
}

run "api_on_port_80" {
  command = plan
  variables {
    api_port = 80
  }
  assert {
    condition     = strcontains(output.systemd_dropin[0], "AmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\nPrivateUsers=no\n") && strcontains(output.config_toml[0], "listen = \"0.0.0.0:80\"\n")
    error_message = "port 80 needs CAP_NET_BIND_SERVICE"
  }
}

run "admin_on_a_privileged_port" {
  command = plan
  variables {
    admin_port = 900
  }
  assert {
    condition     = strcontains(output.systemd_dropin[0], "AmbientCapabilities=CAP_NET_BIND_SERVICE\n")
    error_message = "an admin port below 1024 needs CAP_NET_BIND_SERVICE"
  }
}

run "default_ports_need_no_capability" {
  command = plan
  assert {
    condition     = !strcontains(output.systemd_dropin[0], "AmbientCapabilities") && !strcontains(output.systemd_dropin[0], "CAP_NET_BIND_SERVICE")
    error_message = "ports 8080 and 9434 need no capability"
  }
}

run "rejects_admin_on_the_api_port" {
  command = plan
  variables {
    admin_port = 8080
  }
  expect_failures = [var.admin_port]
}

run "rejects_admin_on_the_api_port_of_an_unspecified_address" {
  command = plan
  variables {
    admin_listen_address = "10.0.0.5"
    admin_port           = 8080
  }
  expect_failures = [var.admin_port]
}

run "rejects_admin_on_the_api_port_of_ipv6_any" {
  command = plan
  variables {
    api_listen_address   = "10.0.0.5"
    admin_listen_address = "::"
    admin_port           = 8080
  }
  expect_failures = [var.admin_port]
}

run "rejects_an_admin_address_that_is_a_name" {
  command = plan
  variables {
    admin_listen_address = "controller.internal"
  }
  expect_failures = [var.admin_listen_address]
}

run "rejects_a_bad_admin_cidr" {
  command = plan
  variables {
    admin_cidrs = ["10.0.0.0/33"]
  }
  expect_failures = [var.admin_cidrs]
}

run "rejects_zero_replicas" {
  command = plan
  variables {
    replicas = 0
  }
  expect_failures = [var.replicas]
}

run "rejects_a_region_with_a_slash" {
  command = plan
  variables {
    region = "us/east"
  }
  expect_failures = [var.region]
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
    etcd_tls = { ca_pem = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n", cert_pem = "cert", key_pem = "-----BEGIN PRIVATE KEY-----\nX\n-----END PRIVATE KEY-----\n" }
  }
  expect_failures = [var.etcd_tls]
}

run "rejects_a_short_election_ttl" {
  command = plan
  variables {
    election_ttl_ms = 1000
  }
  expect_failures = [var.election_ttl_ms]
}

run "rejects_a_tiny_debounce" {
  command = plan
  variables {
    debounce_ms = 1
  }
  expect_failures = [var.debounce_ms]
}

run "rejects_a_bad_proxy" {
  command = plan
  variables {
    client_ip_header = "x-forwarded-for"
    trusted_proxies  = ["10.0.0.0/99"]
  }
  expect_failures = [var.trusted_proxies]
}

run "rejects_proxies_without_a_header" {
  command = plan
  variables {
    trusted_proxies = ["10.0.0.0/8"]
  }
  expect_failures = [var.trusted_proxies]
}

run "rejects_a_short_admin_token" {
  command = plan
  variables {
    admin_token = "short"
  }
  expect_failures = [var.admin_token]
}

run "rejects_zero_lookups" {
  command = plan
  variables {
    lookups_per_ip_per_s = 0
  }
  expect_failures = [var.lookups_per_ip_per_s]
}

run "rejects_a_geoip_db_over_http" {
  command = plan
  variables {
    geoip_db = { url = "http://example.net/city.mmdb", sha256 = "0a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f50" }
  }
  expect_failures = [var.geoip_db]
}

run "rejects_a_bad_package_checksum" {
  command = plan
  variables {
    package = { url = "https://releases.example.net/rtn-controller_0.1.0_amd64.deb", sha256 = "XYZ" }
  }
  expect_failures = [var.package]
}

run "rejects_the_edge_package" {
  command = plan
  variables {
    package = { url = "https://releases.example.net/rtn-edge_0.1.0_amd64.deb", sha256 = "0a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f50" }
  }
  expect_failures = [var.package]
}

run "geoip_update_timer_and_secret_store" {
  command = plan

  variables {
    geoip_update = { account_id = 123456, license_key = "licence_key_0123456789" }
    secret_store = { store = "aws-ssm", prefix = "/rtn/prod/us-east", region = "us-east-1" }
  }

  assert {
    condition     = strcontains(output.config_toml[0], "geoip_db = \"/etc/rtn/geoip/GeoLite2-City.mmdb\"\n") && strcontains(nonsensitive(output.user_data[0]), "geoipupdate -f /etc/rtn/GeoIP.conf -d /etc/rtn/geoip") && strcontains(nonsensitive(output.user_data[0]), "rtn-geoipupdate.timer")
    error_message = "geoipupdate must write the database the config names, from a timer"
  }
  assert {
    condition     = !strcontains(nonsensitive(output.user_data[0]), "licence_key_0123456789") && !strcontains(nonsensitive(output.user_data[0]), "PRIVATE KEY") && nonsensitive(output.secrets[0]["/etc/rtn/GeoIP.conf"].permissions) == "0600" && output.secret_names[1]["/etc/rtn/GeoIP.conf"] == "/rtn/prod/us-east/us-east-ctl-2/GeoIP.conf"
    error_message = "the licence key and keys go to the secret store, not the user data"
  }
}

run "rejects_a_bad_geoip_licence_key" {
  command = plan

  variables {
    geoip_update = { account_id = 123456, license_key = "bad key" }
  }

  expect_failures = [var.geoip_update]
}
