"""One campaign-id rule: the CLI/flow validator and the store's key builder accept and refuse the same ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchflow import campaign
from benchflow.store import keys


def _accepts(fn, value) -> bool:
    try:
        fn(value)
    except ValueError:
        return False
    return True


def test_campaign_module_reexports_the_store_rule():
    assert campaign.validate_campaign_id is keys.validate_campaign_id


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=140), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,130}", fullmatch=True)))
def test_validator_and_store_prefix_agree(value: str):
    assert _accepts(campaign.validate_campaign_id, value) == _accepts(keys.campaign_prefix, value)


@pytest.mark.parametrize("bad", ["UPPER", "Mixed-1", "../x", "a/b", "", "-a", "a..b", "a" * 129])
def test_store_refuses_what_the_cli_refuses(bad):
    with pytest.raises(keys.InvalidIdError, match="invalid campaign id"):
        keys.campaign_key(bad, keys.MANIFEST)


def test_generated_ids_pass_the_rule():
    assert keys.validate_campaign_id(campaign.new_campaign_id("Nightly Sweep!")).startswith("nightly-sweep-")
