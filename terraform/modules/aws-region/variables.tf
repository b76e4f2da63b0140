variable "name" {
  description = "Name of the fleet: prefixes resource names and tags."
  type        = string
  default     = "rtn"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name))
    error_message = "name must be 1-20 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "region" {
  description = "RTN region served from this AWS region (edge.region, controller.region), e.g. eu-central."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.region))
    error_message = "region must be 1-63 characters of lowercase letters, digits and '-'."
  }
}

variable "city" {
  description = "City of the edges (edge.city), e.g. fra."
  type        = string
  default     = ""
}

variable "coordinates" {
  description = "Latitude and longitude of the AWS region's data centres (edge.lat, edge.lon); null to locate edges by city."
  type = object({
    lat = number
    lon = number
  })
  default = null
}

variable "domain" {
  description = "DNS domain of the fleet: edges are edge-<id>.<domain>, the controllers' API is api.<domain>."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain))
    error_message = "domain must be a lowercase DNS name such as rtn.example.net."
  }
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of domain: edge A records and a latency-routed api.<domain> record for the SDK's first contact. null: manage DNS elsewhere."
  type        = string
  default     = null
}

variable "vpc_cidr" {
  description = "CIDR of this region's VPC; must not overlap the other regions' (they are peered)."
  type        = string

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be an IPv4 CIDR of /20 or larger."
  }
}

variable "availability_zones" {
  description = "Availability zones used (one public subnet each); edges, controllers and etcd members are spread over them."
  type        = number
  default     = 3

  validation {
    condition     = var.availability_zones >= 1 && var.availability_zones <= 6
    error_message = "availability_zones must be within 1..6."
  }
}

variable "fleet_cidrs" {
  description = "Private CIDRs of every region of the fleet (including this one): allowed to reach etcd's client ports."
  type        = list(string)

  validation {
    condition     = length(var.fleet_cidrs) > 0 && alltrue([for c in var.fleet_cidrs : can(cidrnetmask(c))])
    error_message = "fleet_cidrs must hold IPv4 CIDR blocks."
  }
}

variable "admin_cidrs" {
  description = "Networks allowed to reach the admin ports (edge and controller /metrics, the controllers' /v1/mesh and dashboard, etcd metrics): Prometheus, operators and health checks."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrnetmask(c))])
    error_message = "admin_cidrs must be IPv4 CIDR blocks."
  }
}

variable "ssh_cidrs" {
  description = "Networks allowed to reach SSH. Empty (default): no SSH; use SSM Session Manager."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_cidrs : can(cidrnetmask(c))])
    error_message = "ssh_cidrs must be IPv4 CIDR blocks."
  }
}

variable "edges" {
  description = "Edges of this region: ids unique in the whole mesh, optionally their own instance type."
  type = list(object({
    id            = number
    instance_type = optional(string)
  }))

  validation {
    condition     = length(distinct(var.edges[*].id)) == length(var.edges)
    error_message = "edge ids must be distinct."
  }
}

variable "edge_instance_type" {
  description = "Default instance type of edges: network-optimised (see docs/operations.md, sizing), of arch (c6in for amd64; c7gn for arm64)."
  type        = string
  default     = "c6in.large"
}

variable "edge_capacity" {
  description = "Client sessions per edge (limits.max_sessions)."
  type        = number
  default     = 5000
}

variable "controllers" {
  description = "Region controllers: a leader and standbys."
  type        = number
  default     = 2

  validation {
    condition     = var.controllers >= 1 && var.controllers <= 7
    error_message = "controllers must be within 1..7."
  }
}

variable "controller_instance_type" {
  description = "Instance type of the controllers, of arch (c6i for amd64; c7g for arm64)."
  type        = string
  default     = "c6i.large"
}

variable "etcd" {
  description = "Host the fleet's etcd cluster in this region (one region does): three members on fixed private IPs (.10 of the first three subnets), of instance_type (of arch: m6i for amd64, m7g for arm64), certificates issued from etcd_ca; initial_cluster_state = \"existing\" to replace a lost member (docs/operations.md); plaintext_client_port (default null) only while a fleet moves its clients to TLS. null: use etcd_endpoints."
  type = object({
    instance_type         = optional(string, "m6i.large")
    plaintext_client_port = optional(number)
    initial_cluster_state = optional(string, "new")
  })
  default = null

  validation {
    condition     = var.etcd == null || var.availability_zones >= 3
    error_message = "etcd needs availability_zones >= 3 (one member per zone)."
  }
}

variable "etcd_ca" {
  description = "The etcd CA (PEM certificate and key) that member certificates (with etcd) and the edges' and controllers' etcd client certificates are issued from, in every region. Separate from the mesh CA."
  type = object({
    cert_pem = string
    key_pem  = string
  })
  sensitive = true
}

variable "etcd_endpoints" {
  description = "etcd TLS client URLs of the fleet when etcd lives in another region (that region's etcd_client_endpoints output)."
  type        = list(string)
  default     = []

  validation {
    condition     = (var.etcd == null) != (length(var.etcd_endpoints) == 0)
    error_message = "Give either etcd (this region hosts the cluster) or etcd_endpoints (another region does), not both."
  }
}

variable "mesh_ca" {
  description = "The mesh CA (PEM certificate and key): edge certificates are issued from it here. Its key ends up in the Terraform state: keep the state encrypted and access-controlled."
  type = object({
    cert_pem = string
    key_pem  = string
  })
  sensitive = true
}

variable "cert_validity_hours" {
  description = "Lifetime of the edge, etcd member and etcd client certificates issued here."
  type        = number
  default     = 2160
}

variable "cert_early_renewal_hours" {
  description = "An apply this long before expiry issues new certificates (and so replaces the instances, one drain each)."
  type        = number
  default     = 720

  validation {
    condition     = var.cert_early_renewal_hours < var.cert_validity_hours
    error_message = "cert_early_renewal_hours must be shorter than cert_validity_hours."
  }
}

variable "apps" {
  description = "Apps whose join tokens the edges accept."
  type = list(object({
    id = string
  }))
}

variable "app_secrets" {
  description = "Secrets per app id (several during a rotation)."
  type        = map(list(string))
  sensitive   = true
}

variable "admin_token" {
  description = "Bearer token of the controllers' /v1/mesh and /v1/links/history (on their admin port); null to refuse them."
  type        = string
  default     = null
  sensitive   = true
}

variable "edge_package" {
  description = "The rtn-edge Debian package (target/packages/rtn-edge_<version>_<arch>.deb from scripts/package.sh, on an https URL the instances reach, or a path on an image that carries it) and its SHA-256 (target/packages/SHA256SUMS). Built for arch."
  type = object({
    url    = string
    sha256 = string
  })
}

variable "controller_package" {
  description = "The rtn-controller Debian package (target/packages/rtn-controller_<version>_<arch>.deb) and its SHA-256, like edge_package. Built for arch."
  type = object({
    url    = string
    sha256 = string
  })
}

variable "arch" {
  description = "CPU architecture of every instance: of the packages (scripts/package.sh builds the build host's: amd64 on x86-64, arm64 on an arm64 host), of the AMI and of the instance types. amd64: x86-64 types (c6in, c6i, m6i: the defaults); arm64: Graviton types (c7gn, c7g, m7g: set edge_instance_type, controller_instance_type and etcd.instance_type)."
  type        = string
  default     = "amd64"

  validation {
    condition     = contains(["amd64", "arm64"], var.arch)
    error_message = "arch must be amd64 or arm64 (Debian's names, as in the package file names)."
  }

  # Graviton types carry a g after their generation digit (c7gn, m7g, t4g,
  # im4gn), or are a1; every other type is x86-64.
  validation {
    condition = alltrue([for t in concat(
      [var.edge_instance_type, var.controller_instance_type],
      [for e in var.edges : e.instance_type if e.instance_type != null],
      var.etcd == null ? [] : [var.etcd.instance_type],
    ) : can(regex("^(a1|[a-z]+[0-9]+[a-z-]*g[a-z-]*)\\.", t)) == (var.arch == "arm64")])
    error_message = "Every instance type must be of arch: x86-64 types (c6in, c6i, m6i...) for amd64, Graviton types (c7gn, c7g, m7g...) for arm64."
  }

  validation {
    condition     = endswith(var.edge_package.url, "_${var.arch}.deb") && endswith(var.controller_package.url, "_${var.arch}.deb")
    error_message = "edge_package and controller_package must be built for arch: their file names end in _<arch>.deb (scripts/package.sh on a host of that architecture)."
  }
}

variable "geoip_db" {
  description = "MaxMind City database for the controllers: https URL and SHA-256; null for none."
  type = object({
    url    = string
    sha256 = string
  })
  default = null
}

variable "geoip_update" {
  description = "Keep the controllers' GeoIP database current with MaxMind's geoipupdate (a systemd timer): account id, licence key, optionally edition (default GeoLite2-City) and on_calendar. The licence key reaches the controllers through Parameter Store like the other secrets. null: no updates (region-controller's geoip_update)."
  type = object({
    account_id  = number
    license_key = string
    edition     = optional(string, "GeoLite2-City")
    on_calendar = optional(string, "Wed,Sat *-*-* 03:00:00")
  })
  default   = null
  sensitive = true
}

variable "secrets_kms_key_id" {
  description = "KMS key (ARN) that encrypts the hosts' SecureString parameters; null: the account's default key for SSM (aws/ssm). Each host's role may decrypt with it through SSM only."
  type        = string
  default     = null
}

variable "etcd_release" {
  description = "The etcd the members run, required when this region hosts etcd (etcd set): url (default: etcd v3.5.21, linux-amd64; set the arm64 tarball with arch = arm64) and sha256, copied from the release's SHA256SUMS (no default: it cannot be checked here). { distribution_package = true }: Ubuntu's etcd-server (3.4, with the lease-revocation bug docs/operations.md describes). See etcd-cluster's etcd_release."
  type = object({
    url                  = optional(string, "https://github.com/etcd-io/etcd/releases/download/v3.5.21/etcd-v3.5.21-linux-amd64.tar.gz")
    sha256               = optional(string)
    distribution_package = optional(bool, false)
  })
  default = null

  validation {
    condition     = var.etcd == null || var.etcd_release != null
    error_message = "etcd_release is required when this region hosts etcd: { sha256 = \"<from the release's SHA256SUMS>\" } for the default v3.5.21 tarball."
  }
}

variable "quic_port" {
  description = "UDP port of the edges."
  type        = number
  default     = 4433
}

variable "admin_port" {
  description = "TCP admin port of the edges."
  type        = number
  default     = 9433
}

variable "api_port" {
  description = "TCP port of the controllers' public API (nearest edge, /healthz, /readyz): their only port open to the internet."
  type        = number
  default     = 8080
}

variable "controller_admin_port" {
  description = "TCP admin port of the controllers (/metrics, /v1/mesh, /v1/links/history, the dashboard, health): open to admin_cidrs and the VPC only."
  type        = number
  default     = 9434
}

variable "ami_id" {
  description = "AMI of every instance (cloud-init and systemd 250+, of arch); null for the latest Ubuntu 24.04 LTS of arch from Canonical."
  type        = string
  default     = null
}

variable "key_name" {
  description = "EC2 key pair for SSH; null for none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
