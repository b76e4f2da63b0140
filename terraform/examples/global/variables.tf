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

variable "edge_package" {
  description = "The rtn-edge Debian package (scripts/package.sh: target/packages/rtn-edge_<version>_amd64.deb, uploaded where the instances reach it over https) and its SHA-256 (target/packages/SHA256SUMS). amd64, like the regions' default instance types and AMI."
  type = object({
    url    = string
    sha256 = string
  })
}

variable "controller_package" {
  description = "The rtn-controller Debian package (target/packages/rtn-controller_<version>_amd64.deb) and its SHA-256, like edge_package."
  type = object({
    url    = string
    sha256 = string
  })
}

variable "etcd_release" {
  description = "The etcd release of the cluster in the home region: sha256 of etcd v3.5.21's linux-amd64 tarball, from the release's SHA256SUMS (or another url and its sha256)."
  type = object({
    url    = optional(string, "https://github.com/etcd-io/etcd/releases/download/v3.5.21/etcd-v3.5.21-linux-amd64.tar.gz")
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
