variable "name" {
  description = "Name of the fleet."
  type        = string
  default     = "rtn"
}

variable "domain" {
  description = "DNS domain of the fleet (edges: edge-<id>.<domain>, API: api.<domain>)."
  type        = string
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of domain; null to manage DNS elsewhere."
  type        = string
  default     = null
}

variable "pki_dir" {
  description = "Directory holding mesh-ca.pem, mesh-ca.key, etcd-ca.pem and etcd-ca.key (docs/operations.md, certificates)."
  type        = string
}

variable "apps" {
  description = "Apps whose join tokens the edges accept."
  type = list(object({
    id = string
  }))
}

variable "app_secrets" {
  description = "Secrets per app id (set with TF_VAR_app_secrets or a secrets manager, never in a committed file)."
  type        = map(list(string))
  sensitive   = true
}

variable "admin_token" {
  description = "Bearer token of the controllers' /v1/mesh and /v1/links/history (on their admin port, reached from monitoring_cidrs)."
  type        = string
  default     = null
  sensitive   = true
}

variable "edge_binary" {
  description = "edge-node release (linux amd64): https URL and SHA-256."
  type = object({
    url    = string
    sha256 = string
  })
}

variable "controller_binary" {
  description = "region-controller release (linux amd64): https URL and SHA-256."
  type = object({
    url    = string
    sha256 = string
  })
}

variable "geoip_db" {
  description = "MaxMind City database (your licensed copy, served over https): URL and SHA-256; null for none."
  type = object({
    url    = string
    sha256 = string
  })
  default = null
}

variable "monitoring_cidrs" {
  description = "Where Prometheus scrapes from and operators reach the admin ports (edges' and controllers' /metrics, the controllers' /v1/mesh and dashboard); the home region's VPC by default."
  type        = list(string)
  default     = ["10.10.0.0/16"]
}

variable "ssh_cidrs" {
  description = "Networks allowed to SSH in; empty to use SSM Session Manager only."
  type        = list(string)
  default     = []
}
