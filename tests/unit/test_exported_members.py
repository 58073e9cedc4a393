"""The public surface is ``linkpool.__all__``: what it names is exported, and nothing else."""

from __future__ import annotations

import linkpool

PUBLIC = {
    "Claim",
    "ClaimExpired",
    "Claimer",
    "Clock",
    "ConfigError",
    "DatabaseError",
    "DuplicateRecord",
    "ForgetReport",
    "IdempotencyConflict",
    "InvalidClaim",
    "LinkPool",
    "LinkPoolError",
    "ManualClock",
    "PoolCounts",
    "PoolExhausted",
    "PoolSettings",
    "QualtricsError",
    "RemotePool",
    "SchemaNotMigrated",
    "Settings",
    "SystemClock",
    "UnknownPool",
    "load_settings",
}


def test_all_is_the_pinned_public_surface() -> None:
    assert set(linkpool.__all__) == PUBLIC
    assert len(linkpool.__all__) == len(PUBLIC)


def test_every_exported_member_exists_and_names_itself() -> None:
    for name in linkpool.__all__:
        member = getattr(linkpool, name)
        assert getattr(member, "__name__", name) == name


def test_the_package_exports_nothing_public_beyond_all() -> None:
    public = {
        name
        for name, value in vars(linkpool).items()
        if not name.startswith("_") and not isinstance(value, type(linkpool))
    }
    assert public == PUBLIC
