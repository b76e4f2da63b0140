# Test root for terraform/tests/run_tests.py: renders an etcd cluster, a
# region's controllers and an edge with the provider-free modules, on
# loopback addresses and under a scratch directory (root_dir) instead of /,
# so that the real binaries can check (and run) what the modules render.
# Not an example: see terraform/examples/ for those.

terraform {
  required_version = ">= 1.9"
}

variable "root_dir" {
  description = "Scratch directory standing in for the host's /."
  type        = string
}

variable "ports" {
  description = "Free loopback ports chosen by the test runner."
  type = object({
    etcd_client  = number
    etcd_peer    = number
    etcd_metrics = number
    quic         = number
    admin        = number
    api          = number
    ctl_admin    = number
  })
}

variable "etcd_ips" {
  description = "Loopback addresses of the three etcd members."
  type        = list(string)
}

variable "edge_tls" {
  type      = object({ cert_pem = string, key_pem = string, mesh_ca_pem = string })
  sensitive = true
}

variable "etcd_tls" {
  type = object({
    ca_pem  = string
    members = map(object({ cert_pem = string, key_pem = string }))
  })
  sensitive = true
}

variable "etcd_clients" {
  description = "etcd client certificates (from the etcd CA) of the edge and of the controllers."
  type = object({
    edge       = object({ cert_pem = string, key_pem = string })
    controller = object({ cert_pem = string, key_pem = string })
  })
  sensitive = true
}

variable "coordinates" {
  type    = object({ lat = number, lon = number })
  default = { lat = 50, lon = 8.6821 }
}

locals {
  config_dir = "${var.root_dir}/etc/rtn"
  sha256     = "5a2c1e0f4a8b4a6c9b1d3e5f7a9c1e3f5a7b9d1f3e5a7c9e1b3d5f7a9c1e3f5a"
  # What scripts/package.sh builds (run_tests.py runs the packaged units,
  # from packaging/, with the binaries of RTN_BIN_DIR).
  edge_package       = { url = "https://releases.example.net/rtn/v0.1.0/rtn-edge_0.1.0_amd64.deb", sha256 = local.sha256 }
  controller_package = { url = "https://releases.example.net/rtn/v0.1.0/rtn-controller_0.1.0_amd64.deb", sha256 = local.sha256 }
}

module "etcd" {
  source = "../../modules/etcd-cluster"

  cluster_token = "rtn-test"
  members       = [for i, ip in var.etcd_ips : { name = "etcd-${i + 1}", ip = ip }]
  client_port   = var.ports.etcd_client
  peer_port     = var.ports.etcd_peer
  metrics_port  = var.ports.etcd_metrics
  tls           = var.etcd_tls
  client_cidrs  = ["127.0.0.0/8"]
  admin_cidrs   = ["127.0.0.0/8"]
  config_dir    = local.config_dir
  # The live test runs the system's etcd (etcd-server).
  etcd_release = { distribution_package = true }
}

module "controller" {
  source = "../../modules/region-controller"

  region               = "eu-central"
  replicas             = 2
  etcd_endpoints       = module.etcd.client_endpoints
  etcd_tls             = merge(var.etcd_clients.controller, { ca_pem = var.etcd_tls.ca_pem })
  api_port             = var.ports.api
  api_listen_address   = "127.0.0.1"
  admin_port           = var.ports.ctl_admin
  admin_listen_address = "127.0.0.1"
  admin_cidrs          = ["127.0.0.0/8"]
  geoip_db             = { url = "https://releases.example.net/geoip/city.mmdb", sha256 = local.sha256 }
  client_ip_header     = "x-forwarded-for"
  trusted_proxies      = ["127.0.0.1", "10.0.0.0/8"]
  admin_token          = "test-admin-token-0123456789abcdef"
  package              = local.controller_package
  config_dir           = local.config_dir
}

module "edge" {
  source = "../../modules/edge-node"

  edge_id              = 17
  region               = "eu-central"
  city                 = "Frankfurt"
  coordinates          = var.coordinates
  etcd_endpoints       = module.etcd.client_endpoints
  etcd_tls             = merge(var.etcd_clients.edge, { ca_pem = var.etcd_tls.ca_pem })
  public_ip            = "127.0.0.1"
  listen_address       = "127.0.0.1"
  admin_listen_address = "127.0.0.1"
  quic_port            = var.ports.quic
  admin_port           = var.ports.admin
  server_name          = "edge-17.rtn.test"
  capacity             = 500
  apps                 = [{ id = "demo" }]
  app_secrets          = { demo = ["0123456789abcdef0123"] }
  tls                  = var.edge_tls
  package              = local.edge_package
  admin_cidrs          = ["127.0.0.0/8"]
  config_dir           = local.config_dir
}

# The same hosts with their secrets in a store (secret_store): the user data
# must then hold no key, token or app secret (run_tests.py store_mode_check).
locals {
  store_dir = "${var.root_dir}/store/etc/rtn"
}

module "etcd_store" {
  source = "../../modules/etcd-cluster"

  members      = [for i, ip in var.etcd_ips : { name = "etcd-${i + 1}", ip = ip }]
  tls          = var.etcd_tls
  client_cidrs = ["127.0.0.0/8"]
  admin_cidrs  = ["127.0.0.0/8"]
  config_dir   = local.store_dir
  etcd_release = { distribution_package = true }
  secret_store = { store = "aws-ssm", prefix = "/rtn/test", region = "eu-central-1" }
}

module "controller_store" {
  source = "../../modules/region-controller"

  region         = "eu-central"
  replicas       = 2
  etcd_endpoints = module.etcd.client_endpoints
  etcd_tls       = merge(var.etcd_clients.controller, { ca_pem = var.etcd_tls.ca_pem })
  admin_cidrs    = ["127.0.0.0/8"]
  admin_token    = "test-admin-token-0123456789abcdef"
  geoip_update   = { account_id = 123456, license_key = "test_licence_key_0123" }
  package        = local.controller_package
  config_dir     = local.store_dir
  secret_store   = { store = "gcp-secret-manager", prefix = "rtn-test", project = "rtn-test-project" }
}

module "edge_store" {
  source = "../../modules/edge-node"

  edge_id        = 17
  region         = "eu-central"
  city           = "Frankfurt"
  coordinates    = var.coordinates
  etcd_endpoints = module.etcd.client_endpoints
  etcd_tls       = merge(var.etcd_clients.edge, { ca_pem = var.etcd_tls.ca_pem })
  public_ip      = "127.0.0.1"
  server_name    = "edge-17.rtn.test"
  capacity       = 500
  apps           = [{ id = "demo" }]
  app_secrets    = { demo = ["0123456789abcdef0123"] }
  tls            = var.edge_tls
  package        = local.edge_package
  admin_cidrs    = ["127.0.0.0/8"]
  config_dir     = local.store_dir
  secret_store   = { store = "aws-ssm", prefix = "/rtn/test/edge-17", region = "eu-central-1" }
}

output "store_user_data" {
  value = merge(
    { edge = module.edge_store.user_data },
    { for i, u in module.controller_store.user_data : "controller-${i + 1}" => u },
    module.etcd_store.user_data,
  )
  sensitive = true
}

output "store_secrets" {
  value = merge(
    { edge = module.edge_store.secrets },
    { for i, s in module.controller_store.secrets : "controller-${i + 1}" => s },
    module.etcd_store.secrets,
  )
  sensitive = true
}

output "store_secret_names" {
  value = merge(
    { edge = module.edge_store.secret_names },
    { for i, s in module.controller_store.secret_names : "controller-${i + 1}" => s },
    module.etcd_store.secret_names,
  )
}

output "etcd_user_data" {
  value     = module.etcd.user_data
  sensitive = true
}

output "etcd_paths" {
  value = module.etcd.paths
}

output "etcd_client_endpoints" {
  value = module.etcd.client_endpoints
}

output "controller_user_data" {
  value     = module.controller.user_data
  sensitive = true
}

output "controller_paths" {
  value = module.controller.paths
}

output "edge_user_data" {
  value     = module.edge.user_data
  sensitive = true
}

output "edge_user_data_base64gzip" {
  value     = module.edge.user_data_base64gzip
  sensitive = true
}

output "edge_paths" {
  value = module.edge.paths
}
