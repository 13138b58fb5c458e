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


class StorageReadOnlyError(ConflictError):
    """The workload has ended: its storage takes no more writes, even on URLs issued before."""

    code = "storage_read_only"


class UploadUrlUsedError(ConflictError):
    """An upload URL is single use: its bytes arrived already, or it was completed."""

    code = "upload_url_used"


class UploadNotPendingError(ConflictError):
    """Completion of a key with no open upload: completed already, refused, or its URL expired."""

    code = "upload_not_pending"


class UploadExpiredError(DomainError):
    status = 403
    code = "upload_expired"


class UploadTooLargeError(DomainError):
    status = 413
    code = "too_large"


class LengthRequiredError(DomainError):
    status = 411
    code = "length_required"
