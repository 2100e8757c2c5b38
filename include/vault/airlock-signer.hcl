# Least-privilege policy for the Airlock pipeline's signer identity.
#
# It may sign with the model-signing key (sha2-256 prehashed digests) and read
# that key's public keys so verifiers can build a trust store. Nothing else:
# no other key, no key export, no rotation, no secrets, no policy or auth
# changes. Rotation and key administration use a separate, human-held policy.

path "transit/sign/airlock-model-signing" {
  capabilities = ["update"]
}

path "transit/sign/airlock-model-signing/sha2-256" {
  capabilities = ["update"]
}

path "transit/keys/airlock-model-signing" {
  capabilities = ["read"]
}
