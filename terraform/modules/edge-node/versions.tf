terraform {
  # 1.9: validation blocks may refer to other variables.
  required_version = ">= 1.9"

  # No providers: this module only renders files, so `terraform init` needs
  # no download and the module works under any cloud.
}
