output "names" {
  description = "Controller names, one per replica (controller.name)."
  value       = local.names
}

output "user_data" {
  description = "cloud-init user data (#cloud-config) per replica, in the order of names. Contains the admin token and the etcd client key."
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
    geoip_db  = var.geoip_db == null ? null : local.geoip_path
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
