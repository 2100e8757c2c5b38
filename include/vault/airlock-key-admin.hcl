# Key-admin policy for the model-signing key: rotate it and read its public keys.
#
# Held by people (or a break-glass job), never by the pipeline: rotation decides
# which key version new signatures use, so the identity that signs must not be
# able to do it. Still no signing, no export of private key material, no
# configuration changes (exportable, deletion_allowed, min versions), no other
# key, no secrets, no policy or auth changes. `airlock keys rotate` reads the
# token from AIRLOCK_VAULT_ADMIN_TOKEN.

path "transit/keys/airlock-model-signing/rotate" {
  capabilities = ["update"]
}

path "transit/keys/airlock-model-signing" {
  capabilities = ["read"]
}
