"""Token verification: principals, the verifier protocol, the JWT verifier, token minting."""

from topgun.auth.principal import Principal

__all__ = ["Principal"]
