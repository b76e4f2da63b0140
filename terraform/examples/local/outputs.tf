output "loadtest_command" {
  description = "A short loadtest run against this network (the app secret is read from its file, so it stays out of process listings and of the state)."
  value = join(" ", concat(
    ["RTN_APP_SECRET=\"$(cat ${local.app_secret_file})\"", local.bin.loadtest, "run"],
    [for c in local.controllers : "--controller ${c.url}"],
    # The local edges show self-signed client certificates: the clients pin
    # the digests the controllers publish, as browsers do.
    ["--app", var.app_id, "--pin-published", "--clients 4 --duration 10"],
  ))
}

output "controller_urls" {
  description = "Region controllers' public API URLs by name: nearest edge (/v1/edges/nearest), /healthz, /readyz."
  value       = { for c in local.controllers : c.name => c.url }
}

output "controller_admin_urls" {
  description = "Region controllers' admin URLs by name: the path-quality dashboard at /, /v1/mesh and /v1/links/history (admin token), /metrics."
  value       = { for c in local.controllers : c.name => c.admin_url }
}

output "edges" {
  description = "Edges by id: region, city, QUIC address, TLS server name and admin URL (/metrics, /healthz, /readyz, /netem)."
  value = {
    for id, e in local.edges : id => {
      region      = e.region
      city        = e.city
      addr        = "${e.address}:${var.ports.quic}"
      server_name = e.server_name
      admin_url   = e.admin_url
    }
  }
}

output "etcd_endpoint" {
  description = "etcd's client URL (plaintext, loopback only)."
  value       = local.etcd.url
}

output "app_id" {
  description = "The app whose tokens the edges accept."
  value       = var.app_id
}

output "app_secret_file" {
  description = "File holding the app's token secret (generated at apply): RTN_APP_SECRET for loadtest run, --secret for edge-node token."
  value       = local.app_secret_file
}

output "admin_token_file" {
  description = "File holding the controllers' admin bearer token (/v1/mesh, the dashboard's data)."
  value       = local.admin_token
}

output "mesh_ca" {
  description = "The dev mesh CA certificate the edges' mesh certificates chain to (relay links only: clients pin the digests the controllers publish)."
  value       = local.mesh_ca
}

output "state_dir" {
  description = "Where configs, pid files, logs (<name>.log) and etcd's data live while the network runs; removed by destroy."
  value       = local.state_dir
}

output "wan" {
  description = "The emulated one-way delays (ms) each edge applies to what it sends, by edge id and destination address."
  value       = { for id, rules in local.netem : id => { for r in rules : trimsuffix(r.to, "/32") => r.down ? "down" : format("%.1f", r.delay_ms) } }
}
