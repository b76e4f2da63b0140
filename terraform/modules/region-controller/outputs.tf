output "names" {
  description = "Controller names, one per replica (controller.name)."
  value       = local.names
}

output "user_data" {
  description = "cloud-init user data (#cloud-config) per replica, in the order of names. Contains the admin token, the etcd client key and the GeoIP licence key, unless secret_store is set (then the host fetches them)."
  value       = local.user_data
  sensitive   = true
}

output "user_data_base64gzip" {
  description = "user_data per replica, gzipped and base64-encoded (AWS limits user data to 16 KiB)."
  value       = [for u in local.user_data : base64gzip(u)]
  sensitive   = true
}

output "files" {
  description = "Every rendered file per replica, by absolute path: {content, permissions}. Contains the admin token and the etcd client key."
  value       = local.files
  sensitive   = true
}

output "secrets" {
  description = "The secret files per replica (in the order of names), by path on the host: {name (in secret_store; null without one), content, permissions}: the environment file (admin token), the etcd client key, GeoIP.conf (geoip_update's licence key). With a secret_store, the cloud module stores each content, base64-encoded, under its name."
  value       = local.secrets
  sensitive   = true
}

output "secret_names" {
  description = "Per replica (in the order of names), the name of each secret file in secret_store by path on the host (not sensitive, for the cloud module's for_each); empty maps without a secret_store."
  value       = [for name in local.names : var.secret_store == null ? {} : { for p in local.secret_paths : p => (var.secret_store.store == "aws-ssm" ? "${var.secret_store.prefix}/${name}/${basename(p)}" : "${var.secret_store.prefix}-${name}-${replace(basename(p), ".", "-")}") }]
}

output "config_toml" {
  description = "The config file per replica (no secrets in it)."
  value       = local.config_toml
}

output "systemd_dropin" {
  description = "Per replica, its drop-in for the rtn-controller package's unit (/etc/systemd/system/rtn-controller.service.d/10-terraform.conf): name, config path, log level, the etcd client key as a credential, limits, the capability for a port below 1024."
  value       = local.systemd_dropin
}

output "firewall_nft" {
  description = "The nftables host firewall (null when host_firewall is false)."
  value       = var.host_firewall ? local.firewall_nft : null
}

output "paths" {
  description = "Where things live on the host."
  value = {
    binary    = local.binary_path
    config    = local.config_path
    env       = local.env_path
    geoip_db  = var.geoip_db == null && !local.geoip_update ? null : local.geoip_path
    etcd_ca   = local.etcd_ca
    etcd_cert = local.etcd_cert
    etcd_key  = local.etcd_key
    unit      = local.unit_name
    dropin    = local.dropin_path
  }
}

output "api_port" {
  description = "TCP port of the public API: the nearest-edge lookup, /healthz, /readyz (for security groups, DNS and load balancer health checks)."
  value       = var.api_port
}

output "admin_port" {
  description = "TCP port of the admin HTTP server: /metrics (Prometheus targets), /v1/mesh and /v1/links/history, the dashboard, /healthz, /readyz (for private security group rules)."
  value       = var.admin_port
}
