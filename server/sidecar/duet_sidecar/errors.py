"""Typed errors of the sidecar protocol. Each has a stable `code` the client maps to its own
error classes (server/verifiers/sidecar.ts); messages say what to do next."""


class SidecarError(Exception):
    code = "Internal"


class BadFrame(SidecarError):
    code = "BadFrame"


class FrameTooLarge(SidecarError):
    code = "FrameTooLarge"


class VersionMismatch(SidecarError):
    code = "VersionMismatch"


class UnknownOp(SidecarError):
    code = "UnknownOp"


class BadRequest(SidecarError):
    code = "BadRequest"


class UnknownSession(SidecarError):
    code = "UnknownSession"


class SessionExists(SidecarError):
    code = "SessionExists"


class ContextFull(SidecarError):
    code = "ContextFull"


class BatchTooLarge(SidecarError):
    code = "BatchTooLarge"


class NoCapacity(SidecarError):
    code = "NoCapacity"
