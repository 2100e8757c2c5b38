# OpenBao server configuration for the Airlock production stack
# (mounted read-only at /openbao/config/config.hcl by docker-compose.yaml).
#
# Not a dev server: state lives in integrated (raft) storage on the named volume
# `openbao-data`, the server starts sealed, and an operator initialises and
# unseals it once (see deploy/openbao/README.md). After a restart it is sealed
# again until unsealed; signing tasks fail closed meanwhile.

ui        = true
log_level = "info"

# No `disable_mlock` here: OpenBao 2.x no longer supports mlock and warns
# about the field ("unknown or unsupported field"). Keep swap disabled on the
# Docker host so key material never reaches disk; the container needs no
# IPC_LOCK capability.

# How clients (Airflow workers) and peers reach this node on the compose network.
api_addr     = "http://openbao:8200"
cluster_addr = "https://openbao:8201"

storage "raft" {
  path    = "/openbao/file"
  node_id = "airlock-openbao-1"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"

  # Traffic stays on the private compose network and the host port is bound to
  # loopback. To expose OpenBao beyond this host, mount a certificate and use:
  #   tls_disable   = false
  #   tls_cert_file = "/openbao/tls/tls.crt"
  #   tls_key_file  = "/openbao/tls/tls.key"
  # (and switch api_addr / AIRLOCK_VAULT_ADDR to https://).
  tls_disable = true
}

# Every request and response (HMAC'd) goes to the audit log volume.
audit "file" "airlock-audit" {
  options {
    file_path = "/openbao/logs/audit.log"
  }
}
