import hashlib
import os
import struct

import pytest

from registry.oci.digest import Digest, ResumableHasher
from registry.oci.errors import ErrorCode, RegistryError

HEX = "a" * 64


def test_parse_valid_sha256_and_sha512() -> None:
    assert Digest.parse(f"sha256:{HEX}") == Digest("sha256", HEX)
    assert str(Digest.parse("sha512:" + "b" * 128)) == "sha512:" + "b" * 128


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256",
        "sha256:",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}0",
        f"sha256:{HEX.upper()}",
        f"md5:{HEX}",
        f"sha256:../{HEX[3:]}",
        f"SHA256:{HEX}",
        f"sha256:{HEX}\x00",
        "sha256:" + "a" * 10_000,
    ],
)
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(RegistryError) as caught:
        Digest.parse(text)
    assert caught.value.code is ErrorCode.DIGEST_INVALID


def test_of_hashes_bytes() -> None:
    assert Digest.of(b"abc").hex == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 127, 128, 129, 5000])
def test_state_round_trip_continues_the_hash(algorithm: str, size: int) -> None:
    data = os.urandom(size)
    first = ResumableHasher(algorithm)
    first.update(data[: size // 3])
    state = first.state()
    assert state is not None
    resumed = ResumableHasher.from_state(algorithm, state)
    resumed.update(memoryview(bytearray(data[size // 3 :])))
    assert resumed.hexdigest() == hashlib.new(algorithm, data).hexdigest()
    assert resumed.size == size
    # hexdigest does not disturb the running state
    assert first.hexdigest() == hashlib.new(algorithm, data[: size // 3]).hexdigest()


def test_state_uses_go_marshal_layout() -> None:
    """distribution's hashstates: magic, h[8] big-endian, block padded, length big-endian."""
    hasher = ResumableHasher("sha256")
    hasher.update(b"abc")
    state = hasher.state()
    assert state is not None and len(state) == 4 + 32 + 64 + 8
    assert state[:4] == b"sha\x03"
    assert struct.unpack(">8I", state[4:36])[0] == 0x6A09E667  # untouched initial h0
    assert state[36:100] == b"abc" + b"\0" * 61
    assert struct.unpack(">Q", state[100:]) == (3,)


@pytest.mark.parametrize(
    "state",
    [b"", b"sha\x03", b"xxx\x03" + b"\0" * 104, b"sha\x03" + b"\0" * 99 + b"\1" + b"\0" * 8],
)
def test_from_state_rejects_garbage(state: bytes) -> None:
    with pytest.raises(ValueError):
        ResumableHasher.from_state("sha256", state)
