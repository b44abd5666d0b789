"""Token verification: principals, the verifier protocol, the JWT verifier, token minting."""

from topgun.auth._errors import REJECT_REASONS, KeyConfigError, RejectReason, TokenRejected
from topgun.auth._keys import MIN_HS256_SECRET_BYTES, Algorithm
from topgun.auth._mint import DEFAULT_TTL, TokenMinter, mint_token
from topgun.auth._secret import JWT_SECRET_ENV, LoadedSecret, load_secret
from topgun.auth._verifier import DEFAULT_LEEWAY, MAX_TOKEN_LENGTH, JWTVerifier, TokenVerifier
from topgun.auth.principal import Principal

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_TTL",
    "JWT_SECRET_ENV",
    "MAX_TOKEN_LENGTH",
    "MIN_HS256_SECRET_BYTES",
    "REJECT_REASONS",
    "Algorithm",
    "JWTVerifier",
    "KeyConfigError",
    "LoadedSecret",
    "Principal",
    "RejectReason",
    "TokenMinter",
    "TokenRejected",
    "TokenVerifier",
    "load_secret",
    "mint_token",
]
