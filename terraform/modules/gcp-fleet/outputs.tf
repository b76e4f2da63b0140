output "network" {
  description = "The fleet's VPC network (self link)."
  value       = google_compute_network.this.self_link
}

output "edges" {
  description = "Edges by id: region, zone, server name, public and private IP."
  value = { for k, e in local.edges : k => {
    region      = e.region
    zone        = e.zone
    server_name = local.server_names[k]
    public_ip   = google_compute_address.edge[k].address
    private_ip  = google_compute_instance.edge[k].network_interface[0].network_ip
  } }
}

output "controllers" {
  description = "Controllers by <region>-<n>: region, public IP, public API URL (nearest edge, health) and admin URL (private address: /metrics, /v1/mesh, the dashboard)."
  value = { for k, c in local.controllers : k => {
    region    = c.region
    public_ip = google_compute_address.controller[k].address
    api_url   = "http://${google_compute_address.controller[k].address}:${var.api_port}"
    admin_url = "http://${google_compute_instance.controller[k].network_interface[0].network_ip}:${var.controller_admin_port}"
  } }
}

output "api_fqdn" {
  description = "Geo-routed name of the controllers' API (null without dns_managed_zone)."
  value       = var.dns_managed_zone == null ? null : "api.${var.domain}"
}

output "etcd_client_endpoints" {
  description = "TLS client URLs of the etcd members: what the edges and controllers use."
  value       = module.etcd.client_endpoints
}

output "etcd_plaintext_endpoints" {
  description = "Plaintext client URLs of the etcd members (private network), only while etcd.plaintext_client_port is set for a migration (else empty)."
  value       = module.etcd.plaintext_client_endpoints
}

output "prometheus_targets" {
  description = "Scrape targets (/metrics) on private addresses: edge and controller admin ports, etcd metrics."
  value = {
    edges       = [for k, e in local.edges : "${google_compute_instance.edge[k].network_interface[0].network_ip}:${var.admin_port}"]
    controllers = [for k, c in local.controllers : "${google_compute_instance.controller[k].network_interface[0].network_ip}:${var.controller_admin_port}"]
    etcd        = [for m in local.etcd_members : "${m.ip}:2381"]
  }
}
