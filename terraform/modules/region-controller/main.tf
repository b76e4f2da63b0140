# Renders everything the hosts of one region's controllers need: a leader
# and standbys that differ only in their names. They run the rtn-controller
# package (its binary and hardened unit); this module renders the config,
# secrets, certificates, firewall and the unit's drop-in, and the user data
# that installs the package. No resources and no providers: a cloud module
# puts each user_data on an instance.

locals {
  # Installed by the rtn-controller package (packaging/, scripts/package.sh),
  # with the unit /lib/systemd/system/rtn-controller.service.
  binary_path = "/usr/bin/region-controller"
  config_path = "${var.config_dir}/controller.toml"
  env_path    = "${var.config_dir}/controller.env"
  geoip_dir   = "${var.config_dir}/geoip"
  # geoipupdate names the file after the edition.
  geoip_update = nonsensitive(var.geoip_update != null)
  geoip_path   = local.geoip_update ? "${local.geoip_dir}/${nonsensitive(var.geoip_update.edition)}.mmdb" : "${local.geoip_dir}/city.mmdb"
  geoip_conf   = "${var.config_dir}/GeoIP.conf"
  tls_dir      = "${var.config_dir}/tls"
  etcd_ca      = "${local.tls_dir}/etcd-ca.pem"
  etcd_cert    = "${local.tls_dir}/etcd-client.pem"
  etcd_key     = "${local.tls_dir}/etcd-client.key"
  nft_path     = "${var.config_dir}/firewall.nft"
  unit_name    = "rtn-controller.service"
  dropin_path  = "/etc/systemd/system/${local.unit_name}.d/10-terraform.conf"
  # Where systemd puts the unit's credentials (LoadCredential=): $CREDENTIALS_DIRECTORY.
  credentials_dir = "/run/credentials/${local.unit_name}"
  nft_table       = "rtn_controller"

  name_prefix     = coalesce(var.name_prefix, "${var.region}-ctl")
  names           = [for i in range(var.replicas) : "${local.name_prefix}-${i + 1}"]
  api_listen      = can(regex(":", var.api_listen_address)) ? "[${var.api_listen_address}]:${var.api_port}" : "${var.api_listen_address}:${var.api_port}"
  admin_listen    = can(regex(":", var.admin_listen_address)) ? "[${var.admin_listen_address}]:${var.admin_port}" : "${var.admin_listen_address}:${var.admin_port}"
  admin_token_env = nonsensitive(var.admin_token == null) ? null : "RTN_CTL_ADMIN_TOKEN"

  config_toml = [for name in local.names : templatefile("${path.module}/templates/controller.toml.tftpl", {
    region                  = var.region
    name                    = name
    debounce_ms             = var.debounce_ms
    recompute_ms            = var.recompute_ms
    hierarchical_from_edges = var.hierarchical_from_edges
    hubs_per_region         = var.hubs_per_region
    etcd_endpoints          = var.etcd_endpoints
    etcd_ca                 = local.etcd_ca
    etcd_cert               = local.etcd_cert
    etcd_key                = local.etcd_key
    prefix                  = var.etcd_prefix
    election_ttl_ms         = var.election_ttl_ms
    api_listen              = local.api_listen
    geoip_db                = var.geoip_db == null && !local.geoip_update ? null : local.geoip_path
    client_ip_header        = var.client_ip_header
    trusted_proxies         = var.trusted_proxies
    admin_listen            = local.admin_listen
    admin_token_env         = local.admin_token_env
    lookups_per_ip_per_s    = var.lookups_per_ip_per_s
    cors_origins            = var.cors_origins
    api_tls_files           = var.api_tls_files
    config_path             = local.config_path
    env_path                = local.env_path
  })]

  env_file = join("", [
    "# Secrets of the RTN region controller (rendered by terraform). Root-only; systemd reads it.\n",
    local.admin_token_env == null ? "" : "${local.admin_token_env}=${var.admin_token}\n",
  ])

  # The unit itself is the package's
  # (packaging/region-controller/rtn-controller.service): only what differs
  # per host is rendered here.
  systemd_dropin = [for name in local.names : templatefile("${path.module}/templates/rtn-controller.dropin.conf.tftpl", {
    name            = name
    region          = var.region
    config_path     = local.config_path
    env_path        = local.env_path
    etcd_key        = local.etcd_key
    credentials_dir = local.credentials_dir
    log_level       = var.log_level
    limit_nofile    = var.limit_nofile
    memory_max      = var.memory_max
    privileged_port = var.api_port < 1024 || var.admin_port < 1024
  })]

  firewall_rules = [for r in [
    { proto = "tcp", port = var.api_port, cidrs = var.api_cidrs, comment = "API: nearest edge, health" },
    { proto = "tcp", port = var.admin_port, cidrs = var.admin_cidrs, comment = "admin: mesh, dashboard, metrics, health" },
    { proto = "tcp", port = 22, cidrs = var.ssh_cidrs, comment = "ssh" },
    ] : {
    proto   = r.proto
    port    = r.port
    comment = r.comment
    v4      = [for c in r.cidrs : c if can(cidrnetmask(c))]
    v6      = [for c in r.cidrs : c if !can(cidrnetmask(c))]
  }]

  firewall_nft = templatefile("${path.module}/templates/firewall.nft.tftpl", {
    role  = "region controller"
    table = local.nft_table
    rules = local.firewall_rules
  })

  firewall_unit = templatefile("${path.module}/templates/rtn-firewall.service.tftpl", {
    table = local.nft_table
    path  = local.nft_path
  })

  install_script = file("${path.module}/templates/rtn-install.sh")

  # MaxMind's geoipupdate, run by a timer (geoip_update): its config holds
  # the licence key, so it is a secret file like the keys.
  geoip_conf_file = local.geoip_update ? join("", [
    "# MaxMind geoipupdate (rendered by terraform). Root-only: it holds the licence key.\n",
    "AccountID ${var.geoip_update.account_id}\n",
    "LicenseKey ${var.geoip_update.license_key}\n",
    "EditionIDs ${var.geoip_update.edition}\n",
    "DatabaseDirectory ${local.geoip_dir}\n",
  ]) : null
  geoip_files = local.geoip_update ? {
    (local.geoip_conf) = { content = local.geoip_conf_file, permissions = "0600" }
    "/etc/systemd/system/rtn-geoipupdate.service" = { content = templatefile("${path.module}/templates/rtn-geoipupdate.service.tftpl", {
      conf_path = local.geoip_conf
      db_dir    = local.geoip_dir
      edition   = nonsensitive(var.geoip_update.edition)
    }), permissions = "0644" }
    "/etc/systemd/system/rtn-geoipupdate.timer" = { content = templatefile("${path.module}/templates/rtn-geoipupdate.timer.tftpl", {
      on_calendar = nonsensitive(var.geoip_update.on_calendar)
    }), permissions = "0644" }
  } : {}

  files = [for i, name in local.names : merge(
    {
      (local.config_path)           = { content = local.config_toml[i], permissions = "0644" }
      (local.env_path)              = { content = local.env_file, permissions = "0600" }
      (local.etcd_ca)               = { content = var.etcd_tls.ca_pem, permissions = "0644" }
      (local.etcd_cert)             = { content = var.etcd_tls.cert_pem, permissions = "0644" }
      (local.etcd_key)              = { content = var.etcd_tls.key_pem, permissions = "0600" }
      (local.dropin_path)           = { content = local.systemd_dropin[i], permissions = "0644" }
      "/usr/local/sbin/rtn-install" = { content = local.install_script, permissions = "0755" }
    },
    var.host_firewall ? {
      (local.nft_path)                           = { content = local.firewall_nft, permissions = "0644" }
      "/etc/systemd/system/rtn-firewall.service" = { content = local.firewall_unit, permissions = "0644" }
    } : {},
    local.geoip_files,
  )]

  # The files that are secret: with a secret_store they are not in the user
  # data; the host fetches them (rtn-fetch-secrets) before anything starts.
  secret_paths = concat([local.env_path, local.etcd_key], local.geoip_update ? [local.geoip_conf] : [])
  secrets = [for i, name in local.names : { for p in local.secret_paths : p => {
    name        = var.secret_store == null ? null : var.secret_store.store == "aws-ssm" ? "${var.secret_store.prefix}/${name}/${basename(p)}" : "${var.secret_store.prefix}-${name}-${replace(basename(p), ".", "-")}"
    content     = local.files[i][p].content
    permissions = local.files[i][p].permissions
  } }]
  user_files = [for i, name in local.names : var.secret_store == null ? local.files[i] : merge(
    { for p, f in local.files[i] : p => f if !contains(local.secret_paths, p) },
    { "/usr/local/sbin/rtn-fetch-secrets" = { content = templatefile("${path.module}/templates/rtn-fetch-secrets.sh.tftpl", {
      store   = var.secret_store.store
      region  = var.secret_store.region
      project = var.secret_store.project
      secrets = [for p in sort(keys(local.secrets[i])) : { name = local.secrets[i][p].name, path = p, permissions = local.secrets[i][p].permissions }]
    }), permissions = "0755" } },
  )]
  fetch_cmds = var.secret_store == null ? [] : [["/usr/local/sbin/rtn-fetch-secrets"]]

  services = concat(var.host_firewall ? ["rtn-firewall.service"] : [], [local.unit_name])

  cloud_config = [for i, name in local.names : {
    package_update = true
    packages       = concat(["ca-certificates", "curl"], var.host_firewall ? ["nftables"] : [], local.geoip_update ? ["geoipupdate"] : [])
    write_files = [for p in sort(keys(local.user_files[i])) : {
      path        = p
      content     = local.user_files[i][p].content
      owner       = "root:root"
      permissions = local.user_files[i][p].permissions
    }]
    # The package after write_files: dpkg keeps the rendered
    # /etc/rtn/controller.toml over its default (rtn-install --package).
    # The secrets first (with a secret_store), before the package and units.
    # With geoip_update, a first update before the controller starts (it
    # may fail, e.g. before MaxMind has the key: the timer retries).
    runcmd = concat(
      local.fetch_cmds,
      [["/usr/local/sbin/rtn-install", "--package", var.package.url, var.package.sha256]],
      var.geoip_db == null ? [] : [["/usr/local/sbin/rtn-install", var.geoip_db.url, var.geoip_db.sha256, local.geoip_path, "0644"]],
      [["systemctl", "daemon-reload"]],
      local.geoip_update ? [
        ["mkdir", "-p", local.geoip_dir],
        ["systemctl", "start", "rtn-geoipupdate.service"],
        ["systemctl", "enable", "--now", "rtn-geoipupdate.timer"],
      ] : [],
      [concat(["systemctl", "enable", "--now"], local.services)],
    )
  }]

  user_data = [for c in local.cloud_config : "#cloud-config\n${yamlencode(c)}"]
}
