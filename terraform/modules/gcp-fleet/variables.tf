variable "name" {
  description = "Name of the fleet: prefixes resource names, network tags and labels."
  type        = string
  default     = "rtn"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name))
    error_message = "name must be 1-20 characters of lowercase letters, digits and '-', starting with a letter."
  }
}

variable "regions" {
  description = "RTN regions by name (edge.region), each in one GCP region: its zones, subnet CIDR, edges (ids unique in the mesh) and controller count."
  type = map(object({
    gcp_region = string
    zones      = list(string)
    cidr       = string
    city       = optional(string, "")
    coordinates = optional(object({
      lat = number
      lon = number
    }))
    edges = list(object({
      id           = number
      zone         = optional(string)
      machine_type = optional(string)
    }))
    controllers = optional(number, 2)
  }))

  validation {
    condition     = length(var.regions) > 0 && alltrue([for k, r in var.regions : can(regex("^[a-z0-9][a-z0-9-]{0,62}$", k)) && length(r.zones) > 0 && can(cidrnetmask(r.cidr))])
    error_message = "every region needs a lowercase name, at least one zone and an IPv4 cidr."
  }

  validation {
    condition     = length(distinct(flatten([for r in values(var.regions) : r.edges[*].id]))) == length(flatten([for r in values(var.regions) : r.edges[*].id]))
    error_message = "edge ids must be unique across regions."
  }
}

variable "dns_health_check_regions" {
  description = "The three GCP regions Cloud DNS health-checks the controllers' public API from (with dns_managed_zone)."
  type        = list(string)
  default     = ["us-east4", "europe-west1", "asia-southeast1"]

  validation {
    condition     = length(var.dns_health_check_regions) == 3 && length(distinct(var.dns_health_check_regions)) == 3
    error_message = "dns_health_check_regions must name exactly three distinct GCP regions (Cloud DNS's requirement)."
  }
}

variable "etcd_region" {
  description = "The region (a key of regions) whose subnet hosts the etcd cluster: three members at .10, .11, .12, spread over its zones."
  type        = string

  validation {
    condition     = contains(keys(var.regions), var.etcd_region)
    error_message = "etcd_region must be one of the regions."
  }
}

variable "etcd" {
  description = "etcd members' machine type (of arch: n2-standard-2 for amd64, t2a-standard-2 for arm64), and a plaintext client port (private network only) to keep only while a fleet moves its clients to TLS (default null: TLS only)."
  type = object({
    machine_type          = optional(string, "n2-standard-2")
    plaintext_client_port = optional(number)
  })
  default  = {}
  nullable = false
}

variable "etcd_ca" {
  description = "The etcd CA (PEM certificate and key) that member certificates and the edges' and controllers' etcd client certificates are issued from. Separate from the mesh CA."
  type = object({
    cert_pem = string
    key_pem  = string
  })
  sensitive = true
}

variable "mesh_ca" {
  description = "The mesh CA (PEM certificate and key) that edge certificates are issued from. Its key ends up in the Terraform state: keep the state encrypted and access-controlled."
  type = object({
    cert_pem = string
    key_pem  = string
  })
  sensitive = true
}

variable "cert_validity_hours" {
  description = "Lifetime of the edge, etcd member and etcd client certificates."
  type        = number
  default     = 2160
}

variable "cert_early_renewal_hours" {
  description = "An apply this long before expiry issues new certificates (and so replaces the instances, one drain each)."
  type        = number
  default     = 720
}

variable "domain" {
  description = "DNS domain of the fleet: edges are edge-<id>.<domain>, the controllers' API is api.<domain>."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.domain))
    error_message = "domain must be a lowercase DNS name such as rtn.example.net."
  }
}

variable "dns_managed_zone" {
  description = "Cloud DNS managed zone of domain (its name): edge A records and a geo-routed api.<domain> record. null: manage DNS elsewhere."
  type        = string
  default     = null
}

variable "admin_cidrs" {
  description = "Networks allowed to reach admin ports (edge and controller /metrics, the controllers' /v1/mesh and dashboard, etcd metrics) besides the fleet's own subnets."
  type        = list(string)
  default     = []
}

variable "ssh_cidrs" {
  description = "Networks allowed to reach SSH, e.g. [\"35.235.240.0/20\"] for IAP TCP forwarding. Empty: no SSH."
  type        = list(string)
  default     = []
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
  description = "CPU architecture of every instance: of the packages (scripts/package.sh builds the build host's: amd64 on x86-64, arm64 on an arm64 host), of the image and of the machine types. amd64: x86-64 types (n2, e2, c3: the defaults); arm64: Arm types (t2a, c4a, n4a: set edge_machine_type, controller_machine_type and etcd.machine_type)."
  type        = string
  default     = "amd64"

  validation {
    condition     = contains(["amd64", "arm64"], var.arch)
    error_message = "arch must be amd64 or arm64 (Debian's names, as in the package file names)."
  }

  validation {
    condition = alltrue([for t in concat(
      [var.edge_machine_type, var.controller_machine_type, var.etcd.machine_type],
      flatten([for r in values(var.regions) : [for e in r.edges : e.machine_type if e.machine_type != null]]),
    ) : can(regex("^(t2a|c4a|n4a|a4x)-", t)) == (var.arch == "arm64")])
    error_message = "Every machine type must be of arch: x86-64 types (n2, e2, c3...) for amd64, Arm types (t2a, c4a, n4a) for arm64."
  }

  validation {
    condition     = endswith(var.edge_package.url, "_${var.arch}.deb") && endswith(var.controller_package.url, "_${var.arch}.deb")
    error_message = "edge_package and controller_package must be built for arch: their file names end in _<arch>.deb (scripts/package.sh on a host of that architecture)."
  }
}

variable "geoip_update" {
  description = "Keep the controllers' GeoIP database current with MaxMind's geoipupdate (a systemd timer): account id, licence key, optionally edition (default GeoLite2-City) and on_calendar. The licence key reaches the controllers through Secret Manager like the other secrets. null: no updates (region-controller's geoip_update)."
  type = object({
    account_id  = number
    license_key = string
    edition     = optional(string, "GeoLite2-City")
    on_calendar = optional(string, "Wed,Sat *-*-* 03:00:00")
  })
  default   = null
  sensitive = true
}

variable "geoip_db" {
  description = "MaxMind City database for the controllers: https URL and SHA-256; null for none."
  type = object({
    url    = string
    sha256 = string
  })
  default = null
}

variable "etcd_release" {
  description = "The etcd the members run, required: url (default: etcd v3.5.21, linux-amd64; set the arm64 tarball with arch = arm64) and sha256, copied from the release's SHA256SUMS (no default: it cannot be checked here). { distribution_package = true }: Ubuntu's etcd-server (3.4, with the lease-revocation bug docs/operations.md describes). See etcd-cluster's etcd_release."
  type = object({
    url                  = optional(string, "https://github.com/etcd-io/etcd/releases/download/v3.5.21/etcd-v3.5.21-linux-amd64.tar.gz")
    sha256               = optional(string)
    distribution_package = optional(bool, false)
  })
}

variable "edge_machine_type" {
  description = "Default machine type of edges, of arch (n2-standard-4 for amd64; c4a-standard-4 for arm64)."
  type        = string
  default     = "n2-standard-4"
}

variable "edge_capacity" {
  description = "Client sessions per edge (limits.max_sessions)."
  type        = number
  default     = 5000
}

variable "controller_machine_type" {
  description = "Machine type of controllers, of arch (e2-standard-2 for amd64; t2a-standard-2 for arm64)."
  type        = string
  default     = "e2-standard-2"
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
  description = "TCP admin port of the controllers (/metrics, /v1/mesh, /v1/links/history, the dashboard, health): open to the fleet's subnets and admin_cidrs only."
  type        = number
  default     = 9434
}

variable "image" {
  description = "Boot image (cloud-init and systemd 250+: Ubuntu's GCE images run cloud-init from the user-data metadata key; Debian's do not), of arch; null for Ubuntu 24.04 LTS of arch (ubuntu-os-cloud/ubuntu-2404-lts-<arch>)."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels added to every instance and address."
  type        = map(string)
  default     = {}
}
