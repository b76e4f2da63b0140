variable "state_dir" {
  description = "Directory for everything the network writes while it runs: configs, dev certificates, secrets, pid files, logs, etcd's data. Created by apply, removed by destroy. Default: run/ next to this file."
  type        = string
  default     = null
}

variable "bin_dir" {
  description = "Directory holding edge-node, region-controller (built with --features edge-node/netem) and loadtest. Default: the repository's target/release when edge-node and region-controller are there, else target/debug."
  type        = string
  default     = null
}

variable "etcd_binary" {
  description = "The etcd server binary (Debian: apt-get install etcd-server)."
  type        = string
  default     = "/usr/bin/etcd"
}

variable "edges" {
  description = "Edges by id (1-254): their region (one region controller each) and city (a code from topology/src/geo.rs, which locates the edge and picks its WAN delays). Edge <id> listens on 127.10.<id>.1."
  type = map(object({
    region = string
    city   = string
  }))
  default = {
    "1" = { region = "eu", city = "lhr" }
    "2" = { region = "eu", city = "fra" }
    "3" = { region = "us", city = "iad" }
    "4" = { region = "ap", city = "sin" }
  }

  validation {
    condition     = length(var.edges) >= 1 && alltrue([for id, e in var.edges : can(regex("^[1-9][0-9]{0,2}$", id)) && try(tonumber(id) <= 254, false)])
    error_message = "edges needs at least one edge; ids are 1..254 (edge <id> gets the address 127.10.<id>.1)."
  }

  validation {
    condition     = alltrue([for e in var.edges : can(regex("^[a-z0-9][a-z0-9-]{0,62}$", e.region)) && can(regex("^[A-Za-z]{3}$", e.city))])
    error_message = "regions are 1-63 characters of lowercase letters, digits and '-'; cities are three-letter codes (topology/src/geo.rs)."
  }
}

variable "controllers_per_region" {
  description = "Region controllers per region: 1, or 2-3 for a leader and standbys (replica <r> of the <k>-th region, regions in alphabetical order, listens on 127.11.<k>.<r>)."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 2, 3], var.controllers_per_region)
    error_message = "controllers_per_region must be 1, 2 or 3."
  }
}

variable "client_city" {
  description = "Where the clients are: the city whose delays apply between every edge and client_address."
  type        = string
  default     = "fra"

  validation {
    condition     = can(regex("^[A-Za-z]{3}$", var.client_city))
    error_message = "client_city must be a three-letter city code."
  }
}

variable "client_address" {
  description = "The clients' address: loadtest run and the SDK examples send from 127.0.0.1 unless told otherwise."
  type        = string
  default     = "127.0.0.1"

  validation {
    condition     = can(cidrhost("${var.client_address}/32", 0))
    error_message = "client_address must be an IPv4 address."
  }
}

variable "one_way_delay_ms" {
  description = "One-way delays between cities in ms, keyed \"<a>-<b>\" with the two codes in alphabetical order; added to (or replacing entries of) the built-in table in delays.tf. Every pair of edge cities and client_city needs one."
  type        = map(number)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.one_way_delay_ms : can(regex("^[a-z]{3}-[a-z]{3}$", k)) && v >= 0 && v <= 5000])
    error_message = "one_way_delay_ms keys are \"<a>-<b>\" (lowercase city codes), values 0-5000 ms."
  }
}

variable "metro_ms" {
  description = "One-way delay between two hosts of one city, ms."
  type        = number
  default     = 1
}

variable "access_ms" {
  description = "The clients' last mile, one way, ms: added to the delay from an edge to client_address."
  type        = number
  default     = 3
}

variable "jitter_ms" {
  description = "Jitter of every emulated link, each way, ms (uniform, without reordering)."
  type        = number
  default     = 0.3
}

variable "loss" {
  description = "Loss ratio of every emulated link, each way (0-1)."
  type        = number
  default     = 0

  validation {
    condition     = var.loss >= 0 && var.loss <= 1
    error_message = "loss must be within 0..1."
  }
}

variable "links" {
  description = "Per city pair overrides, both ways, as in the lab's topology files: extra delay, jitter and loss that replace the defaults, or a cut link. The default detours London-Singapore by 60 ms, so relaying through Frankfurt beats the direct path."
  type = list(object({
    a              = string
    b              = string
    extra_delay_ms = optional(number, 0)
    jitter_ms      = optional(number)
    loss           = optional(number)
    down           = optional(bool, false)
  }))
  default = [{ a = "lhr", b = "sin", extra_delay_ms = 60 }]

  validation {
    condition     = alltrue([for l in var.links : can(regex("^[A-Za-z]{3}$", l.a)) && can(regex("^[A-Za-z]{3}$", l.b)) && l.extra_delay_ms >= 0 && try(l.loss >= 0 && l.loss <= 1, l.loss == null)])
    error_message = "links: a and b are city codes, extra_delay_ms at least 0, loss within 0..1."
  }
}

variable "ports" {
  description = "Ports: every process has an address of its own, so these are the same for all edges (quic: UDP, admin: /metrics, /healthz, /readyz, /netem) and all controllers (api: the public nearest-edge API and health; controller_admin: /v1/mesh, /v1/links/history, the dashboard, /metrics, health)."
  type = object({
    quic             = optional(number, 4433)
    admin            = optional(number, 9433)
    api              = optional(number, 8080)
    controller_admin = optional(number, 9434)
    etcd_client      = optional(number, 2379)
    etcd_peer        = optional(number, 2380)
  })
  default = {}

  validation {
    condition     = alltrue([for p in values(var.ports) : p >= 1024 && p <= 65535 && floor(p) == p]) && var.ports.quic != var.ports.admin && var.ports.api != var.ports.controller_admin && var.ports.etcd_client != var.ports.etcd_peer
    error_message = "ports must be 1024-65535 (no root needed), with quic != admin, api != controller_admin and etcd_client != etcd_peer."
  }
}

variable "cors_origins" {
  description = "Web page origins (http://localhost:8000) allowed to ask the controllers for the nearest edges from a browser, e.g. a page using sdk-js."
  type        = list(string)
  default     = []
}

variable "app_id" {
  description = "The app whose join tokens the edges accept. Its secret is generated at apply (output app_secret_file)."
  type        = string
  default     = "demo"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", var.app_id))
    error_message = "app_id is 1-64 characters of letters, digits, '_', '.', '-'."
  }
}

variable "log_level" {
  description = "RUST_LOG of the edges and controllers (their logs are in state_dir)."
  type        = string
  default     = "info"
}
