terraform {
  # Only what ships with Terraform: terraform_data and local-exec.
  # `terraform init` downloads nothing.
  required_version = ">= 1.9"
}
