"""Storage refusals, answered by the API as HTTP errors (arbitrage/errors.py)."""

from __future__ import annotations

from arbitrage.errors import ConflictError, DomainError


class InvalidKeyError(DomainError):
    code = "invalid_key"


class StorageDisabledError(ConflictError):
    code = "storage_disabled"


class QuotaExceededError(DomainError):
    status = 413
    code = "quota_exceeded"


class ObjectNotFoundError(DomainError):
    status = 404
    code = "object_not_found"


class UploadVerificationError(ConflictError):
    """The object in the backend is not what the caller said it uploaded (size or checksum)."""

    code = "upload_mismatch"


class CheckpointError(ConflictError):
    code = "checkpoint_invalid"


class MultipartNotSupportedError(DomainError):
    code = "multipart_not_supported"
