variable "name" {
  description = "Name tag of the peering connection."
  type        = string
}

variable "requester" {
  description = "The requesting side (provider aws.requester): VPC id, its CIDR and the route table to route the other side's CIDR through the peering."
  type = object({
    vpc_id         = string
    cidr           = string
    route_table_id = string
  })
}

variable "accepter" {
  description = "The accepting side (provider aws.accepter), in another region (or the same)."
  type = object({
    vpc_id         = string
    cidr           = string
    route_table_id = string
  })

  validation {
    condition     = var.accepter.cidr != var.requester.cidr
    error_message = "the two VPCs' CIDRs must differ (and not overlap)."
  }
}

variable "tags" {
  description = "Tags of the peering connection."
  type        = map(string)
  default     = {}
}
