# A whole RTN fleet on Google Cloud. A VPC network is global, so one module
# holds every region: a subnet per region (private addresses route between
# regions without peering), firewall rules by network tag, edges and
# controllers on static external addresses, the etcd cluster in one region,
# certificates from the mesh and etcd CAs (etcd members, and an etcd client
# certificate per edge and per region's controllers), and Cloud DNS with a geo-routed
# record for the SDK's first contact.

locals {
  tags = {
    edge       = "${var.name}-edge"
    controller = "${var.name}-controller"
    etcd       = "${var.name}-etcd"
  }
  labels = merge(var.labels, { rtn-fleet = var.name })
  # Ubuntu's image family of the packages' architecture (var.arch).
  image = coalesce(var.image, "ubuntu-os-cloud/ubuntu-2404-lts-${var.arch}")

  edges = merge([for rk, r in var.regions : {
    for i, e in r.edges : tostring(e.id) => {
      id           = e.id
      region       = rk
      gcp_region   = r.gcp_region
      zone         = coalesce(e.zone, r.zones[i % length(r.zones)])
      machine_type = coalesce(e.machine_type, var.edge_machine_type)
    }
  }]...)
  server_names = { for k, e in local.edges : k => "edge-${e.id}.${var.domain}" }

  controllers = merge([for rk, r in var.regions : {
    for i in range(r.controllers) : "${rk}-${i + 1}" => {
      region     = rk
      index      = i
      gcp_region = r.gcp_region
      zone       = r.zones[i % length(r.zones)]
    }
  }]...)

  etcd_host = var.regions[var.etcd_region]
  etcd_members = [for i in range(3) : {
    name = "etcd-${i + 1}"
    ip   = cidrhost(local.etcd_host.cidr, 10 + i)
    zone = local.etcd_host.zones[i % length(local.etcd_host.zones)]
  }]
  etcd_endpoints = module.etcd.client_endpoints
  subnet_cidrs   = [for r in values(var.regions) : r.cidr]

  # Secrets (keys, tokens, app secrets) are not in user data: each host
  # fetches its own from Secret Manager at first boot (secrets named
  # <fleet>-<host>-<file>), as a service account of its own that may read
  # only those.
  secret_store = { store = "gcp-secret-manager", prefix = var.name, project = data.google_client_config.current.project }
  secret_hosts = merge(
    { for k in keys(local.edges) : "edge-${k}" => k },
    merge({}, [for rk, m in module.controllers : { for n in m.names : n => rk }]...),
    { for m in local.etcd_members : m.name => m.name },
  )
  # Secret id => where its content comes from (ids are known at plan time;
  # the contents are sensitive module outputs).
  secret_params = merge(
    merge({}, [for k, m in module.edge : { for p, n in m.secret_names : n => { host = "edge-${k}", src = "edge/${k}", path = p } }]...),
    merge({}, [for rk, m in module.controllers : merge({}, [for i, names in m.secret_names : { for p, n in names : n => { host = m.names[i], src = "controller/${rk}/${i}", path = p } }]...)]...),
    merge({}, [for member, names in module.etcd.secret_names : { for p, n in names : n => { host = member, src = "etcd/${member}", path = p } }]...),
  )
  secret_content = merge(
    { for k, m in module.edge : "edge/${k}" => m.secrets },
    merge({}, [for rk, m in module.controllers : { for i, s in m.secrets : "controller/${rk}/${i}" => s }]...),
    { for member, s in module.etcd.secrets : "etcd/${member}" => s },
  )
}

data "google_client_config" "current" {}

# --- secrets: one Secret Manager secret per secret file and host, and per
# host a service account that may read its own secrets only (and write logs
# and metrics)

resource "google_service_account" "host" {
  for_each     = local.secret_hosts
  account_id   = "rtn-${substr(sha1("${var.name}/${each.key}"), 0, 16)}"
  display_name = "RTN ${var.name} ${each.key}"
  description  = "Instance of RTN fleet ${var.name}: ${each.key}. Reads its own secrets in Secret Manager."
}

resource "google_project_iam_member" "host" {
  for_each = { for p in setproduct(keys(local.secret_hosts), ["roles/logging.logWriter", "roles/monitoring.metricWriter"]) : "${p[0]} ${p[1]}" => { host = p[0], role = p[1] } }
  project  = data.google_client_config.current.project
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.host[each.value.host].email}"
}

resource "google_secret_manager_secret" "host" {
  for_each  = local.secret_params
  secret_id = each.key
  labels    = local.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "host" {
  for_each    = local.secret_params
  secret      = google_secret_manager_secret.host[each.key].id
  secret_data = base64encode(local.secret_content[each.value.src][each.value.path].content)
}

resource "google_secret_manager_secret_iam_member" "host" {
  for_each  = local.secret_params
  secret_id = google_secret_manager_secret.host[each.key].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.host[each.value.host].email}"
}

# --- network

resource "google_compute_network" "this" {
  name                    = var.name
  auto_create_subnetworks = false
  routing_mode            = "GLOBAL"
}

resource "google_compute_subnetwork" "region" {
  for_each                 = var.regions
  name                     = "${var.name}-${each.key}"
  region                   = each.value.gcp_region
  network                  = google_compute_network.this.id
  ip_cidr_range            = each.value.cidr
  private_ip_google_access = true
}

# --- firewall: QUIC and the controllers' public API open to the world, the
# rest (admin ports, etcd) private

resource "google_compute_firewall" "edge_quic" {
  name          = "${var.name}-edge-quic"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = ["0.0.0.0/0"]
  target_tags   = [local.tags.edge]

  allow {
    protocol = "udp"
    ports    = [tostring(var.quic_port)]
  }
}

resource "google_compute_firewall" "edge_admin" {
  name          = "${var.name}-edge-admin"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = concat(local.subnet_cidrs, var.admin_cidrs)
  target_tags   = [local.tags.edge]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.admin_port)]
  }
}

resource "google_compute_firewall" "controller_api" {
  name          = "${var.name}-controller-api"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = ["0.0.0.0/0"]
  target_tags   = [local.tags.controller]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.api_port)]
  }
}

resource "google_compute_firewall" "controller_admin" {
  name          = "${var.name}-controller-admin"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = concat(local.subnet_cidrs, var.admin_cidrs)
  target_tags   = [local.tags.controller]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.controller_admin_port)]
  }
}

resource "google_compute_firewall" "etcd_client" {
  name          = "${var.name}-etcd-client"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = local.subnet_cidrs
  target_tags   = [local.tags.etcd]

  allow {
    protocol = "tcp"
    ports    = compact(["2379", var.etcd.plaintext_client_port == null ? "" : tostring(var.etcd.plaintext_client_port)])
  }
}

resource "google_compute_firewall" "etcd_peer" {
  name        = "${var.name}-etcd-peer"
  network     = google_compute_network.this.id
  direction   = "INGRESS"
  source_tags = [local.tags.etcd]
  target_tags = [local.tags.etcd]

  allow {
    protocol = "tcp"
    ports    = ["2380"]
  }
}

resource "google_compute_firewall" "etcd_metrics" {
  name          = "${var.name}-etcd-metrics"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = concat(local.subnet_cidrs, var.admin_cidrs)
  target_tags   = [local.tags.etcd]

  allow {
    protocol = "tcp"
    ports    = ["2381"]
  }
}

resource "google_compute_firewall" "ssh" {
  count         = length(var.ssh_cidrs) > 0 ? 1 : 0
  name          = "${var.name}-ssh"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  source_ranges = var.ssh_cidrs
  target_tags   = values(local.tags)

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}

# --- certificates

resource "tls_private_key" "edge" {
  for_each    = local.edges
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "edge" {
  for_each        = local.edges
  private_key_pem = tls_private_key.edge[each.key].private_key_pem
  dns_names       = [local.server_names[each.key]]
  ip_addresses    = [google_compute_address.edge[each.key].address]

  subject {
    common_name  = local.server_names[each.key]
    organization = var.name
  }
}

resource "tls_locally_signed_cert" "edge" {
  for_each              = local.edges
  cert_request_pem      = tls_cert_request.edge[each.key].cert_request_pem
  ca_private_key_pem    = var.mesh_ca.key_pem
  ca_cert_pem           = var.mesh_ca.cert_pem
  validity_period_hours = var.cert_validity_hours
  early_renewal_hours   = var.cert_early_renewal_hours
  allowed_uses          = ["digital_signature", "server_auth", "client_auth"]
}

resource "tls_private_key" "etcd" {
  count       = 3
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "etcd" {
  count           = 3
  private_key_pem = tls_private_key.etcd[count.index].private_key_pem
  ip_addresses    = [local.etcd_members[count.index].ip, "127.0.0.1"]

  subject {
    common_name  = local.etcd_members[count.index].name
    organization = var.name
  }
}

resource "tls_locally_signed_cert" "etcd" {
  count                 = 3
  cert_request_pem      = tls_cert_request.etcd[count.index].cert_request_pem
  ca_private_key_pem    = var.etcd_ca.key_pem
  ca_cert_pem           = var.etcd_ca.cert_pem
  validity_period_hours = var.cert_validity_hours
  early_renewal_hours   = var.cert_early_renewal_hours
  allowed_uses          = ["digital_signature", "server_auth", "client_auth"]
}

locals {
  # etcd clients: every edge, and each region's controllers.
  etcd_clients = merge(
    { for k in keys(local.edges) : "edge-${k}" => k },
    { for rk in keys(var.regions) : "controllers-${rk}" => rk },
  )
}

resource "tls_private_key" "etcd_client" {
  for_each    = local.etcd_clients
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "etcd_client" {
  for_each        = tls_private_key.etcd_client
  private_key_pem = each.value.private_key_pem

  subject {
    common_name  = "${var.name}-${each.key}"
    organization = var.name
  }
}

resource "tls_locally_signed_cert" "etcd_client" {
  for_each              = tls_cert_request.etcd_client
  cert_request_pem      = each.value.cert_request_pem
  ca_private_key_pem    = var.etcd_ca.key_pem
  ca_cert_pem           = var.etcd_ca.cert_pem
  validity_period_hours = var.cert_validity_hours
  early_renewal_hours   = var.cert_early_renewal_hours
  allowed_uses          = ["digital_signature", "client_auth"]
}

# --- etcd

module "etcd" {
  source = "../etcd-cluster"

  cluster_token         = "${var.name}-etcd"
  members               = [for m in local.etcd_members : { name = m.name, ip = m.ip }]
  plaintext_client_port = var.etcd.plaintext_client_port
  client_cidrs          = local.subnet_cidrs
  admin_cidrs           = concat(local.subnet_cidrs, var.admin_cidrs)
  ssh_cidrs             = var.ssh_cidrs
  etcd_release          = var.etcd_release
  secret_store          = local.secret_store
  tls = {
    ca_pem = var.etcd_ca.cert_pem
    members = { for i, m in local.etcd_members : m.name => {
      cert_pem = tls_locally_signed_cert.etcd[i].cert_pem
      key_pem  = tls_private_key.etcd[i].private_key_pem_pkcs8
    } }
  }
}

resource "google_compute_instance" "etcd" {
  count        = 3
  name         = "${var.name}-${local.etcd_members[count.index].name}"
  machine_type = var.etcd.machine_type
  zone         = local.etcd_members[count.index].zone
  tags         = [local.tags.etcd]
  labels       = merge(local.labels, { rtn-role = "etcd" })

  boot_disk {
    initialize_params {
      image = local.image
      size  = 40
      type  = "pd-ssd"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.region[var.etcd_region].id
    network_ip = local.etcd_members[count.index].ip
    access_config {} # outbound only (packages); no firewall rule admits the world
  }

  metadata = {
    user-data              = module.etcd.user_data[local.etcd_members[count.index].name]
    block-project-ssh-keys = "true"
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  # Its own account: reads its secrets (cloud-platform scope, which Secret
  # Manager needs; IAM limits it), writes logs and metrics.
  service_account {
    email  = google_service_account.host[local.etcd_members[count.index].name].email
    scopes = ["cloud-platform"]
  }

  # Its key must be in Secret Manager, readable by its account, when it boots.
  depends_on = [google_secret_manager_secret_version.host, google_secret_manager_secret_iam_member.host]

  lifecycle {
    # A member keeps its data: replace members by hand (docs/operations.md).
    ignore_changes = [metadata, boot_disk[0].initialize_params[0].image]
  }
}

# --- edges

resource "google_compute_address" "edge" {
  for_each     = local.edges
  name         = "${var.name}-edge-${each.key}"
  region       = each.value.gcp_region
  address_type = "EXTERNAL"
  network_tier = "PREMIUM"
  labels       = local.labels
}

module "edge" {
  for_each = local.edges
  source   = "../edge-node"

  edge_id        = each.value.id
  region         = each.value.region
  city           = var.regions[each.value.region].city
  coordinates    = var.regions[each.value.region].coordinates
  etcd_endpoints = local.etcd_endpoints
  public_ip      = google_compute_address.edge[each.key].address
  quic_port      = var.quic_port
  admin_port     = var.admin_port
  server_name    = local.server_names[each.key]
  capacity       = var.edge_capacity
  apps           = var.apps
  app_secrets    = var.app_secrets
  package        = var.edge_package
  secret_store   = merge(local.secret_store, { prefix = "${var.name}-edge-${each.key}" })
  admin_cidrs    = concat(local.subnet_cidrs, var.admin_cidrs)
  ssh_cidrs      = var.ssh_cidrs
  tls = {
    cert_pem    = tls_locally_signed_cert.edge[each.key].cert_pem
    key_pem     = tls_private_key.edge[each.key].private_key_pem_pkcs8
    mesh_ca_pem = var.mesh_ca.cert_pem
  }
  etcd_tls = {
    ca_pem   = var.etcd_ca.cert_pem
    cert_pem = tls_locally_signed_cert.etcd_client["edge-${each.key}"].cert_pem
    key_pem  = tls_private_key.etcd_client["edge-${each.key}"].private_key_pem_pkcs8
  }
}

resource "google_compute_instance" "edge" {
  for_each     = local.edges
  name         = "${var.name}-edge-${each.key}"
  machine_type = each.value.machine_type
  zone         = each.value.zone
  tags         = [local.tags.edge]
  labels       = merge(local.labels, { rtn-role = "edge", rtn-edge-id = each.key })

  boot_disk {
    initialize_params {
      image = local.image
      size  = 20
      type  = "pd-balanced"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.region[each.value.region].id
    access_config {
      nat_ip       = google_compute_address.edge[each.key].address
      network_tier = "PREMIUM"
    }
  }

  metadata = {
    user-data              = module.edge[each.key].user_data
    block-project-ssh-keys = "true"
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  service_account {
    email  = google_service_account.host["edge-${each.key}"].email
    scopes = ["cloud-platform"]
  }

  depends_on = [google_secret_manager_secret_version.host, google_secret_manager_secret_iam_member.host]

  lifecycle {
    # cloud-init runs once, so a new config, package or certificate needs a
    # new instance, and replacing one drains its clients. So that one apply
    # never drains a whole fleet, changed user data is ignored here: roll
    # edges one at a time with terraform apply -replace (docs/operations.md).
    ignore_changes = [boot_disk[0].initialize_params[0].image, metadata["user-data"]]
  }
}

# --- region controllers

module "controllers" {
  for_each = var.regions
  source   = "../region-controller"

  region         = each.key
  replicas       = each.value.controllers
  etcd_endpoints = local.etcd_endpoints
  etcd_tls = {
    ca_pem   = var.etcd_ca.cert_pem
    cert_pem = tls_locally_signed_cert.etcd_client["controllers-${each.key}"].cert_pem
    key_pem  = tls_private_key.etcd_client["controllers-${each.key}"].private_key_pem_pkcs8
  }
  api_port     = var.api_port
  admin_port   = var.controller_admin_port
  admin_cidrs  = concat(local.subnet_cidrs, var.admin_cidrs)
  geoip_db     = var.geoip_db
  geoip_update = var.geoip_update
  admin_token  = var.admin_token
  package      = var.controller_package
  ssh_cidrs    = var.ssh_cidrs
  secret_store = local.secret_store
}

resource "google_compute_address" "controller" {
  for_each     = local.controllers
  name         = "${var.name}-ctl-${each.key}"
  region       = each.value.gcp_region
  address_type = "EXTERNAL"
  network_tier = "PREMIUM"
  labels       = local.labels
}

resource "google_compute_instance" "controller" {
  for_each     = local.controllers
  name         = "${var.name}-ctl-${each.key}"
  machine_type = var.controller_machine_type
  zone         = each.value.zone
  tags         = [local.tags.controller]
  labels       = merge(local.labels, { rtn-role = "controller" })

  boot_disk {
    initialize_params {
      image = local.image
      size  = 20
      type  = "pd-balanced"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.region[each.value.region].id
    access_config {
      nat_ip       = google_compute_address.controller[each.key].address
      network_tier = "PREMIUM"
    }
  }

  metadata = {
    user-data              = module.controllers[each.value.region].user_data[each.value.index]
    block-project-ssh-keys = "true"
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  service_account {
    email  = google_service_account.host[module.controllers[each.value.region].names[each.value.index]].email
    scopes = ["cloud-platform"]
  }

  depends_on = [google_secret_manager_secret_version.host, google_secret_manager_secret_iam_member.host]

  lifecycle {
    # Roll controllers one at a time with -replace, like edges.
    ignore_changes = [boot_disk[0].initialize_params[0].image, metadata["user-data"]]
  }
}

# --- DNS: edges by name, and api.<domain> answered with the controllers of
# the GCP region nearest the resolver (geo routing policy).

resource "google_dns_record_set" "edge" {
  for_each     = var.dns_managed_zone == null ? {} : local.edges
  managed_zone = var.dns_managed_zone
  name         = "${local.server_names[each.key]}."
  type         = "A"
  ttl          = 60
  rrdatas      = [google_compute_address.edge[each.key].address]
}

# Cloud DNS asks each controller's public face for /readyz from three
# regions (dns_health_check_regions): only healthy controllers are answered,
# and a region with none fails over to the next-nearest location.
resource "google_compute_health_check" "controller_api" {
  count               = var.dns_managed_zone == null ? 0 : 1
  name                = "${var.name}-ctl-api"
  check_interval_sec  = 10
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 3
  source_regions      = var.dns_health_check_regions

  http_health_check {
    port         = var.api_port
    request_path = "/readyz"
  }
}

resource "google_dns_record_set" "api" {
  count        = var.dns_managed_zone == null ? 0 : 1
  managed_zone = var.dns_managed_zone
  name         = "api.${var.domain}."
  type         = "A"
  ttl          = 30

  routing_policy {
    health_check = google_compute_health_check.controller_api[0].id
    dynamic "geo" {
      for_each = var.regions
      content {
        location = geo.value.gcp_region
        health_checked_targets {
          external_endpoints = [for k, c in local.controllers : google_compute_address.controller[k].address if c.region == geo.key]
        }
      }
    }
  }
}
