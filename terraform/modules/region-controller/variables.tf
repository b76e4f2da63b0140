variable "region" {
  description = "RTN region the controllers compute routes for (controller.region); edges of that region follow them."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}$", var.region))
    error_message = "region must be 1-63 characters of lowercase letters, digits and '-', starting with a letter or digit."
  }
}

variable "replicas" {
  description = "Controllers in the region: one leader and replicas - 1 standbys, all equal (every one serves the nearest-edge API). A standby takes over within election_ttl_ms of a crash."
  type        = number
  default     = 2

  validation {
    condition     = var.replicas >= 1 && var.replicas <= 7 && floor(var.replicas) == var.replicas
    error_message = "replicas must be a whole number within 1..7."
  }
}

variable "name_prefix" {
  description = "Controller names are <name_prefix>-<n> (controller.name, unique among a region's candidates); null means <region>-ctl."
  type        = string
  default     = null

  validation {
    condition     = var.name_prefix == null || can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,55}$", var.name_prefix))
    error_message = "name_prefix must be 1-56 characters of letters, digits, '.', '_' and '-'."
  }
}

variable "etcd_endpoints" {
  description = "etcd TLS client URLs (store.etcd_endpoints), e.g. the etcd-cluster module's client_endpoints."
  type        = list(string)

  validation {
    condition     = length(var.etcd_endpoints) > 0 && alltrue([for e in var.etcd_endpoints : can(regex("^https://[^/\\s]+$", e))])
    error_message = "etcd_endpoints must hold at least one https:// URL without a path (etcd is reached over TLS with a client certificate)."
  }
}

variable "etcd_tls" {
  description = "PEM material of the controllers' etcd client: the etcd CA certificate (verifies the members), and a client certificate from that CA (clientAuth usage) with its key, shared by the region's replicas."
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
  description = "Key prefix of the mesh in etcd (store.prefix): the same as the edges'."
  type        = string
  default     = "/rtn/v1/"

  validation {
    condition     = can(regex("^/[^\\s\\x00-\\x1f]*/$", var.etcd_prefix)) && length(var.etcd_prefix) >= 2
    error_message = "etcd_prefix must start and end with '/' and contain no spaces or control characters."
  }
}

variable "election_ttl_ms" {
  description = "Lease of the region's leader key (store.election_ttl_ms): a crashed leader is replaced within this."
  type        = number
  default     = 3000

  validation {
    condition     = var.election_ttl_ms >= 2000 && var.election_ttl_ms <= 60000
    error_message = "election_ttl_ms must be within 2000..60000 (etcd's floor is about 2 s)."
  }
}

variable "debounce_ms" {
  description = "Store changes are collected this long before routes are recomputed (controller.debounce_ms)."
  type        = number
  default     = 200

  validation {
    condition     = var.debounce_ms >= 10 && var.debounce_ms <= 10000
    error_message = "debounce_ms must be within 10..10000."
  }
}

variable "recompute_ms" {
  description = "Routes are recomputed at least this often (controller.recompute_ms)."
  type        = number
  default     = 5000

  validation {
    condition     = var.recompute_ms >= 100 && var.recompute_ms <= 600000
    error_message = "recompute_ms must be within 100..600000."
  }
}

variable "hierarchical_from_edges" {
  description = "Route hierarchically (hubs between regions, docs/control-plane.md) from this many registered edges on, flat below 90% of it (controller.hierarchical_from_edges). Every region's controllers must use the same value; 0: always."
  type        = number
  default     = 500

  validation {
    condition     = var.hierarchical_from_edges >= 0 && floor(var.hierarchical_from_edges) == var.hierarchical_from_edges
    error_message = "hierarchical_from_edges must be a whole number, 0 or more."
  }
}

variable "hubs_per_region" {
  description = "Hierarchical routing: the region's hubs at most, where other regions' traffic enters it (controller.hubs_per_region)."
  type        = number
  default     = 16

  validation {
    condition     = var.hubs_per_region >= 1 && var.hubs_per_region <= 256 && floor(var.hubs_per_region) == var.hubs_per_region
    error_message = "hubs_per_region must be a whole number within 1..256."
  }
}

variable "api_port" {
  description = "TCP port of the controller's public HTTP API (api.listen with api_listen_address): the nearest-edge lookup (the SDK's first contact), /healthz, /readyz. The one port to open to the internet (api_cidrs)."
  type        = number
  default     = 8080

  validation {
    condition     = var.api_port >= 1 && var.api_port <= 65535 && floor(var.api_port) == var.api_port
    error_message = "api_port must be a port number within 1..65535."
  }
}

variable "api_listen_address" {
  description = "Local address the public API binds (api.listen with api_port)."
  type        = string
  default     = "0.0.0.0"

  validation {
    condition     = can(cidrhost("${var.api_listen_address}/32", 0)) || (can(regex(":", var.api_listen_address)) && can(cidrhost("${var.api_listen_address}/128", 0)))
    error_message = "api_listen_address must be a literal IPv4 or IPv6 address."
  }
}

variable "admin_port" {
  description = "TCP port of the controller's admin HTTP server (admin.listen with admin_listen_address): /v1/mesh and /v1/links/history (bearer token, admin_token), the dashboard at /, /metrics, /healthz, /readyz."
  type        = number
  default     = 9434

  validation {
    condition     = var.admin_port >= 1 && var.admin_port <= 65535 && floor(var.admin_port) == var.admin_port
    error_message = "admin_port must be a port number within 1..65535."
  }

  # The controller refuses an admin listener that equals or overlaps the
  # public one (the same port where either address is unspecified).
  validation {
    condition     = var.admin_port != var.api_port || (var.admin_listen_address != var.api_listen_address && !can(regex("^[0:.]+$", var.admin_listen_address)) && !can(regex("^[0:.]+$", var.api_listen_address)))
    error_message = "admin_port must differ from api_port unless both listen on distinct, specific addresses (the controller refuses an admin listener that overlaps the public API's)."
  }
}

variable "admin_listen_address" {
  description = "Local address of the admin HTTP server (admin.listen with admin_port). Plain HTTP, and only /v1/mesh and /v1/links/history take the token (not /metrics or the dashboard page): keep it on a private network (admin_cidrs)."
  type        = string
  default     = "0.0.0.0"

  validation {
    condition     = can(cidrhost("${var.admin_listen_address}/32", 0)) || (can(regex(":", var.admin_listen_address)) && can(cidrhost("${var.admin_listen_address}/128", 0)))
    error_message = "admin_listen_address must be a literal IPv4 or IPv6 address."
  }
}

variable "api_cidrs" {
  description = "Networks allowed to reach the public API port in the host firewall: every client, unless a proxy or load balancer fronts the controllers."
  type        = list(string)
  default     = ["0.0.0.0/0", "::/0"]

  validation {
    condition     = length(var.api_cidrs) > 0 && alltrue([for c in var.api_cidrs : can(cidrhost(c, 0))])
    error_message = "api_cidrs must hold at least one CIDR block."
  }
}

variable "admin_cidrs" {
  description = "Networks allowed to reach the admin port (Prometheus, operators and their dashboard) in the host firewall; never the internet."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0))])
    error_message = "admin_cidrs must be CIDR blocks, e.g. 10.0.0.0/8."
  }
}

variable "ssh_cidrs" {
  description = "Networks allowed to reach SSH in the host firewall. Empty: SSH is closed."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_cidrs : can(cidrhost(c, 0))])
    error_message = "ssh_cidrs must be CIDR blocks."
  }
}

variable "host_firewall" {
  description = "Install the nftables host firewall."
  type        = bool
  default     = true
}

variable "geoip_db" {
  description = "MaxMind City database (.mmdb) the controllers rank clients with, downloaded at first boot: an https URL and its SHA-256. null: no GeoIP, nearest-edge answers spread over regions instead."
  type = object({
    url    = string
    sha256 = string
  })
  default = null

  validation {
    condition     = var.geoip_db == null || try(can(regex("^https://[^\\s'\"]+$", var.geoip_db.url)) && can(regex("^[0-9a-f]{64}$", var.geoip_db.sha256)), false)
    error_message = "geoip_db.url must be an https:// URL and geoip_db.sha256 64 lowercase hex digits."
  }
}

variable "client_ip_header" {
  description = "Header carrying the client address when a trusted proxy forwards the lookup (api.client_ip_header), e.g. x-forwarded-for."
  type        = string
  default     = null

  validation {
    condition     = var.client_ip_header == null || can(regex("^[A-Za-z0-9-]{1,64}$", var.client_ip_header))
    error_message = "client_ip_header must be an HTTP header name."
  }
}

variable "trusted_proxies" {
  description = "Addresses or CIDRs of proxies allowed to set client_ip_header (api.trusted_proxies)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.trusted_proxies : can(cidrhost(strcontains(p, "/") ? p : (strcontains(p, ":") ? "${p}/128" : "${p}/32"), 0))])
    error_message = "trusted_proxies must be IP addresses or CIDR blocks."
  }

  validation {
    condition     = length(var.trusted_proxies) == 0 || var.client_ip_header != null
    error_message = "trusted_proxies needs client_ip_header."
  }
}

variable "admin_token" {
  description = "Bearer token of the operator endpoints /v1/mesh and /v1/links/history on the admin port (admin.token_env names the variable; the token reaches the process through a root-only environment file). null: they are refused."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.admin_token == null || nonsensitive(can(regex("^[A-Za-z0-9+/=_.:@%~-]{24,512}$", var.admin_token)))
    error_message = "admin_token must be 24-512 characters of letters, digits and + / = _ . : @ % ~ -."
  }
}

variable "lookups_per_ip_per_s" {
  description = "Public lookups allowed per client address per second (api.lookups_per_ip_per_s; bursts of twice that)."
  type        = number
  default     = 20

  validation {
    condition     = var.lookups_per_ip_per_s >= 1 && floor(var.lookups_per_ip_per_s) == var.lookups_per_ip_per_s
    error_message = "lookups_per_ip_per_s must be a whole number of at least 1."
  }
}

variable "cors_origins" {
  description = "Web page origins (https://app.example.com) allowed to call the nearest-edge lookup from a browser (api.cors_origins); none by default, \"*\" for every page."
  type        = list(string)
  default     = []
}

variable "api_tls_files" {
  description = "HTTPS for the API: paths on the host of a WebPKI certificate chain and its key, kept fresh by the host's ACME client (re-read when they change; the service user, the package's rtn, must be able to read them). null: plain HTTP (behind a TLS-terminating load balancer)."
  type = object({
    cert_path = string
    key_path  = string
  })
  default = null
}

variable "package" {
  description = "The rtn-controller Debian package the hosts install at first boot (scripts/package.sh builds it into target/packages/): url, an https URL or the absolute path of a .deb already on the host (an image that carries it), and its SHA-256 (hex, from target/packages/SHA256SUMS), checked before install. The package brings the binary, the hardened unit and the rtn user; its architecture (the file name's _amd64 or _arm64) must be the instances'."
  type = object({
    url    = string
    sha256 = string
  })

  validation {
    condition     = (can(regex("^https://[^\\s'\"]+/rtn-controller_[^/\\s'\"]+\\.deb$", var.package.url)) || can(regex("^(/[^/\\s'\"]+)*/rtn-controller_[^/\\s'\"]+\\.deb$", var.package.url))) && can(regex("^[0-9a-f]{64}$", var.package.sha256))
    error_message = "package.url must be an https:// URL or an absolute path of an rtn-controller_<version>_<arch>.deb, and package.sha256 64 lowercase hex digits."
  }
}

variable "config_dir" {
  description = "Directory of the config, environment file and GeoIP database on the host."
  type        = string
  default     = "/etc/rtn"

  validation {
    condition     = can(regex("^(/[A-Za-z0-9._-]+)+$", var.config_dir))
    error_message = "config_dir must be an absolute path without a trailing '/'."
  }
}

variable "memory_max" {
  description = "systemd MemoryMax of a controller (its mirror of the mesh grows with edges: see docs/operations.md); null for no limit."
  type        = string
  default     = "2G"

  validation {
    condition     = var.memory_max == null || can(regex("^[0-9]+[KMGT]?$", var.memory_max))
    error_message = "memory_max must be a byte count with an optional K, M, G or T suffix, or null."
  }
}

variable "limit_nofile" {
  description = "Open file limit of a controller (LimitNOFILE): API connections plus etcd."
  type        = number
  default     = 65536

  validation {
    condition     = var.limit_nofile >= 1024 && var.limit_nofile <= 1048576
    error_message = "limit_nofile must be within 1024..1048576."
  }
}

variable "log_level" {
  description = "RUST_LOG filter of the controllers."
  type        = string
  default     = "info"

  validation {
    condition     = can(regex("^[A-Za-z0-9_=,:.-]+$", var.log_level))
    error_message = "log_level must be a RUST_LOG filter such as info or info,region_controller=debug."
  }
}

variable "secret_store" {
  description = "Where the host fetches its secret files (private keys, tokens, app secrets) at first boot instead of finding them in its user data. null (default): in the user data, as before. {store = \"aws-ssm\", prefix = \"/rtn/<fleet>/<host>\", region}: one SecureString parameter per file, named <prefix>/<file name>, read with the AWS CLI and the instance's IAM role. {store = \"gcp-secret-manager\", prefix = \"rtn-<fleet>-<host>\", project}: one secret per file, named <prefix>-<file name with - for .>, read with gcloud and the instance's service account. Each value is the file's content, base64-encoded; the `secrets` output lists them for the cloud module to store. Each replica appends its name: <prefix>/<name>/<file> (aws-ssm), <prefix>-<name>-<file> (gcp-secret-manager)."
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

variable "geoip_update" {
  description = "Keep the GeoIP database current with MaxMind's geoipupdate (the Debian/Ubuntu package geoipupdate, installed at first boot): the operator's MaxMind account id and licence key, the edition (default GeoLite2-City; GeoIP2-City with a paid account) and when to run (a systemd OnCalendar, default twice a week, after MaxMind's Tuesday and Friday releases). A systemd timer runs rtn-geoipupdate.service, which writes <config_dir>/geoip/<edition>.mmdb, the file the config's geoip_db names; the controller reloads it when it changes, without a restart. The licence key goes in the root-only <config_dir>/GeoIP.conf, a secret like the keys (secret_store). geoip_db, when also set, seeds the same file at first boot. null (default): no updates."
  type = object({
    account_id  = number
    license_key = string
    edition     = optional(string, "GeoLite2-City")
    on_calendar = optional(string, "Wed,Sat *-*-* 03:00:00")
  })
  default   = null
  sensitive = true

  validation {
    condition = var.geoip_update == null || nonsensitive(try(
      var.geoip_update.account_id > 0 && floor(var.geoip_update.account_id) == var.geoip_update.account_id &&
      can(regex("^[A-Za-z0-9_]{6,64}$", var.geoip_update.license_key)) &&
      can(regex("^[A-Za-z0-9-]{1,64}$", var.geoip_update.edition)) &&
      can(regex("^[A-Za-z0-9*,:./~ -]{1,100}$", var.geoip_update.on_calendar)),
    false))
    error_message = "geoip_update needs a positive integer account_id, a license_key of 6-64 letters, digits and _, an edition like GeoLite2-City and an OnCalendar expression."
  }
}
