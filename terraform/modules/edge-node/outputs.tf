output "user_data" {
  description = "cloud-init user data (#cloud-config) that installs and starts the edge. Contains the private keys and app secrets, unless secret_store is set (then the host fetches them)."
  value       = local.user_data
  sensitive   = true
}

output "user_data_base64gzip" {
  description = "user_data gzipped and base64-encoded, for providers with a small user data limit (AWS: 16 KiB; cloud-init detects gzip)."
  value       = base64gzip(local.user_data)
  sensitive   = true
}

output "files" {
  description = "Every rendered file by absolute path on the host: {content, permissions}. Contains the private keys and app secrets."
  value       = local.files
  sensitive   = true
}

output "secrets" {
  description = "The secret files by path on the host: {name (in secret_store; null without one), content, permissions}. With a secret_store, the cloud module stores each content, base64-encoded, under its name."
  value       = local.secrets
  sensitive   = true
}

output "secret_names" {
  description = "The name of each secret file in secret_store, by path on the host (not sensitive, for the cloud module's for_each); empty without a secret_store."
  value       = var.secret_store == null ? {} : { for p in local.secret_paths : p => (var.secret_store.store == "aws-ssm" ? "${var.secret_store.prefix}/${basename(p)}" : "${var.secret_store.prefix}-${replace(basename(p), ".", "-")}") }
}

output "config_toml" {
  description = "The edge's config file (no secrets in it)."
  value       = local.config_toml
}

output "systemd_dropin" {
  description = "This host's drop-in for the rtn-edge package's unit (/etc/systemd/system/rtn-edge.service.d/10-terraform.conf): config path, log settings, keys as credentials, stop timeout, limits, the capability for a port below 1024."
  value       = local.systemd_dropin
}

output "sysctl_conf" {
  description = "Kernel settings for UDP (/etc/sysctl.d/60-rtn-edge.conf)."
  value       = local.sysctl_conf
}

output "firewall_nft" {
  description = "The nftables host firewall (null when host_firewall is false)."
  value       = var.host_firewall ? local.firewall_nft : null
}

output "paths" {
  description = "Where things live on the host."
  value = {
    binary      = local.binary_path
    config      = local.config_path
    env         = local.env_path
    tls_cert    = local.tls_cert
    tls_key     = local.tls_key
    tls_mesh_ca = local.tls_mesh_ca
    etcd_ca     = local.etcd_ca
    etcd_cert   = local.etcd_cert
    etcd_key    = local.etcd_key
    unit        = local.unit_name
    dropin      = local.dropin_path
  }
}

output "edge" {
  description = "What the rest of the fleet needs to know about this edge: id, region, addresses, ports and server name (for DNS records, security groups and Prometheus targets)."
  value = {
    id          = var.edge_id
    region      = var.region
    server_name = var.server_name
    public_addr = local.public_addr
    quic_port   = var.quic_port
    admin_port  = var.admin_port
    capacity    = var.capacity
  }
}
