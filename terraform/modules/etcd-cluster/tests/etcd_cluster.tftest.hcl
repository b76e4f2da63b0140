# terraform test for the etcd-cluster module. (terraform/tests/run_tests.py
# also starts the three rendered members on loopback and checks that they
# form a cluster over mutual TLS.)

variables {
  members = [
    { name = "etcd-1", ip = "10.0.1.10" },
    { name = "etcd-2", ip = "10.0.2.10" },
    { name = "etcd-3", ip = "10.0.3.10" },
  ]
  tls = {
    ca_pem = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
    members = {
      "etcd-1" = { cert_pem = "-----BEGIN CERTIFICATE-----\n1\n-----END CERTIFICATE-----\n", key_pem = "-----BEGIN PRIVATE KEY-----\n1\n-----END PRIVATE KEY-----\n" }
      "etcd-2" = { cert_pem = "-----BEGIN CERTIFICATE-----\n2\n-----END CERTIFICATE-----\n", key_pem = "-----BEGIN EC PRIVATE KEY-----\n2\n-----END EC PRIVATE KEY-----\n" }
      "etcd-3" = { cert_pem = "-----BEGIN CERTIFICATE-----\n3\n-----END CERTIFICATE-----\n", key_pem = "-----BEGIN PRIVATE KEY-----\n3\n-----END PRIVATE KEY-----\n" }
    }
  }
  client_cidrs = ["10.0.0.0/8"]
  admin_cidrs  = ["10.0.0.0/16"]
  # The tests run the distribution package (run_tests.py runs the system etcd).
  etcd_release = { distribution_package = true }
}

run "three_members_with_tls" {
  command = plan

  assert {
    condition     = output.initial_cluster == "etcd-1=https://10.0.1.10:2380,etcd-2=https://10.0.2.10:2380,etcd-3=https://10.0.3.10:2380"
    error_message = "initial-cluster is wrong"
  }
  assert {
    condition     = output.client_endpoints == tolist(["https://10.0.1.10:2379", "https://10.0.2.10:2379", "https://10.0.3.10:2379"]) && length(output.plaintext_client_endpoints) == 0 && output.ports.plaintext_client == null
    error_message = "client endpoints are wrong: TLS only by default"
  }
  assert {
    condition = alltrue([for l in [
      "name: \"etcd-2\"\n", "initial-cluster-state: \"new\"\n", "initial-cluster-token: \"rtn-etcd\"\n",
      "listen-peer-urls: \"https://10.0.2.10:2380\"\n",
      "listen-client-urls: \"https://10.0.2.10:2379\"\n",
      "advertise-client-urls: \"https://10.0.2.10:2379\"\n",
      "listen-metrics-urls: \"http://10.0.2.10:2381\"\n",
      "data-dir: \"/var/lib/rtn-etcd\"\n",
      "key-file: \"/run/credentials/rtn-etcd.service/member.key\"\n",
      "trusted-ca-file: \"/etc/rtn/tls/etcd-ca.pem\"\n",
      "enable-grpc-gateway: true\n",
    ] : strcontains(output.config_yaml["etcd-2"], l)])
    error_message = "a setting is missing from etcd-2's config"
  }
  assert {
    condition     = length(regexall("client-cert-auth: true", output.config_yaml["etcd-1"])) == 2
    error_message = "clients and peers must both present certificates"
  }
  assert {
    condition     = nonsensitive(output.files["etcd-2"]["/etc/rtn/tls/etcd-member.key"].content) == "-----BEGIN EC PRIVATE KEY-----\n2\n-----END EC PRIVATE KEY-----\n" && nonsensitive(output.files["etcd-2"]["/etc/rtn/tls/etcd-member.key"].permissions) == "0600"
    error_message = "each member gets its own root-only key"
  }
}

run "hardened_unit_and_firewall" {
  command = plan

  assert {
    condition = alltrue([for d in [
      "Type=notify", "ExecStart=/usr/bin/etcd --config-file /etc/rtn/etcd.yaml\n",
      "LoadCredential=member.key:/etc/rtn/tls/etcd-member.key", "StateDirectory=rtn-etcd\n",
      "DynamicUser=yes", "CapabilityBoundingSet=\n", "NoNewPrivileges=yes", "ProtectSystem=strict",
      "Restart=always", "LimitNOFILE=65536",
    ] : strcontains(output.systemd_unit["etcd-1"], d)])
    error_message = "a directive is missing from the unit"
  }
  assert {
    condition     = strcontains(output.firewall_nft["etcd-1"], "ip saddr { 10.0.2.10/32, 10.0.3.10/32 } tcp dport 2380 accept") && !strcontains(output.firewall_nft["etcd-1"], "10.0.1.10/32")
    error_message = "peers must only be open to the other members"
  }
  assert {
    condition     = strcontains(output.firewall_nft["etcd-1"], "ip saddr { 10.0.0.0/8 } tcp dport 2379 accept") && strcontains(output.firewall_nft["etcd-1"], "ip saddr { 10.0.0.0/16 } tcp dport 2381 accept")
    error_message = "client and metrics ports must be open to their networks"
  }
  assert {
    condition     = !strcontains(output.firewall_nft["etcd-1"], "plaintext") && length(regexall("dport", output.firewall_nft["etcd-1"])) == 3
    error_message = "by default only the TLS client, peer and metrics ports are open (SSH closed, no plaintext port)"
  }
}

run "plaintext_port_for_a_migration" {
  command = plan

  variables {
    plaintext_client_port = 2378
  }

  assert {
    condition     = output.plaintext_client_endpoints == tolist(["http://10.0.1.10:2378", "http://10.0.2.10:2378", "http://10.0.3.10:2378"]) && output.ports.plaintext_client == 2378
    error_message = "plaintext endpoints are wrong"
  }
  assert {
    condition     = strcontains(output.config_yaml["etcd-2"], "listen-client-urls: \"https://10.0.2.10:2379,http://10.0.2.10:2378\"\n") && length(regexall("client-cert-auth: true", output.config_yaml["etcd-2"])) == 2
    error_message = "the plaintext listener comes in addition to the TLS one, which still requires client certificates"
  }
  assert {
    condition     = strcontains(output.firewall_nft["etcd-1"], "ip saddr { 10.0.0.0/8 } tcp dport 2378 accept comment \"etcd clients (plaintext, private network)\"")
    error_message = "the plaintext port must be open to client_cidrs only"
  }
}

run "release_tarball_instead_of_the_package" {
  command = plan

  variables {
    etcd_release = {
      url    = "https://releases.example.net/etcd/etcd-v3.5.17-linux-amd64.tar.gz"
      sha256 = "5a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f5a"
    }
  }

  assert {
    condition     = strcontains(output.systemd_unit["etcd-1"], "ExecStart=/usr/local/bin/etcd ") && !strcontains(nonsensitive(output.user_data["etcd-1"]), "etcd-server")
    error_message = "a release tarball replaces the distribution's package"
  }
}

run "release_default_url_needs_a_checksum" {
  command = plan

  variables {
    etcd_release = { sha256 = "5a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f5a" }
  }

  assert {
    condition     = strcontains(nonsensitive(output.user_data["etcd-1"]), "https://github.com/etcd-io/etcd/releases/download/v3.5.21/etcd-v3.5.21-linux-amd64.tar.gz") && strcontains(output.systemd_unit["etcd-1"], "ExecStart=/usr/local/bin/etcd ")
    error_message = "the default release is etcd v3.5.21's upstream tarball"
  }
}

run "rejects_a_release_without_checksum" {
  command = plan

  variables {
    etcd_release = {}
  }

  expect_failures = [var.etcd_release]
}

run "secret_store_keeps_the_key_out_of_user_data" {
  command = plan

  variables {
    secret_store = { store = "gcp-secret-manager", prefix = "rtn", project = "rtn-prod" }
  }

  assert {
    condition     = !strcontains(nonsensitive(output.user_data["etcd-1"]), "PRIVATE KEY") && strcontains(nonsensitive(output.user_data["etcd-1"]), "rtn-etcd-1-etcd-member-key") && output.secret_names["etcd-1"]["/etc/rtn/tls/etcd-member.key"] == "rtn-etcd-1-etcd-member-key"
    error_message = "with a secret_store the member key is fetched, not in user data"
  }
}

run "five_members_ipv6" {
  command = plan

  variables {
    members = [for i in range(5) : { name = "m${i}", ip = "fd00::${i + 1}" }]
    tls = {
      ca_pem  = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
      members = { for i in range(5) : "m${i}" => { cert_pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n", key_pem = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n" } }
    }
    client_cidrs = ["fd00::/8"]
  }

  assert {
    condition     = output.client_endpoints[0] == "https://[fd00::1]:2379" && strcontains(output.firewall_nft["m0"], "ip6 saddr { fd00::2/128, fd00::3/128, fd00::4/128, fd00::5/128 } tcp dport 2380 accept")
    error_message = "IPv6 members need brackets in URLs and /128 in the firewall"
  }
}

run "rejects_two_members" {
  command = plan
  variables {
    members = [{ name = "etcd-1", ip = "10.0.1.10" }, { name = "etcd-2", ip = "10.0.2.10" }]
  }
  expect_failures = [var.members]
}

run "rejects_duplicate_ips" {
  command = plan
  variables {
    members = [{ name = "etcd-1", ip = "10.0.1.10" }, { name = "etcd-2", ip = "10.0.1.10" }, { name = "etcd-3", ip = "10.0.3.10" }]
  }
  expect_failures = [var.members]
}

run "rejects_tls_for_other_members" {
  command = plan
  variables {
    members = [{ name = "a", ip = "10.0.1.10" }, { name = "b", ip = "10.0.2.10" }, { name = "c", ip = "10.0.3.10" }]
  }
  expect_failures = [var.tls]
}

run "rejects_clashing_ports" {
  command = plan
  variables {
    plaintext_client_port = 2379
  }
  expect_failures = [var.plaintext_client_port]
}

run "rejects_a_short_election_timeout" {
  command = plan
  variables {
    election_timeout_ms = 300
  }
  expect_failures = [var.election_timeout_ms]
}

run "rejects_a_data_dir_outside_var_lib" {
  command = plan
  variables {
    data_dir = "/srv/etcd"
  }
  expect_failures = [var.data_dir]
}

run "rejects_an_unknown_cluster_state" {
  command = plan
  variables {
    initial_cluster_state = "join"
  }
  expect_failures = [var.initial_cluster_state]
}

run "rejects_a_huge_quota" {
  command = plan
  variables {
    quota_backend_bytes = 17179869184
  }
  expect_failures = [var.quota_backend_bytes]
}

run "rejects_no_client_cidrs" {
  command = plan
  variables {
    client_cidrs = []
  }
  expect_failures = [var.client_cidrs]
}
