# One service, HCL blocks for meta and the check.
service {
  name = "web"
  id   = "web-1"
  port = 8080
  tags = ["v1", "primary"]
  address = "127.0.0.2"
  enable_tag_override = true

  meta {
    version = "1.2"
    Team_Name = "edge"
  }

  weights {
    passing = 3
    warning = 1
  }

  check {
    id       = "web-ttl"
    name     = "web alive"
    ttl      = "30s"
    status   = "passing"
  }
}
