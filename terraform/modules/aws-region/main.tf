# One AWS region of an RTN fleet: a VPC with a public subnet per zone,
# security groups, edges and controllers on elastic IPs, optionally the
# fleet's etcd cluster, certificates from the mesh and etcd CAs (etcd
# members, and an etcd client certificate per edge and for the region's
# controllers), and DNS.
# What runs on each instance is rendered by the provider-free modules.

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  state = "available"
}

data "aws_ami" "ubuntu" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  owners      = ["099720109477"] # Canonical

  # The packages' architecture (var.arch): amd64 or arm64 images.
  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-${var.arch}-server-*"]
  }

  filter {
    name   = "architecture"
    values = [var.arch == "arm64" ? "arm64" : "x86_64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

locals {
  prefix = "${var.name}-${var.region}"
  ami    = var.ami_id != null ? var.ami_id : data.aws_ami.ubuntu[0].id
  azs    = slice(data.aws_availability_zones.available.names, 0, var.availability_zones)
  tags   = merge(var.tags, { "rtn:fleet" = var.name, "rtn:region" = var.region })

  edges        = { for i, e in var.edges : tostring(e.id) => merge(e, { index = i }) }
  server_names = { for k, e in local.edges : k => "edge-${e.id}.${var.domain}" }

  etcd_members = var.etcd == null ? [] : [for i in range(3) : {
    name = "etcd-${i + 1}"
    ip   = cidrhost(aws_subnet.public[i].cidr_block, 10)
    az   = i
  }]
  etcd_endpoints = var.etcd == null ? var.etcd_endpoints : module.etcd[0].client_endpoints
  etcd_plaintext = var.etcd == null ? null : var.etcd.plaintext_client_port

  # Secrets (keys, tokens, app secrets) are not in user data: each host
  # fetches its own from SSM Parameter Store at first boot, under
  # /rtn/<fleet>/<region>/<host>/, with an IAM role that reads only those.
  secret_prefix = "/rtn/${var.name}/${var.region}"
  secret_store  = { store = "aws-ssm", prefix = local.secret_prefix, region = data.aws_region.current.region }
  secret_hosts = merge(
    { for k in keys(local.edges) : "edge-${k}" => "${local.secret_prefix}/edge-${k}" },
    { for n in module.controllers.names : n => "${local.secret_prefix}/${n}" },
    { for m in local.etcd_members : m.name => "${local.secret_prefix}/${m.name}" },
  )
  # Parameter name => where its content comes from (names are known at plan
  # time; the contents are sensitive module outputs).
  secret_params = merge(
    merge({}, [for k, m in module.edge : { for p, n in m.secret_names : n => { host = "edge-${k}", src = "edge/${k}", path = p } }]...),
    merge({}, [for i, names in module.controllers.secret_names : { for p, n in names : n => { host = module.controllers.names[i], src = "controller/${i}", path = p } }]...),
    merge({}, [for e in module.etcd : merge({}, [for member, names in e.secret_names : { for p, n in names : n => { host = member, src = "etcd/${member}", path = p } }]...)]...),
  )
  secret_content = merge(
    { for k, m in module.edge : "edge/${k}" => m.secrets },
    { for i, s in module.controllers.secrets : "controller/${i}" => s },
    merge({}, [for e in module.etcd : { for member, s in e.secrets : "etcd/${member}" => s }]...),
  )
}

# --- secrets: one SecureString parameter per secret file and host, and per
# host an IAM role (instance profile) that may read its own parameters only

resource "aws_ssm_parameter" "secret" {
  for_each    = local.secret_params
  name        = each.key
  description = "RTN ${each.value.host}: ${each.value.path} (base64)"
  type        = "SecureString"
  key_id      = var.secrets_kms_key_id
  tier        = "Intelligent-Tiering"
  value       = base64encode(local.secret_content[each.value.src][each.value.path].content)
  tags        = merge(local.tags, { "rtn:host" = each.value.host })
}

resource "aws_iam_role" "host" {
  for_each = local.secret_hosts
  name     = "${local.prefix}-${each.key}"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ec2.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
  tags = merge(local.tags, { "rtn:host" = each.key })
}

resource "aws_iam_role_policy" "secrets" {
  for_each = local.secret_hosts
  name     = "rtn-secrets"
  role     = aws_iam_role.host[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Effect   = "Allow"
        Action   = ["ssm:GetParameter"]
        Resource = "arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:parameter${each.value}/*"
      }],
      # The default key (aws/ssm) lets the account's principals decrypt
      # through SSM; a key of the operator's needs this.
      var.secrets_kms_key_id == null ? [] : [{
        Effect    = "Allow"
        Action    = ["kms:Decrypt"]
        Resource  = var.secrets_kms_key_id
        Condition = { StringEquals = { "kms:ViaService" = "ssm.${data.aws_region.current.region}.amazonaws.com" } }
      }],
    )
  })
}

resource "aws_iam_instance_profile" "host" {
  for_each = local.secret_hosts
  name     = "${local.prefix}-${each.key}"
  role     = aws_iam_role.host[each.key].name
  tags     = merge(local.tags, { "rtn:host" = each.key })
}

# --- network

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.prefix })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.prefix })
}

resource "aws_subnet" "public" {
  count             = var.availability_zones
  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index)
  tags              = merge(local.tags, { Name = "${local.prefix}-${local.azs[count.index]}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.prefix })
}

resource "aws_route" "internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count          = var.availability_zones
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# --- security groups: QUIC and the controllers' public API open to the
# world, admin ports and etcd private

resource "aws_security_group" "edge" {
  name        = "${local.prefix}-edge"
  description = "RTN edges: QUIC from anywhere, admin from admin_cidrs"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-edge" })
}

# Its rules (local.ingress): the public API from anywhere, the admin port from
# admin_cidrs. (The description is left as it was: changing it replaces the group.)
resource "aws_security_group" "controller" {
  name        = "${local.prefix}-controller"
  description = "RTN region controllers: the API from anywhere"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-controller" })
}

resource "aws_security_group" "etcd" {
  count       = var.etcd == null ? 0 : 1
  name        = "${local.prefix}-etcd"
  description = "RTN etcd: clients from the fleet, peers from each other"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.prefix}-etcd" })
}

locals {
  ingress = merge(
    {
      "edge-quic-v4"   = { sg = aws_security_group.edge.id, proto = "udp", port = var.quic_port, cidr4 = "0.0.0.0/0", cidr6 = null, from_sg = null, what = "QUIC: clients and relay links" }
      "controller-api" = { sg = aws_security_group.controller.id, proto = "tcp", port = var.api_port, cidr4 = "0.0.0.0/0", cidr6 = null, from_sg = null, what = "nearest-edge API and health" }
    },
    { for c in var.admin_cidrs : "edge-admin-${c}" => { sg = aws_security_group.edge.id, proto = "tcp", port = var.admin_port, cidr4 = c, cidr6 = null, from_sg = null, what = "edge metrics and health" } },
    { for c in var.admin_cidrs : "controller-admin-${c}" => { sg = aws_security_group.controller.id, proto = "tcp", port = var.controller_admin_port, cidr4 = c, cidr6 = null, from_sg = null, what = "controller admin: metrics, mesh, dashboard, health" } },
    { for c in var.ssh_cidrs : "edge-ssh-${c}" => { sg = aws_security_group.edge.id, proto = "tcp", port = 22, cidr4 = c, cidr6 = null, from_sg = null, what = "ssh" } },
    { for c in var.ssh_cidrs : "controller-ssh-${c}" => { sg = aws_security_group.controller.id, proto = "tcp", port = 22, cidr4 = c, cidr6 = null, from_sg = null, what = "ssh" } },
    var.etcd == null ? {} : merge(
      { for c in var.fleet_cidrs : "etcd-client-${c}" => { sg = aws_security_group.etcd[0].id, proto = "tcp", port = 2379, cidr4 = c, cidr6 = null, from_sg = null, what = "etcd clients (TLS)" } },
      { for c in(local.etcd_plaintext == null ? [] : var.fleet_cidrs) : "etcd-plain-${c}" => { sg = aws_security_group.etcd[0].id, proto = "tcp", port = local.etcd_plaintext, cidr4 = c, cidr6 = null, from_sg = null, what = "etcd clients (plaintext, migration only)" } },
      { for c in var.admin_cidrs : "etcd-metrics-${c}" => { sg = aws_security_group.etcd[0].id, proto = "tcp", port = 2381, cidr4 = c, cidr6 = null, from_sg = null, what = "etcd metrics" } },
      { for c in var.ssh_cidrs : "etcd-ssh-${c}" => { sg = aws_security_group.etcd[0].id, proto = "tcp", port = 22, cidr4 = c, cidr6 = null, from_sg = null, what = "ssh" } },
      { "etcd-peer" = { sg = aws_security_group.etcd[0].id, proto = "tcp", port = 2380, cidr4 = null, cidr6 = null, from_sg = aws_security_group.etcd[0].id, what = "etcd peers" } },
    ),
  )
  egress = merge(
    { edge = aws_security_group.edge.id, controller = aws_security_group.controller.id },
    var.etcd == null ? {} : { etcd = aws_security_group.etcd[0].id },
  )
}

resource "aws_vpc_security_group_ingress_rule" "this" {
  for_each                     = local.ingress
  security_group_id            = each.value.sg
  description                  = each.value.what
  ip_protocol                  = each.value.proto
  from_port                    = each.value.port
  to_port                      = each.value.port
  cidr_ipv4                    = each.value.cidr4
  cidr_ipv6                    = each.value.cidr6
  referenced_security_group_id = each.value.from_sg
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "all" {
  for_each          = local.egress
  security_group_id = each.value
  description       = "outbound: peers, etcd, packages, releases"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

# --- certificates: edges from the mesh CA; etcd members and etcd clients
# (one per edge, one for the region's controllers) from the etcd CA

resource "tls_private_key" "edge" {
  for_each    = local.edges
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "edge" {
  for_each        = local.edges
  private_key_pem = tls_private_key.edge[each.key].private_key_pem
  dns_names       = [local.server_names[each.key]]
  ip_addresses    = [aws_eip.edge[each.key].public_ip]

  subject {
    common_name  = local.server_names[each.key]
    organization = var.name
  }
}

resource "tls_locally_signed_cert" "edge" {
  for_each              = local.edges
  cert_request_pem      = tls_cert_request.edge[each.key].cert_request_pem
  ca_private_key_pem    = var.mesh_ca.key_pem
  ca_cert_pem           = var.mesh_ca.cert_pem
  validity_period_hours = var.cert_validity_hours
  early_renewal_hours   = var.cert_early_renewal_hours
  allowed_uses          = ["digital_signature", "server_auth", "client_auth"]
}

resource "tls_private_key" "etcd" {
  count       = length(local.etcd_members)
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "etcd" {
  count           = length(local.etcd_members)
  private_key_pem = tls_private_key.etcd[count.index].private_key_pem
  ip_addresses    = [local.etcd_members[count.index].ip, "127.0.0.1"]

  subject {
    common_name  = local.etcd_members[count.index].name
    organization = var.name
  }
}

resource "tls_locally_signed_cert" "etcd" {
  count                 = length(local.etcd_members)
  cert_request_pem      = tls_cert_request.etcd[count.index].cert_request_pem
  ca_private_key_pem    = var.etcd_ca.key_pem
  ca_cert_pem           = var.etcd_ca.cert_pem
  validity_period_hours = var.cert_validity_hours
  early_renewal_hours   = var.cert_early_renewal_hours
  allowed_uses          = ["digital_signature", "server_auth", "client_auth"]
}

resource "tls_private_key" "etcd_client" {
  for_each    = merge({ for k in keys(local.edges) : "edge-${k}" => k }, { controllers = "controllers" })
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "etcd_client" {
  for_each        = tls_private_key.etcd_client
  private_key_pem = each.value.private_key_pem

  subject {
    common_name  = "${local.prefix}-${each.key}"
    organization = var.name
  }
}

resource "tls_locally_signed_cert" "etcd_client" {
  for_each              = tls_cert_request.etcd_client
  cert_request_pem      = each.value.cert_request_pem
  ca_private_key_pem    = var.etcd_ca.key_pem
  ca_cert_pem           = var.etcd_ca.cert_pem
  validity_period_hours = var.cert_validity_hours
  early_renewal_hours   = var.cert_early_renewal_hours
  allowed_uses          = ["digital_signature", "client_auth"]
}

# --- etcd (when this region hosts it)

module "etcd" {
  count  = var.etcd == null ? 0 : 1
  source = "../etcd-cluster"

  cluster_token         = "${var.name}-etcd"
  members               = [for m in local.etcd_members : { name = m.name, ip = m.ip }]
  plaintext_client_port = local.etcd_plaintext
  initial_cluster_state = var.etcd.initial_cluster_state
  client_cidrs          = var.fleet_cidrs
  admin_cidrs           = var.admin_cidrs
  ssh_cidrs             = var.ssh_cidrs
  etcd_release          = var.etcd_release
  secret_store          = local.secret_store
  tls = {
    ca_pem = var.etcd_ca.cert_pem
    members = { for i, m in local.etcd_members : m.name => {
      cert_pem = tls_locally_signed_cert.etcd[i].cert_pem
      key_pem  = tls_private_key.etcd[i].private_key_pem_pkcs8
    } }
  }
}

resource "aws_instance" "etcd" {
  count                       = length(local.etcd_members)
  ami                         = local.ami
  instance_type               = var.etcd.instance_type
  subnet_id                   = aws_subnet.public[local.etcd_members[count.index].az].id
  private_ip                  = local.etcd_members[count.index].ip
  associate_public_ip_address = true # outbound only (packages); the security group admits no one from outside
  vpc_security_group_ids      = [aws_security_group.etcd[0].id]
  key_name                    = var.key_name
  iam_instance_profile        = aws_iam_instance_profile.host[local.etcd_members[count.index].name].name
  user_data_base64            = module.etcd[0].user_data_base64gzip[local.etcd_members[count.index].name]
  user_data_replace_on_change = false # a member keeps its data: replace members by hand (docs/operations.md)
  # Its key must be in Parameter Store, readable by its role, when it boots.
  depends_on = [aws_ssm_parameter.secret, aws_iam_role_policy.secrets]

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 40
    iops        = 6000
    encrypted   = true
  }

  tags = merge(local.tags, { Name = "${local.prefix}-${local.etcd_members[count.index].name}", "rtn:role" = "etcd" })

  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }
}

# --- edges

resource "aws_eip" "edge" {
  for_each = local.edges
  domain   = "vpc"
  tags     = merge(local.tags, { Name = "${local.prefix}-edge-${each.key}" })
}

module "edge" {
  for_each = local.edges
  source   = "../edge-node"

  edge_id        = each.value.id
  region         = var.region
  city           = var.city
  coordinates    = var.coordinates
  etcd_endpoints = local.etcd_endpoints
  public_ip      = aws_eip.edge[each.key].public_ip
  quic_port      = var.quic_port
  admin_port     = var.admin_port
  server_name    = local.server_names[each.key]
  capacity       = var.edge_capacity
  apps           = var.apps
  app_secrets    = var.app_secrets
  package        = var.edge_package
  secret_store   = merge(local.secret_store, { prefix = "${local.secret_prefix}/edge-${each.key}" })
  admin_cidrs    = concat(var.admin_cidrs, [var.vpc_cidr])
  ssh_cidrs      = var.ssh_cidrs
  tls = {
    cert_pem    = tls_locally_signed_cert.edge[each.key].cert_pem
    key_pem     = tls_private_key.edge[each.key].private_key_pem_pkcs8
    mesh_ca_pem = var.mesh_ca.cert_pem
  }
  etcd_tls = {
    ca_pem   = var.etcd_ca.cert_pem
    cert_pem = tls_locally_signed_cert.etcd_client["edge-${each.key}"].cert_pem
    key_pem  = tls_private_key.etcd_client["edge-${each.key}"].private_key_pem_pkcs8
  }
}

resource "aws_instance" "edge" {
  for_each               = local.edges
  ami                    = local.ami
  instance_type          = coalesce(each.value.instance_type, var.edge_instance_type)
  subnet_id              = aws_subnet.public[each.value.index % var.availability_zones].id
  vpc_security_group_ids = [aws_security_group.edge.id]
  key_name               = var.key_name
  source_dest_check      = true
  # A new config, package or certificate needs a new instance (cloud-init runs
  # once), and terminating the old one drains its clients to other edges. So
  # that one apply never drains a whole region at once, changed user data is
  # ignored here: roll edges one at a time with
  #   terraform apply -replace='module.<region>.aws_instance.edge["<id>"]'
  # (docs/operations.md, upgrading).
  user_data_base64            = module.edge[each.key].user_data_base64gzip
  user_data_replace_on_change = true
  iam_instance_profile        = aws_iam_instance_profile.host["edge-${each.key}"].name
  depends_on                  = [aws_ssm_parameter.secret, aws_iam_role_policy.secrets]

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 16
    encrypted   = true
  }

  tags = merge(local.tags, { Name = "${local.prefix}-edge-${each.key}", "rtn:role" = "edge", "rtn:edge-id" = each.key })

  lifecycle {
    ignore_changes = [ami, user_data_base64]
  }
}

resource "aws_eip_association" "edge" {
  for_each      = local.edges
  instance_id   = aws_instance.edge[each.key].id
  allocation_id = aws_eip.edge[each.key].id
}

# --- region controllers

module "controllers" {
  source = "../region-controller"

  region         = var.region
  replicas       = var.controllers
  etcd_endpoints = local.etcd_endpoints
  etcd_tls = {
    ca_pem   = var.etcd_ca.cert_pem
    cert_pem = tls_locally_signed_cert.etcd_client["controllers"].cert_pem
    key_pem  = tls_private_key.etcd_client["controllers"].private_key_pem_pkcs8
  }
  api_port     = var.api_port
  admin_port   = var.controller_admin_port
  admin_cidrs  = concat(var.admin_cidrs, [var.vpc_cidr])
  geoip_db     = var.geoip_db
  geoip_update = var.geoip_update
  admin_token  = var.admin_token
  package      = var.controller_package
  ssh_cidrs    = var.ssh_cidrs
  secret_store = local.secret_store
}

resource "aws_eip" "controller" {
  count  = var.controllers
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${local.prefix}-ctl-${count.index + 1}" })
}

resource "aws_instance" "controller" {
  count                       = var.controllers
  ami                         = local.ami
  instance_type               = var.controller_instance_type
  subnet_id                   = aws_subnet.public[count.index % var.availability_zones].id
  vpc_security_group_ids      = [aws_security_group.controller.id]
  key_name                    = var.key_name
  user_data_base64            = module.controllers.user_data_base64gzip[count.index]
  user_data_replace_on_change = true
  iam_instance_profile        = aws_iam_instance_profile.host[module.controllers.names[count.index]].name
  depends_on                  = [aws_ssm_parameter.secret, aws_iam_role_policy.secrets]

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 16
    encrypted   = true
  }

  tags = merge(local.tags, { Name = "${local.prefix}-ctl-${count.index + 1}", "rtn:role" = "controller" })

  lifecycle {
    # Roll controllers one at a time with -replace, like edges.
    ignore_changes = [ami, user_data_base64]
  }
}

resource "aws_eip_association" "controller" {
  count         = var.controllers
  instance_id   = aws_instance.controller[count.index].id
  allocation_id = aws_eip.controller[count.index].id
}

# --- DNS: every edge by name (its certificate's), and the controllers' API
# latency-routed: an SDK's first contact resolves to the nearest region.

resource "aws_route53_record" "edge" {
  for_each = var.route53_zone_id == null ? {} : local.edges
  zone_id  = var.route53_zone_id
  name     = local.server_names[each.key]
  type     = "A"
  ttl      = 60
  records  = [aws_eip.edge[each.key].public_ip]
}

# Route 53 asks each controller's public face for /readyz (ready: it has a
# view of the mesh, and stays so through a store outage); a region whose
# controllers all fail is left out of the latency answer, so clients resolve
# the next-nearest region's controllers. One dead controller of a healthy
# region stays in the answer: the SDKs try each address of the name, and
# the next controller URL, in turn.
resource "aws_route53_health_check" "controller" {
  count             = var.route53_zone_id == null ? 0 : var.controllers
  ip_address        = aws_eip.controller[count.index].public_ip
  port              = var.api_port
  type              = "HTTP"
  resource_path     = "/readyz"
  request_interval  = 10
  failure_threshold = 3
  tags              = merge(local.tags, { Name = "${local.prefix}-ctl-${count.index + 1}-api" })
}

resource "aws_route53_health_check" "api" {
  count                  = var.route53_zone_id == null ? 0 : 1
  type                   = "CALCULATED"
  child_healthchecks     = aws_route53_health_check.controller[*].id
  child_health_threshold = 1
  tags                   = merge(local.tags, { Name = "${local.prefix}-api" })
}

resource "aws_route53_record" "api" {
  count           = var.route53_zone_id == null ? 0 : 1
  zone_id         = var.route53_zone_id
  name            = "api.${var.domain}"
  type            = "A"
  ttl             = 30
  records         = aws_eip.controller[*].public_ip
  set_identifier  = "${var.name}-${var.region}"
  health_check_id = aws_route53_health_check.api[0].id

  latency_routing_policy {
    # `name` is deprecated from provider v6 on.
    region = data.aws_region.current.region
  }
}
