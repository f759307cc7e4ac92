"""Site security: the project CA, broker credentials and ACL, device enrollment, broker checks."""
