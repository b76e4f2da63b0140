variable "cluster_token" {
  description = "Name of the cluster (initial-cluster-token): unique per cluster, so members of different clusters never join each other."
  type        = string
  default     = "rtn-etcd"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", var.cluster_token))
    error_message = "cluster_token must be 1-63 characters of letters, digits, '.', '_' and '-'."
  }
}

variable "members" {
  description = "The members: a name and the private IP address other members and clients reach it at (fixed before the instances exist: user data names every member). Three members survive one failure, five survive two."
  type = list(object({
    name = string
    ip   = string
  }))

  validation {
    condition     = contains([3, 5], length(var.members))
    error_message = "members must list 3 or 5 members (an odd number, so a majority survives a failure)."
  }

  validation {
    condition     = alltrue([for m in var.members : can(regex("^[a-z0-9][a-z0-9-]{0,62}$", m.name))])
    error_message = "member names must be 1-63 characters of lowercase letters, digits and '-'."
  }

  validation {
    condition     = alltrue([for m in var.members : can(cidrhost("${m.ip}/32", 0)) || (can(regex(":", m.ip)) && can(cidrhost("${m.ip}/128", 0)))])
    error_message = "member ips must be literal IPv4 or IPv6 addresses."
  }

  validation {
    condition     = length(distinct(var.members[*].name)) == length(var.members) && length(distinct(var.members[*].ip)) == length(var.members)
    error_message = "member names and ips must be distinct."
  }
}

variable "client_port" {
  description = "TCP port of the TLS client listener (https, client certificates required)."
  type        = number
  default     = 2379

  validation {
    condition     = var.client_port >= 1024 && var.client_port <= 65535 && floor(var.client_port) == var.client_port
    error_message = "client_port must be within 1024..65535."
  }
}

variable "peer_port" {
  description = "TCP port of the peer listener (member to member, mutual TLS)."
  type        = number
  default     = 2380

  validation {
    condition     = var.peer_port >= 1024 && var.peer_port <= 65535 && floor(var.peer_port) == var.peer_port
    error_message = "peer_port must be within 1024..65535."
  }
}

variable "metrics_port" {
  description = "TCP port of etcd's /metrics and /health over plain http (admin_cidrs only)."
  type        = number
  default     = 2381

  validation {
    condition     = var.metrics_port >= 1024 && var.metrics_port <= 65535 && floor(var.metrics_port) == var.metrics_port
    error_message = "metrics_port must be within 1024..65535."
  }
}

variable "plaintext_client_port" {
  description = "Migration only (default null: TLS only). Also serve clients over plain http on this port of the member's private address, for clients that still connect without TLS (edge-node and region-controller before their etcd client had TLS): keep it while a fleet moves to https endpoints and client certificates, then drop it (docs/operations.md). The host and cloud firewalls open it to client_cidrs only."
  type        = number
  default     = null

  validation {
    condition     = var.plaintext_client_port == null || try(var.plaintext_client_port >= 1024 && var.plaintext_client_port <= 65535 && floor(var.plaintext_client_port) == var.plaintext_client_port, false)
    error_message = "plaintext_client_port must be within 1024..65535, or null."
  }

  validation {
    condition     = length(distinct(compact([tostring(var.client_port), tostring(var.peer_port), tostring(var.metrics_port), var.plaintext_client_port == null ? "" : tostring(var.plaintext_client_port)]))) == (var.plaintext_client_port == null ? 3 : 4)
    error_message = "client_port, peer_port, metrics_port and plaintext_client_port must all differ."
  }
}

variable "tls" {
  description = "PEM material: the etcd CA (signs members and clients; keep it apart from the mesh CA), and per member name a certificate valid for the member's ip (IP SAN) with the serverAuth and clientAuth usages, and its key."
  type = object({
    ca_pem = string
    members = map(object({
      cert_pem = string
      key_pem  = string
    }))
  })
  sensitive = true

  validation {
    condition = nonsensitive(can(regex("-----BEGIN CERTIFICATE-----", var.tls.ca_pem)) && alltrue([
      for m in values(var.tls.members) : can(regex("-----BEGIN CERTIFICATE-----", m.cert_pem)) && can(regex("-----BEGIN ([A-Z]+ )?PRIVATE KEY-----", m.key_pem))
    ]))
    error_message = "tls.ca_pem and every member's cert_pem must be PEM certificates, every key_pem a PEM private key."
  }

  validation {
    condition     = nonsensitive(sort(keys(var.tls.members))) == sort(var.members[*].name)
    error_message = "tls.members must have exactly one entry per member name."
  }
}

variable "client_cidrs" {
  description = "Networks allowed to reach the client ports (edges, controllers, operators) in the host firewall."
  type        = list(string)

  validation {
    condition     = length(var.client_cidrs) > 0 && alltrue([for c in var.client_cidrs : can(cidrhost(c, 0))])
    error_message = "client_cidrs must hold at least one CIDR block."
  }
}

variable "admin_cidrs" {
  description = "Networks allowed to reach the metrics port (Prometheus)."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0))])
    error_message = "admin_cidrs must be CIDR blocks."
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
  description = "Install the nftables host firewall (peers only from the other members)."
  type        = bool
  default     = true
}

variable "etcd_release" {
  description = "The etcd the members run, required: an upstream release tarball, url (default: etcd v3.5.21 for linux-amd64, https://github.com/etcd-io/etcd/releases/download/v3.5.21/etcd-v3.5.21-linux-amd64.tar.gz; set it for arm64 or another 3.5.x) and its SHA-256, which has no default: copy it from the release's SHA256SUMS (https://github.com/etcd-io/etcd/releases/tag/v3.5.21) rather than from anywhere else. { distribution_package = true } installs the distribution's etcd-server package instead: 3.4 on Debian 12 and Ubuntu 24.04, with the lease-revocation bug docs/operations.md describes (for tests, or an image whose package has the fix)."
  type = object({
    url                  = optional(string, "https://github.com/etcd-io/etcd/releases/download/v3.5.21/etcd-v3.5.21-linux-amd64.tar.gz")
    sha256               = optional(string)
    distribution_package = optional(bool, false)
  })
  nullable = false

  validation {
    condition     = var.etcd_release.distribution_package || try(can(regex("^https://[^\\s'\"]+\\.tar\\.gz$", var.etcd_release.url)) && can(regex("^[0-9a-f]{64}$", var.etcd_release.sha256)), false)
    error_message = "etcd_release needs sha256 (64 lowercase hex digits, from the release's SHA256SUMS) and an https:// url of a .tar.gz, or distribution_package = true."
  }
}

variable "initial_cluster_state" {
  description = "new to bootstrap the cluster; existing for a member replacing a lost one after `etcdctl member add` (see docs/operations.md)."
  type        = string
  default     = "new"

  validation {
    condition     = contains(["new", "existing"], var.initial_cluster_state)
    error_message = "initial_cluster_state must be new or existing."
  }
}

variable "data_dir" {
  description = "Data directory: a systemd StateDirectory under /var/lib, owned by the service's transient user."
  type        = string
  default     = "/var/lib/rtn-etcd"

  validation {
    condition     = can(regex("^/var/lib/[A-Za-z0-9._-]+$", var.data_dir))
    error_message = "data_dir must be a directory directly under /var/lib, e.g. /var/lib/rtn-etcd."
  }
}

variable "config_dir" {
  description = "Directory of the config and TLS material on the host."
  type        = string
  default     = "/etc/rtn"

  validation {
    condition     = can(regex("^(/[A-Za-z0-9._-]+)+$", var.config_dir))
    error_message = "config_dir must be an absolute path without a trailing '/'."
  }
}

variable "heartbeat_interval_ms" {
  description = "Raft heartbeat interval: about the round trip between members (same region: the default)."
  type        = number
  default     = 100

  validation {
    condition     = var.heartbeat_interval_ms >= 10 && var.heartbeat_interval_ms <= 5000
    error_message = "heartbeat_interval_ms must be within 10..5000."
  }
}

variable "election_timeout_ms" {
  description = "Raft election timeout: at least 5 heartbeats. It is also the floor of lease TTLs, so keep it well under the edges' lease_ttl_ms (3 s)."
  type        = number
  default     = 1000

  validation {
    condition     = var.election_timeout_ms >= 5 * var.heartbeat_interval_ms && var.election_timeout_ms <= 50000
    error_message = "election_timeout_ms must be at least 5 times heartbeat_interval_ms and at most 50000."
  }
}

variable "snapshot_count" {
  description = "Committed transactions between snapshots."
  type        = number
  default     = 10000

  validation {
    condition     = var.snapshot_count >= 1000
    error_message = "snapshot_count must be at least 1000."
  }
}

variable "quota_backend_bytes" {
  description = "Database size limit. Routes dominate: about edges squared times 25 bytes (225 MB for 3,000 edges). etcd recommends at most 8 GiB."
  type        = number
  default     = 4294967296

  validation {
    condition     = var.quota_backend_bytes >= 268435456 && var.quota_backend_bytes <= 8589934592
    error_message = "quota_backend_bytes must be within 256 MiB..8 GiB."
  }
}

variable "auto_compaction_retention" {
  description = "History kept (periodic compaction), e.g. 1h. Watches resume from their last revision after an outage, so keep more than the longest outage you want to bridge without a re-list."
  type        = string
  default     = "1h"

  validation {
    condition     = can(regex("^[0-9]+(m|h)$", var.auto_compaction_retention))
    error_message = "auto_compaction_retention must be minutes or hours, e.g. 30m or 1h."
  }
}

variable "memory_max" {
  description = "systemd MemoryMax of etcd; null for no limit. Leave room for the whole database (quota_backend_bytes) plus overhead."
  type        = string
  default     = null

  validation {
    condition     = var.memory_max == null || can(regex("^[0-9]+[KMGT]?$", var.memory_max))
    error_message = "memory_max must be a byte count with an optional K, M, G or T suffix, or null."
  }
}

variable "secret_store" {
  description = "Where the host fetches its secret files (private keys, tokens, app secrets) at first boot instead of finding them in its user data. null (default): in the user data, as before. {store = \"aws-ssm\", prefix = \"/rtn/<fleet>/<host>\", region}: one SecureString parameter per file, named <prefix>/<file name>, read with the AWS CLI and the instance's IAM role. {store = \"gcp-secret-manager\", prefix = \"rtn-<fleet>-<host>\", project}: one secret per file, named <prefix>-<file name with - for .>, read with gcloud and the instance's service account. Each value is the file's content, base64-encoded; the `secrets` output lists them for the cloud module to store. Each member appends its name: <prefix>/<name>/<file> (aws-ssm), <prefix>-<name>-<file> (gcp-secret-manager)."
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
