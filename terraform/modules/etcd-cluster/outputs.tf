output "user_data" {
  description = "cloud-init user data (#cloud-config) by member name. Contains the member's private key."
  value       = local.user_data
  sensitive   = true
}

output "user_data_base64gzip" {
  description = "user_data by member name, gzipped and base64-encoded (AWS limits user data to 16 KiB)."
  value       = { for name, u in local.user_data : name => base64gzip(u) }
  sensitive   = true
}

output "files" {
  description = "Every rendered file by member name, then by absolute path: {content, permissions}. Contains the members' private keys."
  value       = local.files
  sensitive   = true
}

output "secrets" {
  description = "The secret files per member name, by path on the host: {name (in secret_store; null without one), content, permissions}: the member's key. With a secret_store, the cloud module stores each content, base64-encoded, under its name."
  value       = local.secrets
  sensitive   = true
}

output "secret_names" {
  description = "Per member name, the name of each secret file in secret_store by path on the host (not sensitive, for the cloud module's for_each); empty maps without a secret_store."
  value       = local.secret_names
}

output "config_yaml" {
  description = "etcd's config file (--config-file) by member name."
  value       = local.config_yaml
}

output "systemd_unit" {
  description = "The rtn-etcd.service unit by member name."
  value       = local.systemd_unit
}

output "firewall_nft" {
  description = "The nftables host firewall by member name (null when host_firewall is false)."
  value       = var.host_firewall ? local.firewall_nft : null
}

output "client_endpoints" {
  description = "TLS client URLs of the members (https, client certificate from the etcd CA required): what edges and controllers take as etcd_endpoints."
  value       = tolist(local.client_endpoints)
}

output "plaintext_client_endpoints" {
  description = "Plain http client URLs on the private network, for a migration only (empty unless plaintext_client_port is set)."
  value       = tolist(local.plaintext_endpoints)
}

output "initial_cluster" {
  description = "The initial-cluster string (name=peer URL, ...)."
  value       = local.initial_cluster
}

output "paths" {
  description = "Where things live on a member."
  value = {
    binary      = local.binary_path
    config      = local.config_path
    ca          = local.ca_path
    cert        = local.cert_path
    key         = local.key_path
    data_dir    = var.data_dir
    credentials = local.credentials_dir
    unit        = local.unit_name
  }
}

output "ports" {
  description = "Ports, for cloud firewalls."
  value = {
    client           = var.client_port
    peer             = var.peer_port
    metrics          = var.metrics_port
    plaintext_client = var.plaintext_client_port
  }
}
