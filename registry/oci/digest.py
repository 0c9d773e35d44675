"""Content digests: parsing and validation, and a sha256/sha512 hasher whose state can be saved.

An upload may span many requests on different processes; ``ResumableHasher.state()`` turns the
running hash into bytes that are stored beside the upload, so the next request continues where
the last one stopped without re-reading a byte. The state uses the layout Go's ``crypto/sha256``
and ``crypto/sha512`` ``MarshalBinary`` produce (distribution's ``hashstates`` files), built from
OpenSSL's low-level ``SHA*_CTX`` through ctypes, because ``hashlib`` cannot export its state.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Final

from registry.oci.errors import ErrorCode, RegistryError

_DIGEST = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
HEX_LENGTH: Final = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")
SUPPORTED_ALGORITHMS: Final = tuple(HEX_LENGTH)


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated ``algorithm:hex`` content digest."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate a digest, raising ``DIGEST_INVALID`` for anything malformed."""
        match = _DIGEST.fullmatch(text) if len(text) <= 256 else None
        if match is None:
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"invalid digest: {text[:256]!r}")
        algorithm, encoded = match.groups()
        length = HEX_LENGTH.get(algorithm)
        if length is None:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID, f"unsupported digest algorithm: {algorithm}"
            )
        if len(encoded) != length or not _HEX.fullmatch(encoded):
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"invalid {algorithm} digest: {text!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data``."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


class _Sha256Ctx(ctypes.Structure):
    _fields_ = (
        ("h", ctypes.c_uint32 * 8),
        ("Nl", ctypes.c_uint32),
        ("Nh", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * 64),
        ("num", ctypes.c_uint32),
        ("md_len", ctypes.c_uint32),
    )


class _Sha512Ctx(ctypes.Structure):
    _fields_ = (
        ("h", ctypes.c_uint64 * 8),
        ("Nl", ctypes.c_uint64),
        ("Nh", ctypes.c_uint64),
        ("data", ctypes.c_uint8 * 128),
        ("num", ctypes.c_uint32),
        ("md_len", ctypes.c_uint32),
    )


@dataclass(frozen=True, slots=True)
class _Algorithm:
    ctx: type[ctypes.Structure]
    word: str  # struct format of one state word
    block: int
    magic: bytes  # Go's MarshalBinary prefix
    prefix: str  # OpenSSL function prefix


_ALGORITHMS: Final = {
    "sha256": _Algorithm(_Sha256Ctx, "I", 64, b"sha\x03", "SHA256"),
    "sha512": _Algorithm(_Sha512Ctx, "Q", 128, b"sha\x07", "SHA512"),
}


def _load_libcrypto() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        for prefix in ("SHA256", "SHA512"):
            for suffix in ("_Init", "_Update", "_Final"):
                getattr(lib, prefix + suffix)
    except (OSError, AttributeError):
        return None
    return lib


_LIBCRYPTO: Final = _load_libcrypto()


class ResumableHasher:
    """A running sha256/sha512 whose state round-trips through ``state()`` / ``from_state()``.

    Without OpenSSL's low-level functions it still hashes (with hashlib) but ``state()`` returns
    None, and callers fall back to re-hashing stored bytes.
    """

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in _ALGORITHMS:
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"unsupported algorithm: {algorithm}")
        self.algorithm = algorithm
        self._spec = _ALGORITHMS[algorithm]
        self._ctx: ctypes.Structure | None = None
        self._hashlib: hashlib._Hash | None = None
        if _LIBCRYPTO is None:
            self._hashlib = hashlib.new(algorithm)
        else:
            self._ctx = self._spec.ctx()
            getattr(_LIBCRYPTO, self._spec.prefix + "_Init")(ctypes.byref(self._ctx))
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash more bytes (releases the GIL for the hashing itself)."""
        length = len(data) if not isinstance(data, memoryview) else data.nbytes
        if length == 0:
            return
        self.size += length
        if self._hashlib is not None:
            self._hashlib.update(data)
            return
        if isinstance(data, bytes):
            buffer: object = data
        elif isinstance(data, memoryview) and data.readonly:
            buffer = data.tobytes()
        else:
            buffer = (ctypes.c_char * length).from_buffer(data)
        update = getattr(_LIBCRYPTO, self._spec.prefix + "_Update")
        update(ctypes.byref(self._ctx), buffer, ctypes.c_size_t(length))  # type: ignore[arg-type]

    def hexdigest(self) -> str:
        """The digest of everything hashed so far; the hasher stays usable."""
        if self._hashlib is not None:
            return self._hashlib.hexdigest()
        assert self._ctx is not None
        ctx = type(self._ctx).from_buffer_copy(self._ctx)
        out = ctypes.create_string_buffer(64)
        getattr(_LIBCRYPTO, self._spec.prefix + "_Final")(out, ctypes.byref(ctx))
        return out.raw[: ctx.md_len].hex()

    def digest(self) -> Digest:
        return Digest(self.algorithm, self.hexdigest())

    def state(self) -> bytes | None:
        """The running state in Go's ``MarshalBinary`` layout, or None without OpenSSL."""
        if self._ctx is None:
            return None
        ctx = self._ctx
        spec = self._spec
        buffered = int(ctx.num)
        words = struct.pack(f">8{spec.word}", *ctx.h)
        block = bytes(ctx.data)[:buffered].ljust(spec.block, b"\0")
        return spec.magic + words + block + struct.pack(">Q", self.size)

    @classmethod
    def from_state(cls, algorithm: str, state: bytes) -> ResumableHasher:
        """Rebuild a hasher from ``state()``; raises ValueError if the bytes are not a state."""
        hasher = cls(algorithm)
        spec = hasher._spec
        ctx = hasher._ctx
        if ctx is None:
            raise ValueError("saved hash states need OpenSSL")
        word_size = struct.calcsize(spec.word)
        expected = len(spec.magic) + 8 * word_size + spec.block + 8
        if len(state) != expected or not state.startswith(spec.magic):
            raise ValueError("not a saved hash state")
        offset = len(spec.magic)
        words = struct.unpack_from(f">8{spec.word}", state, offset)
        offset += 8 * word_size
        block = state[offset : offset + spec.block]
        (size,) = struct.unpack_from(">Q", state, offset + spec.block)
        buffered = size % spec.block
        if any(block[buffered:]):
            raise ValueError("saved hash state is inconsistent")
        for i, word in enumerate(words):
            ctx.h[i] = word
        bits = size * 8
        mask = (1 << (8 * word_size)) - 1
        ctx.Nl = bits & mask
        ctx.Nh = (bits >> (8 * word_size)) & mask
        ctypes.memmove(ctx.data, block, spec.block)
        ctx.num = buffered
        hasher.size = size
        return hasher
