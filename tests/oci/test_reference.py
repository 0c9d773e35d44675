import pytest

from registry.oci.digest import Digest
from registry.oci.errors import ErrorCode, RegistryError
from registry.oci.reference import parse_name, parse_reference, parse_tag


@pytest.mark.parametrize(
    "name", ["a", "library/ubuntu", "team/app/api", "a.b_c__d-e--f/g0", "x" * 255]
)
def test_valid_names(name: str) -> None:
    assert parse_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A",
        "a/",
        "/a",
        "a//b",
        "a/../b",
        "..",
        "a/./b",
        "-a",
        "a-",
        "a___b",
        "a\x00b",
        "_uploads",
        "a/_layers",
        "x" * 256,
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_name(name)
    assert caught.value.code is ErrorCode.NAME_INVALID


@pytest.mark.parametrize("tag", ["latest", "1.0", "_x", "A-b.c_d", "x" * 128])
def test_valid_tags(tag: str) -> None:
    assert parse_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a/b", "a:b", "x" * 129, "a\nb"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_tag(tag)
    assert caught.value.code is ErrorCode.TAG_INVALID


def test_reference_is_digest_or_tag() -> None:
    assert parse_reference("v1") == "v1"
    assert parse_reference("sha256:" + "0" * 64) == Digest("sha256", "0" * 64)
    with pytest.raises(RegistryError) as caught:
        parse_reference("sha256:zz")
    assert caught.value.code is ErrorCode.DIGEST_INVALID
