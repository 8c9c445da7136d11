"""Collection names: the user's rule outside, Milvus-safe physical names inside, both ways, without collisions."""

from __future__ import annotations

import re

import pytest

from services.retrieval.collection_names import InvalidCollectionName, is_valid_name, physical_name, user_name

MILVUS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


@pytest.mark.parametrize("name", ["docs", "my-docs", "v1.2", "2024_reports", "a" * 64, "Docs_V2", "x-6d79"])
def test_valid_names_map_to_milvus_safe_names_and_back(name: str) -> None:
    assert is_valid_name(name)
    physical = physical_name(name)
    assert MILVUS_NAME.match(physical), physical
    assert user_name(physical) == name


def test_names_of_the_older_rule_keep_their_physical_name() -> None:
    assert physical_name("docs_v2") == "sluice_docs_v2"  # collections written before dashes were allowed


def test_distinct_names_never_share_a_physical_name() -> None:
    names = ["a-b", "a_b", "a.b", "ab", "a--b", "x612d62", "sluice", "A-B"]
    assert len({physical_name(n) for n in names}) == len(names)


@pytest.mark.parametrize("name", ["", "-leading", ".hidden", "has space", "semi;colon", "a" * 65, "ünï", "docs\n"])
def test_invalid_names_are_refused(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(InvalidCollectionName):
        physical_name(name)


def test_physical_names_that_are_not_ours_have_no_user_name() -> None:
    assert user_name("sluicemeta_collections") is None
    assert user_name("other_collection") is None
    assert user_name("sluicex_zz") is None
