variable "edge_id" {
  description = "Unique id of this edge in the whole mesh (edge.id): a positive 32-bit integer, never reused while the old edge may still be registered."
  type        = number

  validation {
    condition     = var.edge_id >= 1 && var.edge_id <= 4294967295 && floor(var.edge_id) == var.edge_id
    error_message = "edge_id must be a whole number within 1..4294967295 (0 is reserved)."
  }
}

variable "region" {
  description = "RTN region of the edge (edge.region): the region controller that computes its routes is the one with the same region name."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.region))
    error_message = "region must be 1-63 characters of lowercase letters, digits and '-', starting with a letter or digit (it is part of etcd keys)."
  }
}

variable "city" {
  description = "City code or name (edge.city), e.g. \"fra\". Locates the edge unless coordinates are given; a code from the built-in city table (topology/src/geo.rs) is enough on its own."
  type        = string
  default     = ""

  validation {
    condition     = length(var.city) <= 64 && !can(regex("[\\x00-\\x1f]", var.city))
    error_message = "city must be at most 64 characters without control characters."
  }
}

variable "coordinates" {
  description = "Latitude and longitude of the edge in degrees (edge.lat, edge.lon). Required unless city is a code or name from the built-in city table."
  type = object({
    lat = number
    lon = number
  })
  default = null

  validation {
    condition     = var.coordinates == null || try(var.coordinates.lat >= -90 && var.coordinates.lat <= 90 && var.coordinates.lon >= -180 && var.coordinates.lon <= 180, false)
    error_message = "coordinates.lat must be within -90..90 and coordinates.lon within -180..180."
  }

  validation {
    condition     = var.coordinates != null || var.city != ""
    error_message = "Give the edge's location: coordinates, or a city from the built-in table."
  }
}

variable "etcd_endpoints" {
  description = "etcd TLS client URLs of the control plane (control.etcd_endpoints), e.g. the etcd-cluster module's client_endpoints [\"https://10.0.0.10:2379\", ...]. Edges talk to etcd only; they never call a controller."
  type        = list(string)

  validation {
    condition     = length(var.etcd_endpoints) > 0 && alltrue([for e in var.etcd_endpoints : can(regex("^https://[^/\\s]+$", e))])
    error_message = "etcd_endpoints must hold at least one https:// URL without a path (etcd is reached over TLS with a client certificate)."
  }
}

variable "etcd_tls" {
  description = "PEM material of the edge's etcd client: the etcd CA certificate (verifies the members), and a client certificate from that CA (clientAuth usage) with its key. One per edge, so that an edge's access can be revoked alone."
  type = object({
    ca_pem   = string
    cert_pem = string
    key_pem  = string
  })
  sensitive = true

  validation {
    condition = nonsensitive(
      can(regex("-----BEGIN CERTIFICATE-----", var.etcd_tls.ca_pem)) &&
      can(regex("-----BEGIN CERTIFICATE-----", var.etcd_tls.cert_pem)) &&
      can(regex("-----BEGIN ([A-Z]+ )?PRIVATE KEY-----", var.etcd_tls.key_pem))
    )
    error_message = "etcd_tls.ca_pem and etcd_tls.cert_pem must be PEM certificates and etcd_tls.key_pem a PEM private key."
  }
}

variable "etcd_prefix" {
  description = "Key prefix of the mesh in etcd (control.prefix). The same on every edge and controller of a mesh."
  type        = string
  default     = "/rtn/v1/"

  validation {
    condition     = can(regex("^/[^\\s\\x00-\\x1f]*/$", var.etcd_prefix)) && length(var.etcd_prefix) >= 2
    error_message = "etcd_prefix must start and end with '/' and contain no spaces or control characters (e.g. \"/rtn/v1/\")."
  }
}

variable "lease_ttl_ms" {
  description = "TTL of the edge's etcd lease (control.lease_ttl_ms): a dead edge leaves the registry after this."
  type        = number
  default     = 3000

  validation {
    condition     = var.lease_ttl_ms >= 2000 && var.lease_ttl_ms <= 60000
    error_message = "lease_ttl_ms must be within 2000..60000 (etcd's floor is about 2 s)."
  }
}

variable "probes_per_other_region" {
  description = "Edges of each other region that this edge probes (control.probes_per_other_region); every edge of its own region is probed."
  type        = number
  default     = 3

  validation {
    condition     = var.probes_per_other_region >= 1 && var.probes_per_other_region <= 32 && floor(var.probes_per_other_region) == var.probes_per_other_region
    error_message = "probes_per_other_region must be a whole number within 1..32."
  }
}

variable "public_ip" {
  description = "Public IPv4 or IPv6 address clients and other edges reach this edge at (edge.public_addr together with quic_port), e.g. an elastic IP."
  type        = string

  validation {
    condition     = can(cidrhost("${var.public_ip}/32", 0)) || (can(regex(":", var.public_ip)) && can(cidrhost("${var.public_ip}/128", 0)))
    error_message = "public_ip must be a literal IPv4 or IPv6 address (no port, no name)."
  }
}

variable "listen_address" {
  description = "Local address the QUIC endpoint binds (edge.listen with quic_port)."
  type        = string
  default     = "0.0.0.0"

  validation {
    condition     = can(cidrhost("${var.listen_address}/32", 0)) || (can(regex(":", var.listen_address)) && can(cidrhost("${var.listen_address}/128", 0)))
    error_message = "listen_address must be a literal IPv4 or IPv6 address."
  }
}

variable "admin_listen_address" {
  description = "Local address of the admin HTTP server (/metrics, /healthz, /readyz; edge.admin_listen with admin_port). It has no authentication: keep it on a private network (admin_cidrs)."
  type        = string
  default     = "0.0.0.0"

  validation {
    condition     = can(cidrhost("${var.admin_listen_address}/32", 0)) || (can(regex(":", var.admin_listen_address)) && can(cidrhost("${var.admin_listen_address}/128", 0)))
    error_message = "admin_listen_address must be a literal IPv4 or IPv6 address."
  }
}

variable "quic_port" {
  description = "UDP port of the QUIC endpoint, shared by clients (rtn-client/1) and relay links (rtn-relay/1). Ports below 1024 (e.g. 443) give the service CAP_NET_BIND_SERVICE."
  type        = number
  default     = 4433

  validation {
    condition     = var.quic_port >= 1 && var.quic_port <= 65535 && floor(var.quic_port) == var.quic_port
    error_message = "quic_port must be a port number within 1..65535."
  }
}

variable "admin_port" {
  description = "TCP port of the admin HTTP server."
  type        = number
  default     = 9433

  validation {
    condition     = var.admin_port >= 1 && var.admin_port <= 65535 && floor(var.admin_port) == var.admin_port
    error_message = "admin_port must be a port number within 1..65535."
  }

  validation {
    condition     = var.admin_port != var.quic_port || var.admin_listen_address != var.listen_address
    error_message = "admin_port must differ from quic_port when both listen on the same address."
  }
}

variable "server_name" {
  description = "DNS name of this edge (edge.server_name): its certificate must be valid for it, and peers and clients verify it."
  type        = string

  validation {
    condition     = length(var.server_name) <= 253 && can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.server_name))
    error_message = "server_name must be a lowercase DNS name such as edge-17.rtn.example.net."
  }
}

variable "capacity" {
  description = "Client sessions this edge accepts (limits.max_sessions); load = sessions / capacity ranks edges for new clients. See docs/operations.md, sizing."
  type        = number
  default     = 10000

  validation {
    condition     = var.capacity >= 1 && var.capacity <= 10000000 && floor(var.capacity) == var.capacity
    error_message = "capacity must be a whole number within 1..10000000."
  }
}

variable "limits" {
  description = "The other [limits] of the edge (milliseconds and queue lengths); defaults are the binary's."
  type = object({
    join_timeout_ms        = optional(number, 10000)
    subscriber_queue       = optional(number, 256)
    client_frame_queue     = optional(number, 4096)
    client_idle_timeout_ms = optional(number, 10000)
    drain_timeout_ms       = optional(number, 5000)
    goaway_reconnect_ms    = optional(number, 50)
  })
  default  = {}
  nullable = false

  validation {
    condition     = alltrue([for k, v in var.limits : v >= 1 && floor(v) == v]) && var.limits.drain_timeout_ms <= 600000 && var.limits.goaway_reconnect_ms <= 60000
    error_message = "limits must be positive whole numbers; drain_timeout_ms at most 600000 and goaway_reconnect_ms at most 60000."
  }
}

variable "quic_endpoints" {
  description = "QUIC endpoints serving quic_port (edge.endpoints): above 1 they share the port with SO_REUSEPORT, spreading clients over more cores, and relay links are dialed from an ephemeral port (the host firewall lets their replies in as established). Measured with loadtest bench capacity (docs/benchmarks.md)."
  type        = number
  default     = 1

  validation {
    condition     = var.quic_endpoints >= 1 && var.quic_endpoints <= 64 && floor(var.quic_endpoints) == var.quic_endpoints
    error_message = "quic_endpoints must be a whole number within 1..64."
  }
}

variable "udp_buffer_bytes" {
  description = "UDP socket buffer the edge requests (edge.udp_buffer_bytes); the kernel limits net.core.rmem_max/wmem_max are raised to match."
  type        = number
  default     = 8388608

  validation {
    condition     = var.udp_buffer_bytes >= 262144 && var.udp_buffer_bytes <= 268435456 && floor(var.udp_buffer_bytes) == var.udp_buffer_bytes
    error_message = "udp_buffer_bytes must be a whole number within 256 KiB..256 MiB."
  }
}

variable "apps" {
  description = "Apps whose join tokens this edge accepts. Their secrets come from app_secrets and reach the process through an environment file (root-only), never through the config file."
  type = list(object({
    id = string
  }))

  validation {
    condition     = length(var.apps) > 0 && alltrue([for a in var.apps : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", a.id))])
    error_message = "apps must list at least one app; ids are 1-64 characters of letters, digits, '_', '.', '-'."
  }

  validation {
    condition     = length(distinct([for a in var.apps : upper(replace(a.id, "/[^A-Za-z0-9]/", "_"))])) == length(var.apps)
    error_message = "app ids must stay distinct when '.' and '-' are read as '_' (they name environment variables)."
  }
}

variable "app_secrets" {
  description = "Shared secrets per app id (several during a rotation, the new one first), each at least 16 characters of letters, digits and + / = _ . : @ % ~ -."
  type        = map(list(string))
  sensitive   = true

  validation {
    condition = nonsensitive(alltrue([
      for id, secrets in var.app_secrets : length(secrets) > 0 && alltrue([
        for s in secrets : can(regex("^[A-Za-z0-9+/=_.:@%~-]{16,512}$", s))
      ])
    ]))
    error_message = "Every app needs at least one secret of 16-512 characters from letters, digits and + / = _ . : @ % ~ - (no spaces, commas or quotes)."
  }

  validation {
    condition     = nonsensitive(alltrue([for a in var.apps : contains(keys(var.app_secrets), a.id)]) && length(var.app_secrets) == length(var.apps))
    error_message = "app_secrets must have exactly one entry per app in apps."
  }
}

variable "client_tls_files" {
  description = "The certificate clients and browsers verify: paths on the host of a WebPKI certificate chain for server_name and its key, kept fresh by the host's ACME client (the edge re-reads them when they change; the service user, the package's rtn, must be able to read them). null: a short-lived self-signed certificate the edge rotates itself, whose digests the controllers publish (development)."
  type = object({
    cert_path = string
    key_path  = string
  })
  default = null
}

variable "tls" {
  description = "PEM material of this edge: its certificate chain (valid for server_name, with the serverAuth and clientAuth usages), its private key, and the mesh CA certificate that signs every edge."
  type = object({
    cert_pem    = string
    key_pem     = string
    mesh_ca_pem = string
  })
  sensitive = true

  validation {
    condition = nonsensitive(
      can(regex("-----BEGIN CERTIFICATE-----", var.tls.cert_pem)) &&
      can(regex("-----BEGIN ([A-Z]+ )?PRIVATE KEY-----", var.tls.key_pem)) &&
      can(regex("-----BEGIN CERTIFICATE-----", var.tls.mesh_ca_pem))
    )
    error_message = "tls.cert_pem and tls.mesh_ca_pem must be PEM certificates and tls.key_pem a PEM private key."
  }
}

variable "package" {
  description = "The rtn-edge Debian package the host installs at first boot (scripts/package.sh builds it into target/packages/): url, an https URL or the absolute path of a .deb already on the host (an image that carries it), and its SHA-256 (hex, from target/packages/SHA256SUMS), checked before install. The package brings the binary, the hardened unit and the rtn user; its architecture (the file name's _amd64 or _arm64) must be the instance's."
  type = object({
    url    = string
    sha256 = string
  })

  validation {
    condition     = (can(regex("^https://[^\\s'\"]+/rtn-edge_[^/\\s'\"]+\\.deb$", var.package.url)) || can(regex("^(/[^/\\s'\"]+)*/rtn-edge_[^/\\s'\"]+\\.deb$", var.package.url))) && can(regex("^[0-9a-f]{64}$", var.package.sha256))
    error_message = "package.url must be an https:// URL or an absolute path of an rtn-edge_<version>_<arch>.deb, and package.sha256 64 lowercase hex digits."
  }
}

variable "admin_cidrs" {
  description = "Networks allowed to reach the admin port (Prometheus, health checks) in the host firewall."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0))])
    error_message = "admin_cidrs must be CIDR blocks, e.g. 10.0.0.0/8."
  }
}

variable "ssh_cidrs" {
  description = "Networks allowed to reach SSH (TCP 22) in the host firewall. Empty: SSH is closed (use the cloud's console or session manager)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_cidrs : can(cidrhost(c, 0))])
    error_message = "ssh_cidrs must be CIDR blocks."
  }
}

variable "quic_cidrs" {
  description = "Networks allowed to reach the QUIC port: clients and other edges, so normally everyone."
  type        = list(string)
  default     = ["0.0.0.0/0", "::/0"]

  validation {
    condition     = length(var.quic_cidrs) > 0 && alltrue([for c in var.quic_cidrs : can(cidrhost(c, 0))])
    error_message = "quic_cidrs must hold at least one CIDR block."
  }
}

variable "host_firewall" {
  description = "Install the nftables host firewall (a table of its own that drops everything but the ports above)."
  type        = bool
  default     = true
}

variable "config_dir" {
  description = "Directory of the config, environment file and TLS material on the host."
  type        = string
  default     = "/etc/rtn"

  validation {
    condition     = can(regex("^(/[A-Za-z0-9._-]+)+$", var.config_dir))
    error_message = "config_dir must be an absolute path without a trailing '/'."
  }
}

variable "memory_max" {
  description = "systemd MemoryMax of the edge (e.g. \"4G\"); null for no limit. Size it from docs/operations.md (sessions times memory per session plus the idle footprint)."
  type        = string
  default     = "2G"

  validation {
    condition     = var.memory_max == null || can(regex("^[0-9]+[KMGT]?$", var.memory_max))
    error_message = "memory_max must be a byte count with an optional K, M, G or T suffix, or null."
  }
}

variable "limit_nofile" {
  description = "Open file limit of the edge process (LimitNOFILE)."
  type        = number
  default     = 65536

  validation {
    condition     = var.limit_nofile >= 1024 && var.limit_nofile <= 1048576
    error_message = "limit_nofile must be within 1024..1048576."
  }
}

variable "log_format" {
  description = "Log format of the edge: json (for log shippers) or text."
  type        = string
  default     = "json"

  validation {
    condition     = contains(["json", "text"], var.log_format)
    error_message = "log_format must be json or text."
  }
}

variable "log_level" {
  description = "RUST_LOG filter of the edge, e.g. info or info,edge_node=debug."
  type        = string
  default     = "info"

  validation {
    condition     = can(regex("^[A-Za-z0-9_=,:.-]+$", var.log_level))
    error_message = "log_level must be a RUST_LOG filter such as info or info,edge_node=debug."
  }
}

variable "secret_store" {
  description = "Where the host fetches its secret files (private keys, tokens, app secrets) at first boot instead of finding them in its user data. null (default): in the user data, as before. {store = \"aws-ssm\", prefix = \"/rtn/<fleet>/<host>\", region}: one SecureString parameter per file, named <prefix>/<file name>, read with the AWS CLI and the instance's IAM role. {store = \"gcp-secret-manager\", prefix = \"rtn-<fleet>-<host>\", project}: one secret per file, named <prefix>-<file name with - for .>, read with gcloud and the instance's service account. Each value is the file's content, base64-encoded; the `secrets` output lists them for the cloud module to store."
  type = object({
    store   = string
    prefix  = string
    region  = optional(string)
    project = optional(string)
  })
  default = null

  validation {
    condition = var.secret_store == null || try(
      (var.secret_store.store == "aws-ssm" && can(regex("^(/[A-Za-z0-9_.-]+)+$", var.secret_store.prefix)) && can(regex("^[a-z0-9-]+$", var.secret_store.region))) ||
      (var.secret_store.store == "gcp-secret-manager" && can(regex("^[A-Za-z0-9_-]+$", var.secret_store.prefix)) && can(regex("^[a-z][a-z0-9-]+$", var.secret_store.project))),
    false)
    error_message = "secret_store.store must be aws-ssm (prefix a /-separated path, region set) or gcp-secret-manager (prefix of letters, digits, - and _, project set)."
  }
}
