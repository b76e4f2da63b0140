output "vpc_id" {
  description = "The region's VPC (for peering)."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "The region's VPC CIDR."
  value       = aws_vpc.this.cidr_block
}

output "route_table_id" {
  description = "Route table of the public subnets (peering routes go here)."
  value       = aws_route_table.public.id
}

output "edges" {
  description = "Edges by id: server name, public and private IP, instance id."
  value = { for k, e in local.edges : k => {
    server_name = local.server_names[k]
    public_ip   = aws_eip.edge[k].public_ip
    private_ip  = aws_instance.edge[k].private_ip
    instance_id = aws_instance.edge[k].id
  } }
}

output "controllers" {
  description = "Controllers: name, public IP, instance id."
  value = [for i, name in module.controllers.names : {
    name        = name
    public_ip   = aws_eip.controller[i].public_ip
    instance_id = aws_instance.controller[i].id
  }]
}

output "api_urls" {
  description = "The public API of every controller of the region: the nearest-edge lookup, /healthz, /readyz."
  value       = [for ip in aws_eip.controller[*].public_ip : "http://${ip}:${var.api_port}"]
}

output "api_fqdn" {
  description = "Latency-routed name of the controllers' API (null without route53_zone_id)."
  value       = var.route53_zone_id == null ? null : aws_route53_record.api[0].fqdn
}

output "etcd_client_endpoints" {
  description = "TLS client URLs of the etcd members hosted here, for the other regions' etcd_endpoints (empty unless etcd is set)."
  value       = var.etcd == null ? [] : module.etcd[0].client_endpoints
}

output "etcd_plaintext_endpoints" {
  description = "Plaintext client URLs of the etcd members hosted here, only while etcd.plaintext_client_port is set for a migration (else empty)."
  value       = var.etcd == null ? [] : module.etcd[0].plaintext_client_endpoints
}

output "prometheus_targets" {
  description = "Scrape targets (/metrics on private addresses): edge and controller admin ports, etcd metrics."
  value = {
    edges       = [for k, e in local.edges : "${aws_instance.edge[k].private_ip}:${var.admin_port}"]
    controllers = [for c in aws_instance.controller : "${c.private_ip}:${var.controller_admin_port}"]
    etcd        = [for m in local.etcd_members : "${m.ip}:2381"]
  }
}

output "security_group_ids" {
  description = "Security groups by role."
  value = {
    edge       = aws_security_group.edge.id
    controller = aws_security_group.controller.id
    etcd       = var.etcd == null ? null : aws_security_group.etcd[0].id
  }
}
