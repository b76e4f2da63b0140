# Renders everything a host needs to run one RTN edge: its config, TLS
# material (mesh and etcd client), app secrets, kernel UDP tuning, a host
# firewall, this host's drop-in for the rtn-edge package's hardened systemd
# unit, and the cloud-init user data that installs all of it and the package.
# No resources and no providers: a cloud module puts user_data on an instance.

locals {
  # Installed by the rtn-edge package (packaging/, scripts/package.sh), with
  # the unit /lib/systemd/system/rtn-edge.service.
  binary_path = "/usr/bin/edge-node"
  config_path = "${var.config_dir}/edge.toml"
  env_path    = "${var.config_dir}/edge.env"
  tls_dir     = "${var.config_dir}/tls"
  tls_cert    = "${local.tls_dir}/edge.pem"
  tls_key     = "${local.tls_dir}/edge.key"
  tls_mesh_ca = "${local.tls_dir}/mesh-ca.pem"
  etcd_ca     = "${local.tls_dir}/etcd-ca.pem"
  etcd_cert   = "${local.tls_dir}/etcd-client.pem"
  etcd_key    = "${local.tls_dir}/etcd-client.key"
  nft_path    = "${var.config_dir}/firewall.nft"
  unit_name   = "rtn-edge.service"
  dropin_path = "/etc/systemd/system/${local.unit_name}.d/10-terraform.conf"
  # Where systemd puts the unit's credentials (LoadCredential=): $CREDENTIALS_DIRECTORY.
  credentials_dir = "/run/credentials/${local.unit_name}"
  nft_table       = "rtn_edge"

  ipv6_public  = can(regex(":", var.public_ip))
  public_addr  = local.ipv6_public ? "[${var.public_ip}]:${var.quic_port}" : "${var.public_ip}:${var.quic_port}"
  listen       = can(regex(":", var.listen_address)) ? "[${var.listen_address}]:${var.quic_port}" : "${var.listen_address}:${var.quic_port}"
  admin_listen = can(regex(":", var.admin_listen_address)) ? "[${var.admin_listen_address}]:${var.admin_port}" : "${var.admin_listen_address}:${var.admin_port}"

  limits = merge(var.limits, { max_sessions = var.capacity })

  # One environment variable per app: RTN_APP_SECRETS_<ID>.
  apps = [for a in var.apps : {
    id  = a.id
    env = "RTN_APP_SECRETS_${upper(replace(a.id, "/[^A-Za-z0-9]/", "_"))}"
  }]

  config_toml = templatefile("${path.module}/templates/edge.toml.tftpl", {
    edge_id                 = var.edge_id
    region                  = var.region
    city                    = var.city
    coordinates             = var.coordinates
    listen                  = local.listen
    public_addr             = local.public_addr
    admin_listen            = local.admin_listen
    server_name             = var.server_name
    udp_buffer_bytes        = var.udp_buffer_bytes
    quic_endpoints          = var.quic_endpoints
    tls_cert                = local.tls_cert
    tls_key                 = local.tls_key
    tls_mesh_ca             = local.tls_mesh_ca
    client_tls_files        = var.client_tls_files
    limits                  = local.limits
    etcd_endpoints          = var.etcd_endpoints
    etcd_ca                 = local.etcd_ca
    etcd_cert               = local.etcd_cert
    etcd_key                = local.etcd_key
    prefix                  = var.etcd_prefix
    lease_ttl_ms            = var.lease_ttl_ms
    probes_per_other_region = var.probes_per_other_region
    apps                    = local.apps
    config_path             = local.config_path
    env_path                = local.env_path
  })

  env_file = join("", [
    "# App secrets of RTN edge ${var.edge_id} (rendered by terraform). Root-only; systemd reads it.\n",
    join("", [for a in local.apps : "${a.env}=${join(",", var.app_secrets[a.id])}\n"]),
  ])

  # Leave room for the drain, then a margin for closing connections.
  stop_timeout_s = ceil(local.limits.drain_timeout_ms / 1000) + 15

  # The unit itself is the package's (packaging/edge-node/rtn-edge.service):
  # only what differs per host is rendered here.
  systemd_dropin = templatefile("${path.module}/templates/rtn-edge.dropin.conf.tftpl", {
    edge_id         = var.edge_id
    region          = var.region
    config_path     = local.config_path
    env_path        = local.env_path
    tls_key         = local.tls_key
    etcd_key        = local.etcd_key
    credentials_dir = local.credentials_dir
    log_format      = var.log_format
    log_level       = var.log_level
    stop_timeout_s  = local.stop_timeout_s
    limit_nofile    = var.limit_nofile
    memory_max      = var.memory_max
    privileged_port = var.quic_port < 1024 || var.admin_port < 1024
  })

  sysctl_conf = templatefile("${path.module}/templates/sysctl.conf.tftpl", {
    udp_buffer_bytes   = var.udp_buffer_bytes
    netdev_max_backlog = 16384
  })

  firewall_rules = [for r in [
    { proto = "udp", port = var.quic_port, cidrs = var.quic_cidrs, comment = "QUIC: clients and relay links" },
    { proto = "tcp", port = var.admin_port, cidrs = var.admin_cidrs, comment = "admin: metrics and health" },
    { proto = "tcp", port = 22, cidrs = var.ssh_cidrs, comment = "ssh" },
    ] : {
    proto   = r.proto
    port    = r.port
    comment = r.comment
    v4      = [for c in r.cidrs : c if can(cidrnetmask(c))]
    v6      = [for c in r.cidrs : c if !can(cidrnetmask(c))]
  }]

  firewall_nft = templatefile("${path.module}/templates/firewall.nft.tftpl", {
    role  = "edge"
    table = local.nft_table
    rules = local.firewall_rules
  })

  firewall_unit = templatefile("${path.module}/templates/rtn-firewall.service.tftpl", {
    table = local.nft_table
    path  = local.nft_path
  })

  install_script = file("${path.module}/templates/rtn-install.sh")

  # Every file the host gets, by path. The key and the secrets are root-only.
  files = merge(
    {
      (local.config_path)              = { content = local.config_toml, permissions = "0644" }
      (local.env_path)                 = { content = local.env_file, permissions = "0600" }
      (local.tls_cert)                 = { content = var.tls.cert_pem, permissions = "0644" }
      (local.tls_key)                  = { content = var.tls.key_pem, permissions = "0600" }
      (local.tls_mesh_ca)              = { content = var.tls.mesh_ca_pem, permissions = "0644" }
      (local.etcd_ca)                  = { content = var.etcd_tls.ca_pem, permissions = "0644" }
      (local.etcd_cert)                = { content = var.etcd_tls.cert_pem, permissions = "0644" }
      (local.etcd_key)                 = { content = var.etcd_tls.key_pem, permissions = "0600" }
      "/etc/sysctl.d/60-rtn-edge.conf" = { content = local.sysctl_conf, permissions = "0644" }
      (local.dropin_path)              = { content = local.systemd_dropin, permissions = "0644" }
      "/usr/local/sbin/rtn-install"    = { content = local.install_script, permissions = "0755" }
    },
    var.host_firewall ? {
      (local.nft_path)                           = { content = local.firewall_nft, permissions = "0644" }
      "/etc/systemd/system/rtn-firewall.service" = { content = local.firewall_unit, permissions = "0644" }
    } : {},
  )

  # The files that are secret: with a secret_store they are not in the user
  # data; the host fetches them (rtn-fetch-secrets) before anything starts.
  secret_paths = [local.env_path, local.tls_key, local.etcd_key]
  secrets = { for p in local.secret_paths : p => {
    name        = var.secret_store == null ? null : var.secret_store.store == "aws-ssm" ? "${var.secret_store.prefix}/${basename(p)}" : "${var.secret_store.prefix}-${replace(basename(p), ".", "-")}"
    content     = local.files[p].content
    permissions = local.files[p].permissions
  } }
  fetch_script = var.secret_store == null ? null : templatefile("${path.module}/templates/rtn-fetch-secrets.sh.tftpl", {
    store   = var.secret_store.store
    region  = var.secret_store.region
    project = var.secret_store.project
    secrets = [for p in sort(keys(local.secrets)) : { name = local.secrets[p].name, path = p, permissions = local.secrets[p].permissions }]
  })
  user_files = var.secret_store == null ? local.files : merge(
    { for p, f in local.files : p => f if !contains(local.secret_paths, p) },
    { "/usr/local/sbin/rtn-fetch-secrets" = { content = local.fetch_script, permissions = "0755" } },
  )
  fetch_cmds = var.secret_store == null ? [] : [["/usr/local/sbin/rtn-fetch-secrets"]]

  services = concat(var.host_firewall ? ["rtn-firewall.service"] : [], [local.unit_name])

  cloud_config = {
    package_update = true
    packages       = concat(["ca-certificates", "curl"], var.host_firewall ? ["nftables"] : [])
    write_files = [for p in sort(keys(local.user_files)) : {
      path        = p
      content     = local.user_files[p].content
      owner       = "root:root"
      permissions = local.user_files[p].permissions
    }]
    # The package after write_files: dpkg keeps the rendered
    # /etc/rtn/edge.toml over its default (rtn-install --package).
    # The secrets first (with a secret_store), before the package and units.
    runcmd = concat(local.fetch_cmds, [
      ["sysctl", "--system"],
      ["/usr/local/sbin/rtn-install", "--package", var.package.url, var.package.sha256],
      ["systemctl", "daemon-reload"],
      concat(["systemctl", "enable", "--now"], local.services),
    ])
  }

  user_data = "#cloud-config\n${yamlencode(local.cloud_config)}"
}
