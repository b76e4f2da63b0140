# Renders the hosts of a three- (or five-) member etcd cluster: TLS between
# members and for clients (client certificates required), a hardened systemd
# unit, and, for a migration only, a plaintext client port on the private
# network. No resources
# and no providers: a cloud module puts each user_data on an instance whose
# private address is the member's ip.

locals {
  config_path     = "${var.config_dir}/etcd.yaml"
  tls_dir         = "${var.config_dir}/tls"
  ca_path         = "${local.tls_dir}/etcd-ca.pem"
  cert_path       = "${local.tls_dir}/etcd-member.pem"
  key_path        = "${local.tls_dir}/etcd-member.key"
  nft_path        = "${var.config_dir}/firewall.nft"
  unit_name       = "rtn-etcd.service"
  nft_table       = "rtn_etcd"
  credentials_dir = "/run/credentials/${local.unit_name}"
  state_directory = trimprefix(var.data_dir, "/var/lib/")
  use_release     = !var.etcd_release.distribution_package
  binary_path     = local.use_release ? "/usr/local/bin/etcd" : "/usr/bin/etcd"

  host = { for m in var.members : m.name => can(regex(":", m.ip)) ? "[${m.ip}]" : m.ip }

  peer_urls        = { for m in var.members : m.name => "https://${local.host[m.name]}:${var.peer_port}" }
  client_urls      = { for m in var.members : m.name => "https://${local.host[m.name]}:${var.client_port}" }
  plaintext_urls   = { for m in var.members : m.name => var.plaintext_client_port == null ? null : "http://${local.host[m.name]}:${var.plaintext_client_port}" }
  metrics_urls     = { for m in var.members : m.name => "http://${local.host[m.name]}:${var.metrics_port}" }
  initial_cluster  = join(",", [for m in var.members : "${m.name}=${local.peer_urls[m.name]}"])
  client_endpoints = [for m in var.members : local.client_urls[m.name]]
  plaintext_endpoints = var.plaintext_client_port == null ? [] : [
    for m in var.members : local.plaintext_urls[m.name]
  ]

  config_yaml = { for m in var.members : m.name => templatefile("${path.module}/templates/etcd.yaml.tftpl", {
    name                      = m.name
    cluster_token             = var.cluster_token
    data_dir                  = var.data_dir
    initial_cluster           = local.initial_cluster
    initial_cluster_state     = var.initial_cluster_state
    peer_url                  = local.peer_urls[m.name]
    listen_client_urls        = compact([local.client_urls[m.name], local.plaintext_urls[m.name]])
    metrics_url               = local.metrics_urls[m.name]
    heartbeat_interval_ms     = var.heartbeat_interval_ms
    election_timeout_ms       = var.election_timeout_ms
    snapshot_count            = var.snapshot_count
    quota_backend_bytes       = var.quota_backend_bytes
    auto_compaction_retention = var.auto_compaction_retention
    cert_file                 = local.cert_path
    key_file                  = "${local.credentials_dir}/member.key"
    ca_file                   = local.ca_path
  }) }

  systemd_unit = { for m in var.members : m.name => templatefile("${path.module}/templates/rtn-etcd.service.tftpl", {
    name                = m.name
    binary              = local.binary_path
    config_path         = local.config_path
    key_path            = local.key_path
    credentials_dir     = local.credentials_dir
    state_directory     = local.state_directory
    quota_backend_bytes = var.quota_backend_bytes
    memory_max          = var.memory_max
  }) }

  # For operators on a member: set -a; . /etc/rtn/etcdctl.env; etcdctl endpoint health --cluster
  etcdctl_env = join("", [
    "# etcdctl settings for operators (root: the key is root-only). Use: set -a; . ${var.config_dir}/etcdctl.env\n",
    "ETCDCTL_API=3\n",
    "ETCDCTL_ENDPOINTS=${join(",", local.client_endpoints)}\n",
    "ETCDCTL_CACERT=${local.ca_path}\n",
    "ETCDCTL_CERT=${local.cert_path}\n",
    "ETCDCTL_KEY=${local.key_path}\n",
  ])

  firewall_rules = { for m in var.members : m.name => [for r in concat(
    [
      { proto = "tcp", port = var.client_port, cidrs = var.client_cidrs, comment = "etcd clients (TLS)" },
      { proto = "tcp", port = var.peer_port, cidrs = [for o in var.members : can(regex(":", o.ip)) ? "${o.ip}/128" : "${o.ip}/32" if o.name != m.name], comment = "etcd peers" },
      { proto = "tcp", port = var.metrics_port, cidrs = var.admin_cidrs, comment = "etcd metrics" },
      { proto = "tcp", port = 22, cidrs = var.ssh_cidrs, comment = "ssh" },
    ],
    var.plaintext_client_port == null ? [] : [
      { proto = "tcp", port = var.plaintext_client_port, cidrs = var.client_cidrs, comment = "etcd clients (plaintext, private network)" },
    ],
    ) : {
    proto   = r.proto
    port    = r.port
    comment = r.comment
    v4      = [for c in r.cidrs : c if can(cidrnetmask(c))]
    v6      = [for c in r.cidrs : c if !can(cidrnetmask(c))]
  }] }

  firewall_nft = { for m in var.members : m.name => templatefile("${path.module}/templates/firewall.nft.tftpl", {
    role  = "etcd member ${m.name}"
    table = local.nft_table
    rules = local.firewall_rules[m.name]
  }) }

  firewall_unit = templatefile("${path.module}/templates/rtn-firewall.service.tftpl", {
    table = local.nft_table
    path  = local.nft_path
  })

  install_script = file("${path.module}/templates/rtn-install.sh")

  files = { for m in var.members : m.name => merge(
    {
      (local.config_path)                      = { content = local.config_yaml[m.name], permissions = "0644" }
      (local.ca_path)                          = { content = var.tls.ca_pem, permissions = "0644" }
      (local.cert_path)                        = { content = var.tls.members[m.name].cert_pem, permissions = "0644" }
      (local.key_path)                         = { content = var.tls.members[m.name].key_pem, permissions = "0600" }
      "${var.config_dir}/etcdctl.env"          = { content = local.etcdctl_env, permissions = "0644" }
      "/etc/systemd/system/${local.unit_name}" = { content = local.systemd_unit[m.name], permissions = "0644" }
      "/usr/local/sbin/rtn-install"            = { content = local.install_script, permissions = "0755" }
    },
    var.host_firewall ? {
      (local.nft_path)                           = { content = local.firewall_nft[m.name], permissions = "0644" }
      "/etc/systemd/system/rtn-firewall.service" = { content = local.firewall_unit, permissions = "0644" }
    } : {},
  ) }

  # The member's key is its secret: with a secret_store it is not in the user
  # data; the member fetches it (rtn-fetch-secrets) before etcd starts.
  secret_paths = [local.key_path]
  secret_names = { for m in var.members : m.name => var.secret_store == null ? {} : { for p in local.secret_paths : p => (var.secret_store.store == "aws-ssm" ? "${var.secret_store.prefix}/${m.name}/${basename(p)}" : "${var.secret_store.prefix}-${m.name}-${replace(basename(p), ".", "-")}") } }
  secrets = { for m in var.members : m.name => { for p in local.secret_paths : p => {
    name        = lookup(local.secret_names[m.name], p, null)
    content     = local.files[m.name][p].content
    permissions = local.files[m.name][p].permissions
  } } }
  user_files = { for m in var.members : m.name => var.secret_store == null ? local.files[m.name] : merge(
    { for p, f in local.files[m.name] : p => f if !contains(local.secret_paths, p) },
    { "/usr/local/sbin/rtn-fetch-secrets" = { content = templatefile("${path.module}/templates/rtn-fetch-secrets.sh.tftpl", {
      store   = var.secret_store.store
      region  = var.secret_store.region
      project = var.secret_store.project
      secrets = [for p in sort(keys(local.secrets[m.name])) : { name = local.secrets[m.name][p].name, path = p, permissions = local.secrets[m.name][p].permissions }]
    }), permissions = "0755" } },
  ) }
  fetch_cmds = var.secret_store == null ? [] : [["/usr/local/sbin/rtn-fetch-secrets"]]

  services = concat(var.host_firewall ? ["rtn-firewall.service"] : [], [local.unit_name])

  install_cmds = !local.use_release ? [] : [
    ["/usr/local/sbin/rtn-install", var.etcd_release.url, var.etcd_release.sha256, "/usr/local/lib/rtn/etcd.tar.gz", "0644"],
    ["tar", "-xzf", "/usr/local/lib/rtn/etcd.tar.gz", "-C", "/usr/local/bin", "--strip-components=1", "--no-same-owner", "--wildcards", "*/etcd", "*/etcdctl", "*/etcdutl"],
  ]

  cloud_config = { for m in var.members : m.name => {
    # The distribution's package starts its own etcd on install: mask it first.
    bootcmd        = [["systemctl", "mask", "etcd.service"]]
    package_update = true
    packages = concat(
      ["ca-certificates", "curl"],
      var.host_firewall ? ["nftables"] : [],
      local.use_release ? [] : ["etcd-server", "etcd-client"],
    )
    write_files = [for p in sort(keys(local.user_files[m.name])) : {
      path        = p
      content     = local.user_files[m.name][p].content
      owner       = "root:root"
      permissions = local.user_files[m.name][p].permissions
    }]
    # The key first (with a secret_store), before etcd starts.
    runcmd = concat(local.fetch_cmds, local.install_cmds, [
      ["systemctl", "daemon-reload"],
      concat(["systemctl", "enable", "--now"], local.services),
    ])
  } }

  user_data = { for name, c in local.cloud_config : name => "#cloud-config\n${yamlencode(c)}" }
}
