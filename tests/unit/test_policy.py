from __future__ import annotations

import pytest

from airlock.errors import ConfigurationError
from airlock.policy import POLICIES, RiskTier, policy_for


def test_every_tier_has_a_policy_and_strictness_only_grows() -> None:
    order = [RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH, RiskTier.CRITICAL]
    assert set(POLICIES) == set(order)
    for looser, stricter in zip(order, order[1:]):
        a, b = POLICIES[looser], POLICIES[stricter]
        assert b.max_files <= a.max_files and b.max_total_bytes <= a.max_total_bytes
        assert b.require_vendor_manifest >= a.require_vendor_manifest
        assert b.allow_pickle_weights <= a.allow_pickle_weights
        assert b.requires_approval >= a.requires_approval


def test_high_and_critical_refuse_executable_weights_and_remote_code() -> None:
    for tier in ("high", "critical"):
        policy = policy_for(tier)
        assert not policy.allow_pickle_weights
        assert policy.remote_code == "block" and policy.unknown_binary == "block"
        assert policy.require_vendor_manifest


def test_unknown_tier_is_an_error_not_a_default() -> None:
    with pytest.raises(ConfigurationError, match="'extreme'"):
        policy_for("extreme")


def test_policy_serialises_as_data() -> None:
    data = policy_for("medium").to_json_dict()
    assert data["tier"] == "medium" and data["remote_code"] == "flag"
