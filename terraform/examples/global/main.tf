# A global RTN fleet on AWS: three regions with edges and controllers, the
# etcd cluster in the home region (eu-central-1), and VPC peering from the
# other regions to it. An operator's starting point: copy, set the variables
# (terraform.tfvars.example), add regions by copying a region block and its
# peering. See docs/operations.md.

locals {
  default_tags = { "rtn:managed-by" = "terraform", "rtn:fleet" = var.name }

  regions = {
    eu_central   = { cidr = "10.10.0.0/16" }
    us_east      = { cidr = "10.20.0.0/16" }
    ap_southeast = { cidr = "10.30.0.0/16" }
  }
  fleet_cidrs = [for r in values(local.regions) : r.cidr]

  mesh_ca = sensitive({
    cert_pem = file("${var.pki_dir}/mesh-ca.pem")
    key_pem  = file("${var.pki_dir}/mesh-ca.key")
  })
  etcd_ca = sensitive({
    cert_pem = file("${var.pki_dir}/etcd-ca.pem")
    key_pem  = file("${var.pki_dir}/etcd-ca.key")
  })
}

# Home region: edges, controllers and the etcd cluster.
module "eu_central" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.eu_central_1 }

  name            = var.name
  region          = "eu-central"
  city            = "fra"
  coordinates     = { lat = 50.1109, lon = 8.6821 }
  domain          = var.domain
  route53_zone_id = var.route53_zone_id
  vpc_cidr        = local.regions.eu_central.cidr
  fleet_cidrs     = local.fleet_cidrs
  admin_cidrs     = var.monitoring_cidrs
  ssh_cidrs       = var.ssh_cidrs

  edges        = [{ id = 1 }, { id = 2 }, { id = 3 }]
  controllers  = 2
  etcd         = {}
  etcd_release = var.etcd_release
  etcd_ca      = local.etcd_ca

  mesh_ca            = local.mesh_ca
  apps               = var.apps
  app_secrets        = var.app_secrets
  admin_token        = var.admin_token
  edge_package       = var.edge_package
  controller_package = var.controller_package
  geoip_db           = var.geoip_db
}

module "us_east" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.us_east_1 }

  name            = var.name
  region          = "us-east"
  city            = "iad"
  coordinates     = { lat = 39.0438, lon = -77.4874 }
  domain          = var.domain
  route53_zone_id = var.route53_zone_id
  vpc_cidr        = local.regions.us_east.cidr
  fleet_cidrs     = local.fleet_cidrs
  admin_cidrs     = var.monitoring_cidrs
  ssh_cidrs       = var.ssh_cidrs

  edges          = [{ id = 11 }, { id = 12 }, { id = 13 }]
  controllers    = 2
  etcd_endpoints = module.eu_central.etcd_client_endpoints
  etcd_ca        = local.etcd_ca

  mesh_ca            = local.mesh_ca
  apps               = var.apps
  app_secrets        = var.app_secrets
  admin_token        = var.admin_token
  edge_package       = var.edge_package
  controller_package = var.controller_package
  geoip_db           = var.geoip_db
}

module "ap_southeast" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.ap_southeast_1 }

  name            = var.name
  region          = "ap-southeast"
  city            = "sin"
  coordinates     = { lat = 1.3521, lon = 103.8198 }
  domain          = var.domain
  route53_zone_id = var.route53_zone_id
  vpc_cidr        = local.regions.ap_southeast.cidr
  fleet_cidrs     = local.fleet_cidrs
  admin_cidrs     = var.monitoring_cidrs
  ssh_cidrs       = var.ssh_cidrs

  edges          = [{ id = 21 }, { id = 22 }]
  controllers    = 2
  etcd_endpoints = module.eu_central.etcd_client_endpoints
  etcd_ca        = local.etcd_ca

  mesh_ca            = local.mesh_ca
  apps               = var.apps
  app_secrets        = var.app_secrets
  admin_token        = var.admin_token
  edge_package       = var.edge_package
  controller_package = var.controller_package
  geoip_db           = var.geoip_db
}

# Private paths to etcd and Prometheus in the home region. Relay traffic
# between edges takes the public Internet paths the overlay routes over.
module "peering_us_east" {
  source = "../../modules/aws-vpc-peering"
  providers = {
    aws.requester = aws.us_east_1
    aws.accepter  = aws.eu_central_1
  }

  name      = "${var.name}-us-east-to-eu-central"
  requester = { vpc_id = module.us_east.vpc_id, cidr = module.us_east.vpc_cidr, route_table_id = module.us_east.route_table_id }
  accepter  = { vpc_id = module.eu_central.vpc_id, cidr = module.eu_central.vpc_cidr, route_table_id = module.eu_central.route_table_id }
}

module "peering_ap_southeast" {
  source = "../../modules/aws-vpc-peering"
  providers = {
    aws.requester = aws.ap_southeast_1
    aws.accepter  = aws.eu_central_1
  }

  name      = "${var.name}-ap-southeast-to-eu-central"
  requester = { vpc_id = module.ap_southeast.vpc_id, cidr = module.ap_southeast.vpc_cidr, route_table_id = module.ap_southeast.route_table_id }
  accepter  = { vpc_id = module.eu_central.vpc_id, cidr = module.eu_central.vpc_cidr, route_table_id = module.eu_central.route_table_id }
}
