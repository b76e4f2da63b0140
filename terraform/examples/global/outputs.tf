output "api_fqdn" {
  description = "The SDK's first contact: latency-routed to the nearest region's controllers."
  value       = module.eu_central.api_fqdn
}

output "api_urls" {
  description = "Every controller's nearest-edge API, by region."
  value = {
    eu-central   = module.eu_central.api_urls
    us-east      = module.us_east.api_urls
    ap-southeast = module.ap_southeast.api_urls
  }
}

output "edges" {
  description = "Every edge by id: server name and addresses."
  value       = merge(module.eu_central.edges, module.us_east.edges, module.ap_southeast.edges)
}

output "etcd_client_endpoints" {
  description = "The etcd cluster's TLS endpoints (etcdctl with a client certificate from the etcd CA)."
  value       = module.eu_central.etcd_client_endpoints
}

output "prometheus_targets" {
  description = "Scrape targets by region: edge and controller admin ports, etcd metrics."
  value = {
    eu-central   = module.eu_central.prometheus_targets
    us-east      = module.us_east.prometheus_targets
    ap-southeast = module.ap_southeast.prometheus_targets
  }
}
