# The whole RTN on one machine, provisioned by terraform: etcd, a region
# controller (or several) per region and the edges run as local processes on
# loopback addresses, with the lab's WAN emulation on every edge's socket.
# Only what ships with Terraform is used (terraform_data and local-exec):
# `terraform init` downloads nothing. `terraform destroy` stops every process
# and removes state_dir. See README.md.
#
# Addresses: edge <id> 127.10.<id>.1 (the lab's convention: one address per
# host, so WAN rules can tell hosts apart), controllers 127.11.<k>.<r>,
# etcd 127.12.0.1; clients send from client_address (127.0.0.1).

locals {
  repo      = abspath("${path.module}/../../..")
  state_dir = abspath(coalesce(var.state_dir, "${path.root}/run"))
  script    = abspath("${path.module}/scripts/rtn-local.sh")

  release = "${local.repo}/target/release"
  bin_dir = abspath(coalesce(var.bin_dir, fileexists("${local.release}/edge-node") && fileexists("${local.release}/region-controller") ? local.release : "${local.repo}/target/debug"))
  bin = {
    edge       = "${local.bin_dir}/edge-node"
    controller = "${local.bin_dir}/region-controller"
    loadtest   = "${local.bin_dir}/loadtest"
  }

  # Files in state_dir (every process's command line names one of them,
  # which is how the stop script recognises its processes).
  certs_dir       = "${local.state_dir}/certs"
  mesh_ca         = "${local.certs_dir}/mesh-ca.pem"
  app_secret_file = "${local.state_dir}/secrets/app-secret"
  admin_token     = "${local.state_dir}/secrets/admin-token"
  app_secret_env  = "RTN_APP_SECRETS_${upper(replace(var.app_id, "/[^A-Za-z0-9]/", "_"))}"

  etcd = {
    address = "127.12.0.1"
    url     = "http://127.12.0.1:${var.ports.etcd_client}"
  }

  regions = sort(distinct([for e in var.edges : e.region]))
  controllers = {
    for p in setproduct(local.regions, range(1, var.controllers_per_region + 1)) : "${p[0]}-${p[1]}" => {
      name    = "controller-${p[0]}-${p[1]}"
      region  = p[0]
      address = "127.11.${index(local.regions, p[0]) + 1}.${p[1]}"
      url     = "http://127.11.${index(local.regions, p[0]) + 1}.${p[1]}:${var.ports.api}"
      # The admin face: /v1/mesh, /v1/links/history, the dashboard, /metrics.
      admin_url = "http://127.11.${index(local.regions, p[0]) + 1}.${p[1]}:${var.ports.controller_admin}"
    }
  }

  edges = {
    for id, e in var.edges : id => {
      id          = tonumber(id)
      name        = "edge-${id}"
      region      = e.region
      city        = lower(e.city)
      address     = "127.10.${id}.1"
      server_name = "edge-${id}.rtn.local"
      admin_url   = "http://127.10.${id}.1:${var.ports.admin}"
    }
  }

  # ---- WAN emulation: one-way link profiles between cities ----------------

  client_city = lower(var.client_city)
  cities      = distinct(concat([for e in local.edges : e.city], [local.client_city]))
  delay_table = merge(local.builtin_one_way_delay_ms, var.one_way_delay_ms)
  pair_key    = { for p in setproduct(local.cities, local.cities) : "${p[0]}>${p[1]}" => join("-", sort(p)) }
  missing_delays = sort(distinct([
    for p in setproduct(local.cities, local.cities) : join("-", sort(p))
    if p[0] != p[1] && !contains(keys(local.delay_table), join("-", sort(p)))
  ]))
  # The last override given for a city pair wins.
  overrides = { for l in var.links : join("-", sort([lower(l.a), lower(l.b)])) => l... }
  link = {
    for k, pair in local.pair_key : k => {
      base     = split(">", k)[0] == split(">", k)[1] ? var.metro_ms : lookup(local.delay_table, pair, 0)
      override = try(local.overrides[pair][length(local.overrides[pair]) - 1], null)
    }
  }
  profile = {
    for k, l in local.link : k => {
      delay_ms  = l.base + try(l.override.extra_delay_ms, 0)
      jitter_ms = coalesce(try(l.override.jitter_ms, null), var.jitter_ms)
      loss      = coalesce(try(l.override.loss, null), var.loss)
      down      = try(l.override.down, false)
    }
  }

  # Each edge delays what it sends: to every other edge by their cities'
  # profile, to the clients by the client city's plus the last mile. The
  # clients' own sends are not delayed (loadtest run has no emulation of its
  # own), so a client's RTT to an edge carries the delay one way.
  netem = {
    for id, e in local.edges : id => concat(
      [for oid, o in local.edges : merge(local.profile["${e.city}>${o.city}"], { from = "${e.address}/32", to = "${o.address}/32" }) if oid != id],
      [merge(local.profile["${e.city}>${local.client_city}"], {
        from     = "${e.address}/32"
        to       = "${var.client_address}/32"
        delay_ms = local.profile["${e.city}>${local.client_city}"].delay_ms + var.access_ms
      })],
    )
  }

  # ---- Configs ------------------------------------------------------------

  edge_config = {
    for id, e in local.edges : id => templatefile("${path.module}/templates/edge.toml.tftpl", {
      edge        = e
      port        = var.ports.quic
      admin_port  = var.ports.admin
      tls_cert    = "${local.certs_dir}/${e.server_name}.pem"
      tls_key     = "${local.certs_dir}/${e.server_name}.key"
      mesh_ca     = local.mesh_ca
      etcd_url    = local.etcd.url
      app_id      = var.app_id
      app_env     = local.app_secret_env
      netem       = local.netem[id]
      config_path = "${local.state_dir}/${e.name}.toml"
    })
  }

  controller_config = {
    for k, c in local.controllers : k => templatefile("${path.module}/templates/controller.toml.tftpl", {
      controller   = c
      port         = var.ports.api
      admin_port   = var.ports.controller_admin
      cors_origins = var.cors_origins
      etcd_url     = local.etcd.url
      config_path  = "${local.state_dir}/${c.name}.toml"
    })
  }
}

# state_dir, the app secret and the admin token. Destroyed last: it stops
# anything still running from state_dir (a process whose resource failed to
# start and was left tainted, say) and removes the directory.
resource "terraform_data" "state" {
  triggers_replace = [local.state_dir]
  input            = { state_dir = local.state_dir, script = local.script }

  lifecycle {
    precondition {
      condition     = length(local.missing_delays) == 0
      error_message = "No one-way delay for the city pairs ${join(", ", local.missing_delays)}: add them to one_way_delay_ms (or use cities of the built-in table in delays.tf)."
    }
    precondition {
      condition     = fileexists(local.bin.edge) && fileexists(local.bin.controller)
      error_message = "${local.bin.edge} or ${local.bin.controller} is missing: cargo build -p edge-node -p region-controller -p loadtest --features edge-node/netem (or set bin_dir)."
    }
    precondition {
      condition     = fileexists(var.etcd_binary)
      error_message = "${var.etcd_binary} is missing: apt-get install etcd-server (or set etcd_binary)."
    }
  }

  provisioner "local-exec" {
    command     = "exec bash \"$SCRIPT\" init"
    environment = { SCRIPT = local.script, STATE_DIR = local.state_dir }
  }

  provisioner "local-exec" {
    when        = destroy
    command     = "exec bash \"$SCRIPT\" teardown"
    environment = { SCRIPT = self.input.script, STATE_DIR = self.input.state_dir }
  }
}

# The dev mesh CA and a certificate per edge (edge-node dev-certs). A new set
# of edges gets a new CA, so its edges restart with it.
resource "terraform_data" "pki" {
  triggers_replace = { names = sort([for e in local.edges : e.server_name]), binary = local.bin.edge }
  input            = { state_dir = local.state_dir, script = local.script }

  provisioner "local-exec" {
    command = "exec bash \"$SCRIPT\" pki ${join(" ", sort([for e in local.edges : e.server_name]))}"
    environment = {
      SCRIPT    = local.script
      STATE_DIR = local.state_dir
      EDGE_BIN  = local.bin.edge
    }
  }

  provisioner "local-exec" {
    when        = destroy
    command     = "exec bash \"$SCRIPT\" unpki"
    environment = { SCRIPT = self.input.script, STATE_DIR = self.input.state_dir }
  }

  depends_on = [terraform_data.state]
}

resource "terraform_data" "etcd" {
  triggers_replace = { binary = var.etcd_binary, etcd = local.etcd, peer_port = var.ports.etcd_peer }
  input            = { name = "etcd", state_dir = local.state_dir, script = local.script }

  provisioner "local-exec" {
    command = "exec bash \"$SCRIPT\" etcd"
    environment = {
      SCRIPT      = local.script
      STATE_DIR   = local.state_dir
      NAME        = "etcd"
      ETCD_BIN    = var.etcd_binary
      ADDRESS     = local.etcd.address
      CLIENT_PORT = var.ports.etcd_client
      PEER_PORT   = var.ports.etcd_peer
    }
  }

  provisioner "local-exec" {
    when        = destroy
    command     = "exec bash \"$SCRIPT\" stop"
    environment = { SCRIPT = self.input.script, STATE_DIR = self.input.state_dir, NAME = self.input.name }
  }

  depends_on = [terraform_data.state]
}

resource "terraform_data" "controller" {
  for_each = local.controllers

  triggers_replace = { config = local.controller_config[each.key], binary = local.bin.controller, log_level = var.log_level, etcd = terraform_data.etcd.id }
  input            = { name = each.value.name, state_dir = local.state_dir, script = local.script }

  provisioner "local-exec" {
    command = "exec bash \"$SCRIPT\" controller"
    environment = {
      SCRIPT     = local.script
      STATE_DIR  = local.state_dir
      NAME       = each.value.name
      CONFIG     = local.controller_config[each.key]
      BIN        = local.bin.controller
      HEALTH_URL = "${each.value.url}/healthz"
      ADMIN_URL  = each.value.admin_url
      LOG_LEVEL  = var.log_level
    }
  }

  provisioner "local-exec" {
    when        = destroy
    command     = "exec bash \"$SCRIPT\" stop"
    environment = { SCRIPT = self.input.script, STATE_DIR = self.input.state_dir, NAME = self.input.name }
  }
}

resource "terraform_data" "edge" {
  for_each = local.edges

  triggers_replace = { config = local.edge_config[each.key], binary = local.bin.edge, log_level = var.log_level, pki = terraform_data.pki.id, etcd = terraform_data.etcd.id }
  input            = { name = each.value.name, state_dir = local.state_dir, script = local.script }

  provisioner "local-exec" {
    command = "exec bash \"$SCRIPT\" edge"
    environment = {
      SCRIPT     = local.script
      STATE_DIR  = local.state_dir
      NAME       = each.value.name
      CONFIG     = local.edge_config[each.key]
      BIN        = local.bin.edge
      HEALTH_URL = "${each.value.admin_url}/healthz"
      APP_ENV    = local.app_secret_env
      LOG_LEVEL  = var.log_level
    }
  }

  provisioner "local-exec" {
    when        = destroy
    command     = "exec bash \"$SCRIPT\" stop"
    environment = { SCRIPT = self.input.script, STATE_DIR = self.input.state_dir, NAME = self.input.name }
  }

  # Started after the controllers and stopped before them: a stopping edge
  # deregisters, which the controllers should see.
  depends_on = [terraform_data.controller]
}

# apply returns once the network serves: every controller ready (store
# synced) on both its ports, every edge listed by the nearest-edge API
# (registered, reporting load) and holding a route table from its region's
# controller.
resource "terraform_data" "ready" {
  triggers_replace = [for r in concat(values(terraform_data.controller), values(terraform_data.edge)) : r.id]

  provisioner "local-exec" {
    command = "exec bash \"$SCRIPT\" ready"
    environment = {
      SCRIPT          = local.script
      STATE_DIR       = local.state_dir
      CONTROLLER_URLS = join(" ", [for c in local.controllers : c.url])
      ADMIN_URLS      = join(" ", [for c in local.controllers : c.admin_url])
      EDGE_IDS        = join(" ", [for e in local.edges : e.id])
      EDGE_ADMIN_URLS = join(" ", [for e in local.edges : e.admin_url])
    }
  }
}
